"""Named benchmark configurations: ``python -m benchmarks.run NAME`` measures one of these.

Four kinds of entry, one module each:
  AttentionOp   the attention op alone (delegates to benchmarks/attention_op.py)
  E2EPrefill    end-to-end prefill of a language backbone, sdpa vs core_hybrid (e2e_prefill.py)
  RamMemory     peak memory and time of RAM extraction vs a plain forward (memory.py)
  OomBoundary   the longest context each attention setting prefills on a GPU (memory.py)

Backbones are Qwen3-VL text decoders (transformers' Qwen3VLForConditionalGeneration with a
stub vision tower, fed text tokens) built from the sizes below with random weights: prefill
latency does not depend on weight values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """Sizes of a Qwen3-style text decoder."""

    name: str
    hidden: int
    layers: int  # L
    q_heads: int  # HQ per layer
    kv_heads: int  # HKV per layer
    head_dim: int  # D
    intermediate: int  # gated MLP width
    vocab: int
    rope_theta: float
    tie_embeddings: bool


# text_config of Qwen/Qwen3-VL-8B-Instruct. transformers' Qwen3VLTextConfig() defaults are a
# generic 7B shape (32 layers, 32 kv_heads, intermediate 22016), not this checkpoint's.
QWEN3_VL_8B_TEXT = Backbone(
    name="Qwen3-VL-8B text",
    hidden=4096,
    layers=36,
    q_heads=32,
    kv_heads=8,
    head_dim=128,
    intermediate=12288,
    vocab=151936,
    rope_theta=5_000_000.0,
    tie_embeddings=False,
)
# text_config of Qwen/Qwen3-VL-2B-Instruct.
QWEN3_VL_2B_TEXT = Backbone(
    name="Qwen3-VL-2B text",
    hidden=2048,
    layers=28,
    q_heads=16,
    kv_heads=8,
    head_dim=128,
    intermediate=6144,
    vocab=151936,
    rope_theta=5_000_000.0,
    tie_embeddings=True,
)
# Scaled down so a 2-core CPU prefills 16k tokens in seconds; same GQA ratio family and vocab.
QWEN3_STYLE_CPU = Backbone(
    name="Qwen3-style, CPU scale",
    hidden=1024,
    layers=4,
    q_heads=16,
    kv_heads=4,
    head_dim=64,
    intermediate=3072,
    vocab=151936,
    rope_theta=5_000_000.0,
    tie_embeddings=True,
)
# Two layers, for the smoke test of the runner.
TINY = Backbone(
    name="tiny",
    hidden=128,
    layers=2,
    q_heads=4,
    kv_heads=2,
    head_dim=32,
    intermediate=256,
    vocab=1024,
    rope_theta=10_000.0,
    tie_embeddings=True,
)

GPU_LENGTHS = (8192, 16384, 32768, 65536, 131072)
GPU_FRACTIONS = (0.25, 0.1, 0.05, 0.025)  # share of all L * HQ q_heads kept dense


@dataclass(frozen=True)
class AttentionOp:
    """The attention op alone: ``python -m benchmarks.attention_op --preset PRESET``."""

    preset: str  # "gpu" or "cpu"
    results: str = "attention_op"  # results/<results>.jsonl

    @property
    def device(self) -> str:
        return "cuda" if self.preset == "gpu" else "cpu"


@dataclass(frozen=True)
class E2EPrefill:
    """One batch-1 prefill (use_cache=False, logits_to_keep=1) per length: sdpa, then core_hybrid per fraction.

    Dense q_heads come from a HeadConfig of random scores (seed ``head_seed``). Latency depends
    on how many q_heads are dense, not on which: every backend's cost is, to first order, a sum
    over q_heads of a dense or a streaming cost. Change ``head_seed`` to check it on a device.
    """

    backbone: Backbone
    device: str
    dtype: str
    lengths: tuple[int, ...]
    dense_fractions: tuple[float, ...]
    results: str
    sink_size: int = 128
    window_size: int = 1024
    warmup: int = 2
    repeats: int = 5
    head_seed: int = 0


@dataclass(frozen=True)
class RamMemory:
    """RAM extraction (core_attn.ram_scores) vs a plain sdpa forward on the same random tokens.

    The query rows are the last ``n_query`` tokens; the targets a block of ``n_target`` tokens
    in the middle of the sequence.
    """

    backbone: Backbone
    device: str
    dtype: str
    lengths: tuple[int, ...]
    results: str
    n_query: int = 64
    n_target: int = 1024
    warmup: int = 2
    repeats: int = 5


@dataclass(frozen=True)
class OomBoundary:
    """Lengths tried in increasing order, one untimed forward each, until OutOfMemoryError.

    Settings: sdpa, core_hybrid at each dense fraction, and RAM extraction. CUDA only: on a CPU
    the operating system kills the process instead of raising OutOfMemoryError.
    """

    backbone: Backbone
    dtype: str
    lengths: tuple[int, ...]
    dense_fractions: tuple[float, ...]
    results: str
    sink_size: int = 128
    window_size: int = 1024
    n_query: int = 64
    n_target: int = 1024
    head_seed: int = 0
    device: str = "cuda"


Entry = AttentionOp | E2EPrefill | RamMemory | OomBoundary

ENTRIES: dict[str, Entry] = {
    "attention-op-gpu": AttentionOp(preset="gpu"),
    "attention-op-cpu": AttentionOp(preset="cpu"),
    "e2e-qwen3vl-8b": E2EPrefill(
        QWEN3_VL_8B_TEXT, "cuda", "bfloat16", GPU_LENGTHS, GPU_FRACTIONS, results="e2e_qwen3vl_8b"
    ),
    "e2e-qwen3vl-2b": E2EPrefill(
        QWEN3_VL_2B_TEXT, "cuda", "bfloat16", GPU_LENGTHS, GPU_FRACTIONS, results="e2e_qwen3vl_2b"
    ),
    "e2e-cpu": E2EPrefill(
        QWEN3_STYLE_CPU,
        "cpu",
        "float32",
        lengths=(4096, 8192, 16384),
        dense_fractions=(0.25, 0.05),
        results="e2e_cpu",
        warmup=1,
        repeats=3,
    ),
    "e2e-smoke": E2EPrefill(
        TINY, "cpu", "float32", (256,), (0.25,), results="e2e_smoke", sink_size=16, window_size=64, warmup=1, repeats=1
    ),
    "memory-qwen3vl-8b": RamMemory(QWEN3_VL_8B_TEXT, "cuda", "bfloat16", GPU_LENGTHS, results="memory_qwen3vl_8b"),
    "memory-cpu": RamMemory(QWEN3_STYLE_CPU, "cpu", "float32", (4096, 8192), results="memory_cpu", warmup=1, repeats=3),
    "memory-smoke": RamMemory(
        TINY, "cpu", "float32", (256,), results="memory_smoke", n_query=8, n_target=32, warmup=1, repeats=1
    ),
    "oom-qwen3vl-8b": OomBoundary(
        QWEN3_VL_8B_TEXT,
        "bfloat16",
        lengths=(65536, 131072, 262144, 393216, 524288, 786432, 1048576),
        dense_fractions=(0.05,),
        results="memory_oom_qwen3vl_8b",
    ),
}


def describe(name: str) -> str:
    """One line per entry for ``--list``."""
    entry = ENTRIES[name]
    fields = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
    backbone = fields.pop("backbone", None)
    what = type(entry).__name__ + (f" [{backbone.name}]" if backbone else "")
    return f"{name:<20} {what}: " + ", ".join(f"{k}={v}" for k, v in fields.items() if k != "results")
