"""Plain masked-softmax reference for hybrid (dense / streaming) attention.

This file is the ground truth every backend is tested against. It materialises the
full [B, HQ, Tq, Tk] score matrix, so it is only meant for short sequences.

Semantics (shared by all backends):
  * query row i sits at absolute position p = Tk - Tq + i (end-aligned causality, so a
    cache offset and chunked prefill work);
  * a key j is *attendable* for row i if j <= p and attention_mask[b, 0, i, j] is True
    (no mask means every key passes);
  * a dense q_head attends every attendable key;
  * a streaming q_head attends an attendable key j if j is among the first ``sink_size``
    attendable keys of that row (attention sinks; only unmasked keys are counted, so with
    left padding the sinks are the first real tokens) or if p - j < window_size;
  * a row with no attended key returns zeros.
"""

from __future__ import annotations

import torch


def hybrid_allowed_mask(
    tq: int,
    tk: int,
    dense_heads: torch.Tensor,
    *,
    sink_size: int,
    window_size: int,
    attention_mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which keys each (batch, q_head, query row) attends.

    Args:
        tq, tk: query and key lengths (tq <= tk).
        dense_heads: bool [HQ]; True keeps the q_head on full causal attention.
        sink_size, window_size: streaming-head parameters (>= 0).
        attention_mask: optional bool [B, 1, Tq, Tk], True = may attend.
    Returns:
        bool [B or 1, HQ, Tq, Tk].
    """
    device = device if device is not None else dense_heads.device
    pos_q = torch.arange(tk - tq, tk, device=device).view(tq, 1)  # absolute position p of each row
    pos_k = torch.arange(tk, device=device).view(1, tk)
    attendable = (pos_k <= pos_q).view(1, 1, tq, tk)  # [1, 1, Tq, Tk]
    if attention_mask is not None:
        attendable = attendable & attention_mask.to(device=device, dtype=torch.bool)
    # Rank of each attendable key among the attendable keys of its row (1-based).
    rank = torch.cumsum(attendable.to(torch.int64), dim=-1)
    sink = attendable & (rank <= sink_size)
    window = attendable & ((pos_q - pos_k) < window_size).view(1, 1, tq, tk)
    streaming = sink | window  # [B or 1, 1, Tq, Tk]
    dense = dense_heads.to(device=device, dtype=torch.bool).view(1, -1, 1, 1)
    return torch.where(dense, attendable, streaming)


def hybrid_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dense_heads: torch.Tensor,
    *,
    sink_size: int,
    window_size: int,
    scale: float | None = None,
    attention_mask: torch.Tensor | None = None,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Reference hybrid attention by explicit masked softmax.

    Args:
        query: [B, HQ, Tq, D]; key, value: [B, HKV, Tk, D] with HQ % HKV == 0.
            q_head h reads kv_head h // (HQ // HKV).
        dense_heads: bool [HQ].
        scale: softmax scale, default 1 / sqrt(D).
        attention_mask: optional bool [B, 1, Tq, Tk] (True = attend).
        compute_dtype: float64 (default) or float32.
    Returns:
        [B, HQ, Tq, D] in query.dtype.
    """
    b, hq, tq, d = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    group = hq // hkv
    scale = d**-0.5 if scale is None else scale
    q = query.to(compute_dtype)
    k = key.to(compute_dtype).repeat_interleave(group, dim=1)
    v = value.to(compute_dtype).repeat_interleave(group, dim=1)
    allowed = hybrid_allowed_mask(
        tq,
        tk,
        dense_heads,
        sink_size=sink_size,
        window_size=window_size,
        attention_mask=attention_mask,
        device=query.device,
    )
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    probs = torch.exp(scores - row_max)  # exp(-inf) = 0 for disallowed keys
    denom = probs.sum(dim=-1, keepdim=True)
    probs = probs / denom.clamp_min(torch.finfo(compute_dtype).tiny)  # empty rows stay all-zero
    return torch.matmul(probs, v).to(query.dtype)
