"""The fused CPU streaming-attention kernel (``csrc/streaming_cpu.cpp``), built on first use.

PyTorch's fused CPU attention has no notion of a sliding window: composing streaming
attention from it means masked calls that compute every (row, key) pair of each chunk's
band plus a separate sink call and a log-sum-exp merge. This kernel walks only the keys a
row block can see, masks only the blocks at the band's ends, and keeps sinks and band in
one online softmax. It is compiled once per machine with PyTorch's extension builder
(cached under ``TORCH_EXTENSIONS_DIR``) and used by the torch backend for float32
inputs without a padding mask.

Without a C++ compiler, or with ``CORE_ATTN_CPU_KERNEL=0``, :func:`available` is False and
the torch backend uses the SDPA composition instead; the result is the same up to float
rounding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import threading
import warnings

import torch

logger = logging.getLogger(__name__)

_SOURCE = pathlib.Path(__file__).parent / "csrc" / "streaming_cpu.cpp"
# Rows per q_head per work item, and keys per block; the item's GEMMs are
# [G * BLOCK_M, D] x [D, BLOCK_N] and [G * BLOCK_M, BLOCK_N] x [BLOCK_N, D].
BLOCK_M = 32
BLOCK_N = 2048

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": None, "error": None, "enabled": None, "calls": 0}


def _flags() -> list[str]:
    # ATen's Vectorized<float> picks its width from CPU_CAPABILITY_* macros; match the
    # capability PyTorch itself dispatches to on this machine.
    cap = torch.backends.cpu.get_cpu_capability()
    # at::parallel_for is an OpenMP pragma in a header: without -fopenmp it runs serially.
    flags = ["-O3", "-fopenmp"]
    if cap.startswith("AVX512"):
        flags += ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"]
    elif cap == "AVX2":
        flags += ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"]
    else:
        flags += ["-DCPU_CAPABILITY=DEFAULT"]
    return flags


def _ensure_ninja() -> None:
    """torch's builder runs ``ninja`` from PATH; the ninja wheel (a dependency) may sit in an
    environment whose bin folder is not on PATH (a venv used without activating it)."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _load() -> bool:
    from torch.utils import cpp_extension

    _ensure_ninja()
    logger.info("core_attn: building the fused CPU streaming kernel (cached after the first build)")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpp_extension.load(
            name="core_attn_streaming_cpu",
            sources=[str(_SOURCE)],
            extra_cflags=_flags(),
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    return hasattr(torch.ops.core_attn_cpu, "streaming_attention")


def enabled() -> bool:
    """Whether the kernel may be used (``CORE_ATTN_CPU_KERNEL=0`` or :func:`use` turn it off)."""
    if _state["enabled"] is not None:
        return bool(_state["enabled"])
    return os.environ.get("CORE_ATTN_CPU_KERNEL", "1") not in ("0", "false", "False")


@contextlib.contextmanager
def use(flag: bool):
    """Context manager turning the kernel on or off (for tests and A/B benchmarks)."""
    old = _state["enabled"]
    _state["enabled"] = flag
    try:
        yield
    finally:
        _state["enabled"] = old


def available() -> bool:
    """Build (once) and load the kernel; False, with one warning, if that fails."""
    if not enabled():
        return False
    if _state["loaded"] is None:
        with _lock:
            if _state["loaded"] is None:
                try:
                    _state["loaded"] = _load()
                except Exception as err:  # no compiler, no headers, no BLAS symbol...
                    _state["loaded"], _state["error"] = False, err
                    warnings.warn(
                        f"core_attn: the CPU streaming kernel could not be built ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); using the slower SDPA composition",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    return bool(_state["loaded"])


def calls() -> int:
    """How many times the kernel has run in this process (to tell which path a model took)."""
    return int(_state["calls"])


def streaming_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    heads: torch.Tensor,
    *,
    sink_size: int,
    window_size: int,
    scale: float,
) -> None:
    """Sink + window causal attention of q_heads ``heads`` written into ``out`` (no padding mask).

    query [B, HQ, Tq, D], key/value [B, HKV, Tk, D], out [B, HQ, Tq, D]: float32 CPU, last
    dim contiguous. heads: int64 [n], sorted. Rows sit at positions Tk - Tq + i.
    """
    _state["calls"] = int(_state["calls"]) + 1
    torch.ops.core_attn_cpu.streaming_attention(
        query, key, value, out, heads, sink_size, window_size, scale, BLOCK_M, BLOCK_N
    )
