"""Helpers shared by the model-level benchmarks: the backbone under test, timing with
out-of-memory handling, peak memory, result rows.

Device / version / git stamps, the CUDA-event and interleaved CPU timers and the
min / mean / median summary are attention_op.py's, imported rather than copied.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from .attention_op import environment, summary, time_cpu_interleaved, time_gpu
from .registry import Backbone

RESULTS_DIR = pathlib.Path(__file__).parent / "results"

__all__ = [
    "BACKBONE_CLASS",
    "RESULTS_DIR",
    "PeakMemory",
    "append_rows",
    "build_backbone",
    "environment",
    "model_fields",
    "protocol",
    "prefill",
    "random_tokens",
    "row_header",
    "time_methods",
]


# ------------------------------------------------------------------------ model under test
def build_backbone(backbone: Backbone, dtype: str, device: str) -> Qwen3VLForConditionalGeneration:
    """Qwen3-VL with ``backbone``'s text decoder and random weights, in eval mode, on sdpa.

    The model is transformers' Qwen3VLForConditionalGeneration, so the text decoder is the
    checkpoint's own (M-RoPE, q/k norms, GQA); the benchmarks feed it text tokens only, so the
    vision tower is a one-block stub that never runs.
    """
    half = backbone.head_dim // 2
    # Qwen3-VL-8B interleaves its rotary dims as [24, 20, 20] of 64; scale to this head_dim.
    section = [half - 2 * (half * 20 // 64), half * 20 // 64, half * 20 // 64]
    text = dict(
        vocab_size=backbone.vocab,
        hidden_size=backbone.hidden,
        intermediate_size=backbone.intermediate,
        num_hidden_layers=backbone.layers,
        num_attention_heads=backbone.q_heads,
        num_key_value_heads=backbone.kv_heads,
        head_dim=backbone.head_dim,
        max_position_embeddings=1 << 20,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": backbone.rope_theta,
            "mrope_section": section,
            "mrope_interleaved": True,
        },
    )
    vision = dict(
        depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=backbone.hidden,
        num_position_embeddings=64, deepstack_visual_indexes=[0],
    )
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=backbone.tie_embeddings)
    config.use_cache = False
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(
            config, attn_implementation="sdpa", dtype=getattr(torch, dtype)
        )
    return model.eval()


BACKBONE_CLASS = "Qwen3VLForConditionalGeneration, text tokens only"

# Ids from here up are Qwen's special and vision tokens; random text stays below them.
FIRST_SPECIAL_ID = 151643


def random_tokens(vocab: int, t: int, device: str, seed: int = 0) -> torch.Tensor:
    """long [1, T] token ids, uniform over the ordinary (non-special) part of the vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(vocab, FIRST_SPECIAL_ID), (1, t), generator=generator).to(device)


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor) -> None:
    """One prefill without a KV cache; the LM head runs on the last position only."""
    model(input_ids=input_ids, use_cache=False, logits_to_keep=1)


# ------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory over the calls of one function wrapped with :meth:`track`.

    CUDA: ``torch.cuda.max_memory_allocated`` (live tensors, weights included), reset before
    each call. CPU: the process's peak resident set size (VmHWM), reset before each call
    through /proc/self/clear_refs (Linux; elsewhere None); it also counts the weights and
    memory the allocator keeps after frees. ``before_bytes`` is the usage right before a call.
    """

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes: int | None = None
        self.before_bytes: int | None = None

    def track(self, fn):
        def call():
            before = self._reset()
            fn()
            if before is not None:
                self.peak_bytes = max(self.peak_bytes or 0, self._peak())
                self.before_bytes = before if self.before_bytes is None else min(self.before_bytes, before)

        return call

    def as_dict(self) -> dict:
        return {"peak_mem_bytes": self.peak_bytes, "mem_before_bytes": self.before_bytes}

    def _reset(self) -> int | None:
        """Start a new peak; returns the current usage, or None where the peak cannot be reset."""
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current VmRSS
        except OSError:
            return None
        rss = _proc_status_kib("VmRSS")
        return None if rss is None else rss * 1024

    def _peak(self) -> int:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated()
        return _proc_status_kib("VmHWM") * 1024


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------------- timing
def time_methods(fns: dict, flops: dict[str, int], device: str, warmup: int, repeats: int) -> dict[str, dict]:
    """Time and measure each named no-argument fn; returns {name: summary + peak memory}.

    CUDA: each fn alone, CUDA events after ``warmup`` passes (attention_op.time_gpu); an
    OutOfMemoryError marks that fn only (``{"oom": True}``). CPU: time.perf_counter with the
    calls interleaved fn by fn, so drift hits all of them alike (attention_op.time_cpu_interleaved).
    ``flops[name]`` gives the achieved TFLOP/s in the summary.
    """
    memory = {name: PeakMemory(device) for name in fns}
    tracked = {name: memory[name].track(fn) for name, fn in fns.items()}
    if device == "cuda":
        times = {}
        for name, fn in tracked.items():
            try:
                times[name] = time_gpu(fn, warmup, repeats)
            except torch.OutOfMemoryError:
                times[name] = None
            torch.cuda.empty_cache()
    else:
        times = time_cpu_interleaved(tracked, warmup, repeats)
    return {
        name: {**summary(times[name], flops[name]), **(memory[name].as_dict() if times[name] else {})} for name in fns
    }


# --------------------------------------------------------------------------------- rows
def row_header(benchmark: str, entry: str, env: dict) -> dict:
    """The fields every row starts with: what, which entry, when, and where (device, versions, git sha)."""
    return {
        "benchmark": benchmark,
        "entry": entry,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **env,
    }


def model_fields(entry) -> dict:
    """The config fields every model-level row starts with: backbone sizes, model class, dtype, batch."""
    return {
        "backbone": dataclasses.asdict(entry.backbone),
        "model_class": BACKBONE_CLASS,
        "dtype": entry.dtype,
        "batch": 1,
    }


def protocol(entry) -> dict:
    """How a timed row was measured."""
    timer = "cuda events, one method at a time" if entry.device == "cuda" else "perf_counter, interleaved"
    return {"warmup": entry.warmup, "repeats": entry.repeats, "timer": timer}


def append_rows(path: pathlib.Path, rows: list[dict]) -> None:
    """Append rows as JSON lines (one per row) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
