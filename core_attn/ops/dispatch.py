"""hybrid_attention(): validate inputs once, then pick a backend."""

from __future__ import annotations

import importlib.util

import torch

from .reference import hybrid_attention_reference
from .torch_hybrid import torch_hybrid_attention

BACKENDS = ("auto", "reference", "torch", "triton")


def triton_available() -> bool:
    """True if the triton package can be imported (a GPU or TRITON_INTERPRET is still needed to launch)."""
    return importlib.util.find_spec("triton") is not None


def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def validate_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dense_heads: torch.Tensor,
    sink_size: int,
    window_size: int,
    attention_mask: torch.Tensor | None,
) -> None:
    """Raise ValueError naming what was expected and what was found."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 4-d tensor [B, H, T, D], got {found}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    b, hq, tq, d = query.shape
    if key.shape != value.shape:
        raise ValueError(f"key and value must have the same shape, got {tuple(key.shape)} and {tuple(value.shape)}")
    bk, hkv, tk, dk = key.shape
    if bk != b or dk != d:
        raise ValueError(
            f"key [B, HKV, Tk, D] must match query's B={b} and D={d}, got key shape {tuple(key.shape)}"
        )
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"number of q_heads ({hq}) must be a multiple of the number of kv_heads ({hkv})")
    if tq > tk:
        raise ValueError(f"query length Tq={tq} must not exceed key length Tk={tk}")
    if query.dtype != key.dtype or key.dtype != value.dtype:
        raise ValueError(f"query, key, value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if query.device != key.device or key.device != value.device:
        raise ValueError(f"query, key, value must be on one device, got {query.device}, {key.device}, {value.device}")
    if not isinstance(dense_heads, torch.Tensor) or dense_heads.dtype != torch.bool or dense_heads.shape != (hq,):
        found = (
            f"{dense_heads.dtype} {tuple(dense_heads.shape)}"
            if isinstance(dense_heads, torch.Tensor)
            else type(dense_heads).__name__
        )
        raise ValueError(f"dense_heads must be a bool tensor of shape [HQ]=({hq},), got {found}")
    _check_int("sink_size", sink_size)
    _check_int("window_size", window_size)
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dtype != torch.bool:
            found = attention_mask.dtype if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
            raise ValueError(
                f"attention_mask must be a bool tensor [B, 1, Tq, Tk] (True = attend), got {found}; "
                "additive float masks are not supported"
            )
        if attention_mask.dim() != 4 or attention_mask.shape[1] != 1 or attention_mask.shape[2:] != (tq, tk):
            raise ValueError(
                f"attention_mask must have shape [B, 1, Tq, Tk] = [{b}, 1, {tq}, {tk}] (B may be 1), "
                f"got {tuple(attention_mask.shape)}"
            )
        if attention_mask.shape[0] not in (1, b):
            raise ValueError(f"attention_mask batch size must be 1 or {b}, got {attention_mask.shape[0]}")


def hybrid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dense_heads: torch.Tensor,
    *,
    sink_size: int,
    window_size: int,
    scale: float | None = None,
    attention_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention where each q_head is either dense (full causal) or streaming (sink + window).

    Args:
        query: [B, HQ, Tq, D]; key, value: [B, HKV, Tk, D], HQ % HKV == 0
            (GQA: q_head h reads kv_head h // (HQ // HKV)).
        dense_heads: bool [HQ]; True keeps the q_head on full causal attention.
        sink_size: a streaming q_head attends the first ``sink_size`` attendable keys of each row.
        window_size: ... and every attendable key j with p - j < window_size.
        scale: softmax scale, default 1 / sqrt(D).
        attention_mask: optional bool [B, 1, Tq, Tk], True = attend (transformers' sdpa mask).
        backend: "auto" (triton for CUDA tensors when available, else torch), "torch",
            "triton" or "reference".
    Returns:
        [B, HQ, Tq, D] in query.dtype. Query row i sits at absolute position Tk - Tq + i;
        a row with no attendable key is all zeros.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    validate_inputs(query, key, value, dense_heads, sink_size, window_size, attention_mask)
    dense_heads = dense_heads.to(query.device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(query.device)
    if backend == "auto":
        backend = "triton" if query.is_cuda and triton_available() else "torch"
    kwargs = dict(sink_size=sink_size, window_size=window_size, scale=scale, attention_mask=attention_mask)
    if backend == "reference":
        return hybrid_attention_reference(query, key, value, dense_heads, **kwargs)
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package: pip install 'core-attn[triton]'")
        from .triton_hybrid import triton_hybrid_attention

        return triton_hybrid_attention(query, key, value, dense_heads, **kwargs)
    return torch_hybrid_attention(query, key, value, dense_heads, **kwargs)
