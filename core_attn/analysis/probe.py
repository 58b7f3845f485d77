"""Retrieval Attention Mass (RAM): per-head attention from query tokens onto target tokens.

RAM(l, h) = (1 / |Q|) * sum_{q in Q} sum_{t in T} A[l, h][q, t], with A the post-softmax attention
of q_head h of layer l on the model's real forward pass (causal, same mask and scaling).

How it is measured: the "core_probe" attention implementation (registered with transformers'
AttentionInterface and AttentionMaskInterface, sdpa's mask function) computes every layer's
output with sdpa, so the forward pass is the sdpa forward, and on the side takes only the |Q|
query rows of the layer's own post-RoPE query states, scores them against all keys (GQA: the
kv_head of each q_head is indexed, never repeated), applies the same bool mask rows and the
same scaling, and keeps per q_head the mass on T (and optionally on all visual tokens, and the
mean distribution over keys). No [T, T] matrix exists at any point: the extra memory is
O(|Q| * T) per block of rows, bounded by ``_BLOCK_ELEMENTS``.

:func:`probe` switches the text decoder to "core_probe" with the public
``set_attn_implementation`` and always restores the previous implementation. Vision towers and
other non-causal modules (``layer_idx`` None, ``is_causal`` False) run plain sdpa and are not
recorded. A model that ran "core_hybrid" (or "eager") is measured on the dense sdpa forward.

Vocabulary: L layers of the text decoder, HQ q_heads and HKV kv_heads per layer (G = HQ // HKV
q_heads share a kv_head: q_head h reads kv_head h // G), T tokens. Scores are fp32 [L, HQ];
heads are labelled "L{l}H{h}" (:func:`core_attn.heads.head_label`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..hf.attach import text_config_of

PROBE_IMPLEMENTATION = "core_probe"
_BLOCK_ELEMENTS = 1 << 20  # query rows x keys scored at once (4 MiB of fp32 scores)
_RECORDERS: dict[int, ProbeRecorder] = {}  # id(text config) -> recorder of the active probe()


# ------------------------------------------------------------------------- model helpers
def text_attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention module of every text-decoder layer, ordered by ``layer_idx`` (L entries).

    A text attention module has an int ``layer_idx``, is causal and has ``o_proj``; vision
    towers (``layer_idx`` None, non-causal) are skipped.
    """
    found: dict[int, torch.nn.Module] = {}
    for module in model.modules():
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int) and getattr(module, "is_causal", False) and hasattr(module, "o_proj"):
            if idx in found and found[idx] is not module:
                raise ValueError(f"{type(model).__name__} has two causal attention modules with layer_idx {idx}")
            found[idx] = module
    num_layers = int(text_config_of(model).num_hidden_layers)
    if sorted(found) != list(range(num_layers)):
        raise ValueError(
            f"expected one causal self-attention module with o_proj per text layer (layer_idx 0..{num_layers - 1}), "
            f"found layer_idx {sorted(found)} in {type(model).__name__}"
        )
    return [found[i] for i in range(num_layers)]


def _set_text_attn_implementation(model, implementation: str) -> None:
    tc = text_config_of(model)
    if tc is model.config:
        model.set_attn_implementation(implementation)
    else:
        model.set_attn_implementation({"text_config": implementation})


def as_index(index, name: str) -> torch.Tensor:
    """Token positions as a 1-d long tensor on CPU; rejects negatives and duplicates."""
    t = torch.as_tensor(index).detach().to("cpu")
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-d list of token positions, got shape {tuple(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.dtype == torch.bool):
        raise TypeError(f"{name} must hold integer token positions, got {t.dtype}")
    t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must hold non-negative absolute positions, found {int(t.min())}")
    if t.unique().numel() != t.numel():
        raise ValueError(f"{name} has duplicate positions ({t.numel() - t.unique().numel()} repeated)")
    return t


# --------------------------------------------------------------------------- recording
@dataclass
class RamResult:
    """What one probed forward pass measured.

    ram: fp32 [L, HQ], mass from the query rows onto the target tokens, averaged over rows.
    vision: fp32 [L, HQ], the same onto all visual tokens (the "vision head" baseline), or None.
    key_attention: fp32 [L, HQ, Tk], the query rows' mean attention over every key, or None.
    """

    ram: torch.Tensor
    vision: torch.Tensor | None
    key_attention: torch.Tensor | None
    num_query: int
    num_target: int
    seq_len: int


class ProbeRecorder:
    """Collects per-layer sums for one forward pass inside :func:`probe` (see :meth:`result`)."""

    def __init__(self, num_layers, num_q_heads, query_index, target_index, vision_index, key_attention):
        self.num_layers, self.num_q_heads = num_layers, num_q_heads
        self.query_index, self.target_index, self.vision_index = query_index, target_index, vision_index
        self.record_keys = key_attention
        self.ram = torch.zeros(num_layers, num_q_heads)
        self.vision = torch.zeros(num_layers, num_q_heads) if vision_index is not None else None
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.seen = [False] * num_layers
        self.seq_len: int | None = None

    @torch.no_grad()
    def observe(self, layer, query, key, attention_mask, scaling) -> None:
        """Record one layer.

        query [1, HQ, Tq, D], key [1, HKV, Tk, D] (post-RoPE, not repeated); attention_mask
        bool (True = attend) or additive float [1, 1 | HQ, Tq, Tk], or None (causal).
        """
        bsz, hq, tq, dim = query.shape
        if bsz != 1:
            raise ValueError(f"probe measures one sample at a time: expected batch size 1, found {bsz}")
        if hq != self.num_q_heads:
            raise ValueError(f"layer {layer} has {hq} q_heads, the text config says {self.num_q_heads}")
        if self.seen[layer]:
            raise RuntimeError(f"probe saw layer {layer} twice: run exactly one forward pass inside probe()")
        if attention_mask is None and key.shape[2] > tq:
            key = key[:, :, :tq]  # first prefill into a static cache: slots past Tq are empty (as sdpa does)
        tk = key.shape[2]
        if tk != tq:
            raise ValueError(f"probe measures a full prefill pass (Tq == Tk), layer {layer} got Tq={tq}, Tk={tk}")
        for name, idx in (("query_index", self.query_index), ("target_index", self.target_index),
                          ("vision_index", self.vision_index)):
            if idx is not None and idx.numel() and int(idx.max()) >= tk:
                raise ValueError(f"{name} has position {int(idx.max())}, but the sequence has {tk} tokens")
        self.seq_len = tk
        hkv = key.shape[1]
        group = hq // hkv
        scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
        device = query.device
        q_idx = self.query_index.to(device)
        t_idx = self.target_index.to(device)
        v_idx = self.vision_index.to(device) if self.vision_index is not None else None
        n_q = q_idx.numel()
        rows_q = query[0][:, q_idx]  # [HQ, |Q|, D]
        positions = torch.arange(tk, device=device)
        mask_rows = None
        if attention_mask is not None:
            mask_rows = attention_mask[0, :, :, :tk][:, q_idx]  # [1 | HQ, |Q|, Tk]
        ram = torch.zeros(hq, n_q, device=device)
        vis = torch.zeros(hq, n_q, device=device) if v_idx is not None else None
        keys_mean = torch.zeros(hq, tk, device=device) if self.record_keys else None
        block = max(1, _BLOCK_ELEMENTS // tk)
        for g in range(hkv):
            k_g = key[0, g].float()  # [Tk, D]
            heads = torch.arange(g * group, (g + 1) * group, device=device)
            q_g = rows_q[heads].reshape(group * n_q, dim)  # row r: q_head g*G + r // |Q|, query r % |Q|
            for r0 in range(0, group * n_q, block):
                r = torch.arange(r0, min(r0 + block, group * n_q), device=device)
                head, qi = heads[r // n_q], r % n_q
                s = (q_g[r].float() @ k_g.T).mul_(scale)  # [R, Tk]
                if mask_rows is None:  # causal
                    s.masked_fill_(positions[None, :] > q_idx[qi][:, None], float("-inf"))
                else:
                    m = mask_rows[head if mask_rows.shape[0] > 1 else torch.zeros_like(head), qi]
                    if m.dtype == torch.bool:
                        s.masked_fill_(~m, float("-inf"))
                    else:
                        s.add_(m.float())
                p = torch.softmax(s, dim=-1)
                del s
                p = torch.nan_to_num_(p, nan=0.0)  # fully masked rows (padding) attend to nothing
                ram[head, qi] = p[:, t_idx].sum(-1)
                if vis is not None:
                    vis[head, qi] = p[:, v_idx].sum(-1)
                if keys_mean is not None:
                    keys_mean.index_add_(0, head, p)
                del p
        self.ram[layer] = ram.mean(-1).cpu()
        if vis is not None:
            self.vision[layer] = vis.mean(-1).cpu()
        if keys_mean is not None:
            self.keys[layer] = (keys_mean / n_q).cpu()
        self.seen[layer] = True

    def result(self) -> RamResult:
        """The measurement; raises if the forward pass did not reach every text layer."""
        missing = [i for i, s in enumerate(self.seen) if not s]
        if missing:
            raise RuntimeError(
                f"probe recorded {self.num_layers - len(missing)} of {self.num_layers} text layers "
                f"(missing {missing}): run one full forward pass of the model inside probe()"
            )
        keys = torch.stack(self.keys) if self.record_keys else None
        return RamResult(self.ram.clone(), None if self.vision is None else self.vision.clone(), keys,
                         int(self.query_index.numel()), int(self.target_index.numel()), int(self.seq_len))


# ---------------------------------------------------------------- attention function
def core_probe_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention-interface function: sdpa's output [B, Tq, HQ, D], plus recording when a probe is active.

    query [B, HQ, Tq, D], key/value [B, HKV, Tk, D] (not repeated for GQA).
    """
    out = ALL_ATTENTION_FUNCTIONS["sdpa"](
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )
    layer_idx = getattr(module, "layer_idx", None)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if layer_idx is None or not causal:  # vision towers, encoders
        return out
    recorder = _RECORDERS.get(id(getattr(module, "config", None)))
    if recorder is not None:
        recorder.observe(layer_idx, query, key, attention_mask, scaling)
    return out


def register(name: str = PROBE_IMPLEMENTATION) -> None:
    """Register the probe with transformers' attention and mask interfaces (idempotent)."""
    AttentionInterface.register(name, core_probe_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)


@contextmanager
def probe(model, query_index, target_index, *, vision_index=None, key_attention: bool = False):
    """Record RAM during one forward pass of ``model`` (batch size 1, a full prefill).

    Args:
        model: a transformers model (multimodal or text-only). Its text decoder runs
            "core_probe" inside the block; the previous implementation is restored on exit.
        query_index: long [|Q|] absolute positions of the query tokens.
        target_index: long [|T|] absolute positions of the target tokens.
        vision_index: optional long [V] positions of all visual tokens (vision-head baseline).
        key_attention: also keep the query rows' mean attention over keys, fp32 [L, HQ, Tk].
    Yields:
        a :class:`ProbeRecorder`; call ``.result()`` after the forward pass for a :class:`RamResult`.
    """
    register()
    q = as_index(query_index, "query_index")
    if q.numel() == 0:
        raise ValueError("query_index is empty: RAM averages over at least one query token")
    t = as_index(target_index, "target_index")
    v = as_index(vision_index, "vision_index") if vision_index is not None else None
    tc = text_config_of(model)
    if id(tc) in _RECORDERS:
        raise RuntimeError("a probe is already active on this model; probes do not nest")
    recorder = ProbeRecorder(int(tc.num_hidden_layers), int(tc.num_attention_heads), q, t, v, key_attention)
    previous = tc._attn_implementation
    _RECORDERS[id(tc)] = recorder
    try:
        _set_text_attn_implementation(model, PROBE_IMPLEMENTATION)
        yield recorder
    finally:
        _RECORDERS.pop(id(tc), None)
        if previous is not None and tc._attn_implementation != previous:
            _set_text_attn_implementation(model, previous)


def _seq_len(inputs: Mapping) -> int:
    x = inputs.get("input_ids")
    if x is None:
        x = inputs.get("inputs_embeds")
    if x is None:
        raise ValueError("inputs need input_ids [1, T] or inputs_embeds [1, T, hidden]")
    if x.shape[0] != 1:
        raise ValueError(f"RAM is measured one sample at a time: expected batch size 1, found {x.shape[0]}")
    return int(x.shape[1])


def measure_ram(model, inputs: Mapping, query_index, target_index, *, vision_index=None,
                key_attention: bool = False) -> RamResult:
    """RAM of every (layer, q_head) on one sample: one no-grad forward pass, no cache, last logits only.

    Args:
        inputs: model inputs for a batch of one (``input_ids`` [1, T], ``attention_mask``,
            ``pixel_values``, ...), as a processor returns them.
        query_index, target_index, vision_index: absolute positions in ``input_ids`` (long 1-d).
        key_attention: also return the query rows' mean attention over keys [L, HQ, T].
    Returns:
        :class:`RamResult` with ``ram`` fp32 [L, HQ] (and ``vision`` if vision_index was given).
    """
    seq_len = _seq_len(inputs)
    kwargs = {"use_cache": False, "logits_to_keep": 1}
    kwargs.update(inputs)
    with torch.no_grad(), probe(model, query_index, target_index, vision_index=vision_index,
                                key_attention=key_attention) as recorder:
        for name, idx in (("query_index", recorder.query_index), ("target_index", recorder.target_index),
                          ("vision_index", recorder.vision_index)):
            if idx is not None and idx.numel() and int(idx.max()) >= seq_len:
                raise ValueError(f"{name} has position {int(idx.max())}, but the input has {seq_len} tokens")
        model(**kwargs)
    return recorder.result()


def ram_scores(model, inputs: Mapping, query_index, target_index) -> torch.Tensor:
    """RAM fp32 [L, HQ] of one sample (see :func:`measure_ram`)."""
    return measure_ram(model, inputs, query_index, target_index).ram


def vision_scores(model, inputs: Mapping, query_index, vision_index) -> torch.Tensor:
    """The vision-head baseline fp32 [L, HQ]: mass from Q onto all visual tokens."""
    return measure_ram(model, inputs, query_index, vision_index).ram


# --------------------------------------------------------------------- over a dataset
class RamAccumulator:
    """Streaming RAM statistics over a dataset: per-task sums, sums of squares and counts.

    Every added sample is a fp32 [L, HQ] map (optionally with a task name). Means and standard
    deviations come from float64 sums, so merging accumulators of several ranks / shards is
    exact (sums and counts add; no mean of means). With ``keep_samples`` (default) the
    per-sample maps are kept too, [N, L, HQ], for variance and per-task stability analyses.
    """

    FORMAT = "core_attn.RamAccumulator"
    VERSION = 1

    def __init__(self, num_layers: int | None = None, num_q_heads: int | None = None, *, keep_samples: bool = True):
        self.shape = (int(num_layers), int(num_q_heads)) if num_layers is not None else None
        if (num_layers is None) != (num_q_heads is None):
            raise ValueError("give both num_layers and num_q_heads, or neither (shape taken from the first sample)")
        self.keep_samples = bool(keep_samples)
        self._count: dict[str | None, int] = {}
        self._sum: dict[str | None, torch.Tensor] = {}
        self._sumsq: dict[str | None, torch.Tensor] = {}
        self._samples: list[torch.Tensor] = []
        self._sample_tasks: list[str | None] = []

    # ------------------------------------------------------------------ adding
    def _check(self, scores) -> torch.Tensor:
        if isinstance(scores, RamResult):
            scores = scores.ram
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
            found = getattr(scores, "shape", scores)
            raise ValueError(f"expected a score map [num_layers, num_q_heads], got {found!r}")
        if self.shape is None:
            self.shape = tuple(int(s) for s in scores.shape)
        elif tuple(scores.shape) != self.shape:
            raise ValueError(f"score map has shape {tuple(scores.shape)}, this accumulator holds {list(self.shape)}")
        scores = scores.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("score map contains NaN or inf")
        return scores

    def add(self, scores, task: str | None = None) -> None:
        """Add one sample's map fp32 [L, HQ] (or a :class:`RamResult`), optionally under a task name."""
        if task is not None and (not isinstance(task, str) or not task):
            raise ValueError(f"task must be a non-empty string or None, got {task!r}")
        scores = self._check(scores)
        s64 = scores.double()
        if task not in self._count:
            self._count[task] = 0
            self._sum[task] = torch.zeros(self.shape, dtype=torch.float64)
            self._sumsq[task] = torch.zeros(self.shape, dtype=torch.float64)
        self._count[task] += 1
        self._sum[task] += s64
        self._sumsq[task] += s64 * s64
        if self.keep_samples:
            self._samples.append(scores)
            self._sample_tasks.append(task)

    def merge(self, other: RamAccumulator) -> RamAccumulator:
        """Add another accumulator's statistics into this one (in place); returns self."""
        if other.shape is None:
            return self
        if self.shape is not None and self.shape != other.shape:
            raise ValueError(f"cannot merge accumulators of shapes {list(self.shape)} and {list(other.shape)}")
        self.shape = other.shape
        for task, n in other._count.items():
            if task not in self._count:
                self._count[task] = 0
                self._sum[task] = torch.zeros(self.shape, dtype=torch.float64)
                self._sumsq[task] = torch.zeros(self.shape, dtype=torch.float64)
            self._count[task] += n
            self._sum[task] += other._sum[task]
            self._sumsq[task] += other._sumsq[task]
        if self.keep_samples and other.keep_samples:
            self._samples.extend(other._samples)
            self._sample_tasks.extend(other._sample_tasks)
        else:
            self.keep_samples, self._samples, self._sample_tasks = False, [], []
        return self

    @classmethod
    def merged(cls, accumulators: Iterable[RamAccumulator]) -> RamAccumulator:
        """A new accumulator holding the union of several (e.g. one per rank or shard)."""
        accumulators = list(accumulators)
        out = cls(keep_samples=all(a.keep_samples for a in accumulators))
        for acc in accumulators:
            out.merge(acc)
        return out

    # ------------------------------------------------------------------ reading
    @property
    def tasks(self) -> list[str]:
        """Task names seen, sorted (samples added without a task are not listed)."""
        return sorted(t for t in self._count if t is not None)

    def count(self, task: str | None = None) -> int:
        """Number of samples (of one task if given)."""
        if task is not None:
            return self._count.get(task, 0)
        return sum(self._count.values())

    def _totals(self, task: str | None) -> tuple[int, torch.Tensor, torch.Tensor]:
        if self.shape is None or self.count(task) == 0:
            raise ValueError(f"no samples{'' if task is None else f' for task {task!r}'} in this accumulator")
        keys = [task] if task is not None else list(self._count)
        return (sum(self._count[k] for k in keys), sum(self._sum[k] for k in keys),
                sum(self._sumsq[k] for k in keys))

    def mean(self, task: str | None = None) -> torch.Tensor:
        """Mean RAM fp32 [L, HQ] over all samples (or one task's)."""
        n, s, _ = self._totals(task)
        return (s / n).float()

    def std(self, task: str | None = None) -> torch.Tensor:
        """Sample standard deviation fp32 [L, HQ] (n - 1 in the denominator; zeros for one sample)."""
        n, s, sq = self._totals(task)
        if n < 2:
            return torch.zeros(self.shape)
        var = (sq - s * s / n) / (n - 1)
        return var.clamp_min(0).sqrt().float()

    def task_means(self) -> dict[str, torch.Tensor]:
        """Per-task mean maps, fp32 [L, HQ] each."""
        return {task: self.mean(task) for task in self.tasks}

    def samples(self, task: str | None = None) -> torch.Tensor:
        """The kept per-sample maps fp32 [N, L, HQ] (of one task if given)."""
        if not self.keep_samples:
            raise ValueError("this accumulator was built with keep_samples=False")
        picked = [s for s, t in zip(self._samples, self._sample_tasks) if task is None or t == task]
        if not picked:
            return torch.zeros(0, *(self.shape or (0, 0)))
        return torch.stack(picked)

    @property
    def sample_tasks(self) -> list[str | None]:
        """Task name of each kept sample, in order."""
        return list(self._sample_tasks)

    def to_head_config(self, *, num_kv_heads: int, model_id: str | None = None, provenance: dict | None = None,
                       **kwargs):
        """A :class:`~core_attn.heads.HeadConfig` with the mean map as scores and one map per task.

        ``provenance`` is extended with sample counts (total and per task).
        """
        from ..heads.config import HeadConfig

        prov = dict(provenance or {})
        prov.setdefault("num_samples", self.count())
        if self.tasks:
            prov.setdefault("samples_per_task", {t: self.count(t) for t in self.tasks})
        return HeadConfig(scores=self.mean(), num_kv_heads=num_kv_heads, model_id=model_id, provenance=prov,
                          dataset_scores=self.task_means(), **kwargs)

    # ------------------------------------------------------------- (de)serialising
    def state_dict(self) -> dict:
        """Plain tensors and JSON values (loadable with ``torch.load(weights_only=True)``; no pickled objects).

        Keys: format, version, shape [L, HQ], keep_samples, tasks (names; "" = no task), count
        long [K], sum / sumsq float64 [K, L, HQ], samples fp32 [N, L, HQ], sample_task long [N].
        """
        keys = list(self._count)
        names = ["" if k is None else k for k in keys]
        shape = list(self.shape) if self.shape is not None else None
        empty = torch.zeros(0, *(self.shape or (0, 0)), dtype=torch.float64)
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "shape": shape,
            "keep_samples": self.keep_samples,
            "tasks": names,
            "count": torch.tensor([self._count[k] for k in keys], dtype=torch.long),
            "sum": torch.stack([self._sum[k] for k in keys]) if keys else empty.clone(),
            "sumsq": torch.stack([self._sumsq[k] for k in keys]) if keys else empty.clone(),
            "samples": self.samples() if self._samples else empty.float(),
            "sample_task": torch.tensor([keys.index(t) for t in self._sample_tasks], dtype=torch.long),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> RamAccumulator:
        """Inverse of :meth:`state_dict`."""
        if state.get("format") != cls.FORMAT:
            raise ValueError(f"not a RamAccumulator state (format {state.get('format')!r}, expected {cls.FORMAT!r})")
        if int(state.get("version", 0)) > cls.VERSION:
            raise ValueError(f"RamAccumulator state version {state['version']} is newer than {cls.VERSION}")
        shape = state["shape"]
        acc = cls(*(shape or (None, None)), keep_samples=bool(state["keep_samples"]))
        keys = [None if name == "" else name for name in state["tasks"]]
        for i, k in enumerate(keys):
            acc._count[k] = int(state["count"][i])
            acc._sum[k] = state["sum"][i].double().clone()
            acc._sumsq[k] = state["sumsq"][i].double().clone()
        if acc.keep_samples:
            acc._samples = [s.float().clone() for s in state["samples"]]
            acc._sample_tasks = [keys[int(i)] for i in state["sample_task"]]
        return acc

    def save(self, path) -> None:
        """Write a safetensors file: the tensors of :meth:`state_dict`, the rest as JSON metadata."""
        import json

        from safetensors.torch import save_file

        state = self.state_dict()
        tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
        meta = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        save_file(tensors, str(path), metadata={"core_attn": json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path) -> RamAccumulator:
        """Read a file written by :meth:`save`."""
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("core_attn", "{}"))
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        return cls.from_state_dict({**meta, **state})

    def __repr__(self) -> str:
        shape = "empty" if self.shape is None else f"layers={self.shape[0]}, q_heads={self.shape[1]}"
        return f"RamAccumulator({shape}, samples={self.count()}, tasks={self.tasks})"


def _field(sample, *names):
    for name in names:
        if isinstance(sample, Mapping):
            if name in sample:
                return sample[name]
        elif hasattr(sample, name):
            return getattr(sample, name)
    return None


def sample_task(sample) -> str | None:
    """Task name of a sample: its ``task`` field, else its record's ``kind``, else None."""
    task = _field(sample, "task")
    if task is None:
        task = getattr(_field(sample, "record"), "kind", None)
    return task


def ram_over_dataset(model, samples: Iterable, *, accumulator: RamAccumulator | None = None,
                     vision: RamAccumulator | None = None, progress: bool = True, desc: str = "RAM",
                     total: int | None = None) -> RamAccumulator:
    """Measure RAM on every sample and accumulate it (one forward pass per sample).

    Each sample is a mapping or an object with ``inputs`` (model inputs, batch of one),
    ``query_index`` and ``target_index``, optionally ``task`` (or ``record.kind``) and
    ``visual_index`` / ``vision_index``.

    Args:
        accumulator: add into this one (default: a new :class:`RamAccumulator`).
        vision: if given, the vision-head baseline of every sample is added to it (from the same
            forward pass; samples need a visual index).
        progress: show a tqdm progress bar.
    Returns:
        the RAM accumulator.
    """
    from tqdm.auto import tqdm

    layers, hq = int(text_config_of(model).num_hidden_layers), int(text_config_of(model).num_attention_heads)
    acc = accumulator if accumulator is not None else RamAccumulator(layers, hq)
    if total is None and hasattr(samples, "__len__"):
        total = len(samples)
    for i, sample in enumerate(tqdm(samples, desc=desc, total=total, disable=not progress)):
        inputs, q, t = (_field(sample, n) for n in ("inputs", "query_index", "target_index"))
        if inputs is None or q is None or t is None:
            raise ValueError(f"sample {i} needs inputs, query_index and target_index")
        v = _field(sample, "visual_index", "vision_index") if vision is not None else None
        if vision is not None and v is None:
            raise ValueError(f"sample {i} has no visual_index, needed for the vision-head baseline")
        result = measure_ram(model, inputs, q, t, vision_index=v)
        task = sample_task(sample)
        acc.add(result.ram, task=task)
        if vision is not None:
            vision.add(result.vision, task=task)
    return acc


register()

__all__ = [
    "PROBE_IMPLEMENTATION",
    "ProbeRecorder",
    "RamAccumulator",
    "RamResult",
    "core_probe_attention_forward",
    "measure_ram",
    "probe",
    "ram_over_dataset",
    "ram_scores",
    "register",
    "sample_task",
    "text_attention_modules",
    "vision_scores",
]
