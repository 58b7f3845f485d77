"""The sparsity and ablation settings an lmms-eval model takes, and applying them to a loaded model.

Pure core-attn: nothing here imports lmms-eval, so the settings are testable (and usable from
other harnesses) without it. lmms-eval hands ``--model_args`` over as parsed by its
``simple_parse_args_string``: numbers arrive as int / float, ``True`` / ``False`` as bool and
everything else, ``None`` included, as a string; :meth:`CoreSettings.from_model_args` normalises
that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass

import torch

from core_attn.analysis.ablation import STRATEGIES, ablate_heads, select_heads
from core_attn.heads import HeadConfig
from core_attn.hf.attach import attach, attached_settings

# model_args that are ours; everything else goes to lmms-eval's own model class.
SETTING_NAMES = ("head_config", "dense", "sink", "window", "ablate", "ablate_k", "seed", "decode", "backend", "ram_output")


def _none(value):
    return None if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")) else value


@dataclass(frozen=True)
class CoreSettings:
    """What core-attn does to the model of one lmms-eval run.

    head_config: a HeadConfig folder, a Hub repo id, or None (core-attn's index of published
        rankings, looked up by the checkpoint name).
    dense: fraction in (0, 1] of all heads kept dense, or an int head count. 1.0 (the dense
        baseline) leaves the model on sdpa and needs no head config.
    sink, window: streaming parameters; None takes the head config's.
    ablate: None, "top", "bottom" or "random": silence ``ablate_k`` heads of that ranking
        (on the model's own attention; combined with dense < 1 it ablates under hybrid prefill).
    seed: seed of ``ablate="random"``.
    ram_output: folder the core_ram_* tasks write their HeadConfigs to (``<ram_output>/<kind>``).
    """

    head_config: str | None = None
    dense: float | int = 1.0
    sink: int | None = None
    window: int | None = None
    ablate: str | None = None
    ablate_k: int = 0
    seed: int = 0
    decode: str = "dense"
    backend: str = "auto"
    ram_output: str = "core_ram"

    def __post_init__(self):
        # HeadConfig.num_selected checks dense against the head count too, but only once a model
        # and a head config are loaded; these checks fail before a multi-GB checkpoint loads.
        dense = self.dense
        if isinstance(dense, bool) or not isinstance(dense, (int, float)):
            raise ValueError(f"dense must be a fraction in (0, 1] or a head count, got {dense!r}")
        if isinstance(dense, float) and not 0.0 < dense <= 1.0:
            raise ValueError(f"dense as a fraction must lie in (0, 1], got {dense!r}")
        if isinstance(dense, int) and dense < 1:
            raise ValueError(f"dense as a head count must be >= 1, got {dense!r}")
        for name in ("sink", "window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        if self.ablate is not None and self.ablate not in STRATEGIES:
            raise ValueError(f"ablate must be one of {STRATEGIES} or None, got {self.ablate!r}")
        if isinstance(self.ablate_k, bool) or not isinstance(self.ablate_k, int) or self.ablate_k < 0:
            raise ValueError(f"ablate_k must be a non-negative int, got {self.ablate_k!r}")
        if self.ablate is not None and self.ablate_k == 0:
            raise ValueError(f"ablate={self.ablate!r} needs ablate_k >= 1 heads to silence")
        if self.ablate is None and self.ablate_k:
            raise ValueError(f"ablate_k={self.ablate_k} needs ablate=top|bottom|random")

    @classmethod
    def from_model_args(cls, args: dict) -> tuple[CoreSettings, dict]:
        """Split parsed model_args into (our settings, the rest for the harness's model class)."""
        ours = {k: _none(args[k]) for k in SETTING_NAMES if k in args}
        rest = {k: v for k, v in args.items() if k not in SETTING_NAMES}
        if "dense" in ours and ours["dense"] is None:
            ours.pop("dense")
        if "ablate_k" in ours and ours["ablate_k"] is None:
            ours.pop("ablate_k")
        if isinstance(ours.get("ablate"), str):
            ours["ablate"] = ours["ablate"].lower()
        if ours.get("head_config") is not None:
            ours["head_config"] = str(ours["head_config"])
        return cls(**ours), rest

    @property
    def is_dense_baseline(self) -> bool:
        return isinstance(self.dense, float) and self.dense == 1.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _load_head_config(settings: CoreSettings, model) -> HeadConfig:
    if settings.head_config is None:
        from core_attn.heads.registry import head_config_for_model

        return head_config_for_model(model)
    return HeadConfig.from_pretrained(settings.head_config)


def configure(model, settings: CoreSettings) -> tuple[dict, contextlib.ExitStack]:
    """Apply ``settings`` to a loaded transformers model, in place.

    dense < 1 attaches the head config (core_hybrid prefill); ablation installs hooks that stay
    until the returned ExitStack is closed. Returns (a summary for logs and result files: the
    settings, dense / ablated head labels; the ExitStack).
    """
    stack = contextlib.ExitStack()
    summary = {"settings": settings.as_dict(), "dense_heads": None, "ablated_heads": None}
    needs_config = not settings.is_dense_baseline or settings.ablate is not None
    config = _load_head_config(settings, model) if needs_config else None
    if not settings.is_dense_baseline:
        mask = attach(
            model,
            config,
            dense=settings.dense,
            sink_size=settings.sink,
            window_size=settings.window,
            decode=settings.decode,
            backend=settings.backend,
        )
        summary["dense_heads"] = _labels(mask)
        attached = attached_settings(model)  # the config's sink / window where settings left them None
        summary["sink_size"], summary["window_size"] = attached["sink_size"], attached["window_size"]
    if settings.ablate is not None:
        heads = select_heads(config, settings.ablate, settings.ablate_k, seed=settings.seed)
        mask = stack.enter_context(ablate_heads(model, heads))
        summary["ablated_heads"] = _labels(mask)
    return summary, stack


def _labels(mask: torch.Tensor) -> list[str]:
    return [f"L{int(layer)}H{int(head)}" for layer, head in mask.nonzero().tolist()]


class PrefillTimer:
    """Wall time of every prefill of a model: a top-level forward over more than one new token.

    Hooks on the model's own forward (the vision encoder, when the prompt has images, is part of
    the prefill it times); decode steps with a KV cache pass one token and are skipped. On CUDA
    the device is synchronised at both ends so the time is the GPU's. ``times_s`` has one entry
    per prefill, ``tokens`` its length.
    """

    def __init__(self, model):
        self.times_s: list[float] = []
        self.tokens: list[int] = []
        self._start: float | None = None
        self._device = None
        self._handles = [
            model.register_forward_pre_hook(self._begin, with_kwargs=True),
            model.register_forward_hook(self._end, with_kwargs=True),
        ]

    def _begin(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        n = int(ids.shape[1]) if isinstance(ids, torch.Tensor) and ids.dim() >= 2 else 0
        if n > 1:
            self._device = ids.device if ids.is_cuda else None
            self._sync()
            self._start = time.perf_counter()
            self.tokens.append(n)

    def _end(self, module, args, kwargs, output):
        if self._start is not None:
            self._sync()
            self.times_s.append(time.perf_counter() - self._start)
            self._start = None

    def _sync(self) -> None:
        if self._device is not None:
            torch.cuda.synchronize(self._device)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def summary(self) -> dict:
        n = len(self.times_s)
        return {
            "prefills": n,
            "prefill_mean_s": sum(self.times_s) / n if n else None,
            "prefill_total_s": sum(self.times_s),
            "prefill_mean_tokens": sum(self.tokens[:n]) / n if n else None,
        }
