"""Fast PyTorch backend for hybrid attention (CPU, or any device without Triton).

Dense q_heads go through ``scaled_dot_product_attention`` (one call per kv_head that has
dense q_heads, so GQA never repeats K/V beyond one kv_head at a time).

Streaming q_heads are processed in query chunks. For a chunk of C rows only the keys any
row of the chunk can see are gathered: the sink keys plus the window band, so one chunk
costs C * (sink + window + C) score entries and the whole pass grows as
Tq * (sink_size + window_size) instead of Tq * Tk. Within a chunk the q_heads that share a
kv_head are folded into the row dimension ([B, HKV, G * C, D] against [B, HKV, Kc, D]),
which is exact GQA without repeating K/V, and the exact per-row pattern is an SDPA bool mask.

Semantics are those of :mod:`core_attn.ops.reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Query rows per streaming chunk. A chunk computes C * (sink + window + C - 1) scores for
# C * (sink + window) useful ones: 64 wastes ~5% at the default sizes. Small chunks are
# batched (_ROWS_PER_CALL rows per SDPA call) so call overhead stays low.
DEFAULT_CHUNK_SIZE = 64
_ROWS_PER_CALL = 2048


def _where_rows(out: torch.Tensor, row_has_key: torch.Tensor) -> torch.Tensor:
    """Zero rows that attend nothing (SDPA gives NaN there). row_has_key broadcasts to out[..., :1]."""
    return torch.where(row_has_key, out, torch.zeros((), dtype=out.dtype, device=out.device))


def _attendable(tq: int, tk: int, attention_mask: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
    """bool [B, 1, rows, Tk]: the padding mask and end-aligned causality together."""
    rows = rows if rows is not None else slice(0, tq)
    pos_q = torch.arange(tk - tq + rows.start, tk - tq + rows.stop, device=attention_mask.device)
    causal = torch.arange(tk, device=attention_mask.device).view(1, tk) <= pos_q.view(-1, 1)
    return attention_mask[:, :, rows, :] & causal


def _dense_part(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    dense_heads: torch.Tensor,
    scale: float,
    attention_mask: torch.Tensor | None,
) -> None:
    """Full causal attention for the dense q_heads, written into ``out`` [B, HQ, Tq, D]."""
    b, hq, tq, d = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    group = hq // hkv
    dense_idx = dense_heads.nonzero().flatten().tolist()
    if not dense_idx:
        return
    if attention_mask is None:
        mask, row_has_key = None, None
        if tq != tk:
            # SDPA's is_causal aligns top-left; ours aligns the last query with the last key.
            mask = _attendable(tq, tk, torch.ones(1, 1, tq, tk, dtype=torch.bool, device=query.device))
    else:
        mask = _attendable(tq, tk, attention_mask)
        row_has_key = mask.any(dim=-1, keepdim=True)  # [B, 1, Tq, 1]
    by_kv: dict[int, list[int]] = {}
    for h in dense_idx:
        by_kv.setdefault(h // group, []).append(h)
    for g, heads in by_kv.items():
        q_g = query[:, heads]  # [B, n, Tq, D]
        k_g = key[:, g : g + 1].expand(b, len(heads), tk, d)
        v_g = value[:, g : g + 1].expand(b, len(heads), tk, d)
        o = F.scaled_dot_product_attention(
            q_g, k_g, v_g, attn_mask=mask, is_causal=mask is None, scale=scale
        )
        if row_has_key is not None:
            o = _where_rows(o, row_has_key)
        out[:, heads] = o


def _streaming_groups(dense_heads: torch.Tensor, hkv: int, group: int) -> list[tuple[list[int], list[int]]]:
    """Group kv_heads by how many streaming q_heads they serve.

    Returns a list of (kv_heads [S], q_heads [S * Gs] in kv_head-major order): within one
    entry every kv_head has exactly Gs streaming q_heads, so their rows fold without padding.
    """
    stream = (~dense_heads.cpu()).view(hkv, group)
    by_count: dict[int, tuple[list[int], list[int]]] = {}
    for g in range(hkv):
        heads = [g * group + j for j in range(group) if bool(stream[g, j])]
        if heads:
            kv, qs = by_count.setdefault(len(heads), ([], []))
            kv.append(g)
            qs.extend(heads)
    return list(by_count.values())


def _chunk_keys_causal(tq: int, tk: int, r0: int, r1: int, sink_size: int, window_size: int, device):
    """Key positions a chunk of rows [r0, r1) can see without a padding mask, and the row pattern.

    Returns (cols: long [Kc] sorted, allowed: bool [r1 - r0, Kc]).
    """
    p0, p1 = tk - tq + r0, tk - tq + r1 - 1
    lo = max(0, p0 - window_size + 1)
    if lo <= sink_size:
        cols = torch.arange(0, p1 + 1, device=device)
    else:
        cols = torch.cat(
            [torch.arange(0, min(sink_size, p1 + 1), device=device), torch.arange(lo, p1 + 1, device=device)]
        )
    pos = torch.arange(p0, p1 + 1, device=device).view(-1, 1)
    allowed = (cols <= pos) & ((cols < sink_size) | (pos - cols < window_size))
    return cols, allowed


def _chunk_keys_masked(
    tq: int, tk: int, r0: int, r1: int, sink_size: int, window_size: int, attention_mask: torch.Tensor
):
    """Like :func:`_chunk_keys_causal` for an arbitrary bool padding mask.

    Returns (cols: long [Kc], allowed: bool [B, r1 - r0, Kc]). The sink rank is counted over
    each row's attendable keys, so the cost of this step is O(C * Tk) per chunk and batch
    row, shared by all heads.
    """
    p1 = tk - tq + r1 - 1
    att = _attendable(tq, tk, attention_mask, slice(r0, r1))[:, 0, :, : p1 + 1]  # [B, C, p1+1]
    rank = torch.cumsum(att, dim=-1, dtype=torch.int32)
    pos_q = torch.arange(tk - tq + r0, p1 + 1, device=att.device).view(-1, 1)
    pos_k = torch.arange(p1 + 1, device=att.device).view(1, -1)
    sel = att & ((rank <= sink_size) | ((pos_q - pos_k) < window_size))
    cols = sel.any(dim=1).any(dim=0).nonzero().flatten()
    return cols, sel[:, :, cols]


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool pattern -> additive float mask (0 / -inf); SDPA on CPU runs faster with it than with bool."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def _steady_chunks(
    query: torch.Tensor,
    out: torch.Tensor,
    groups: list,
    scale: float,
    sink_size: int,
    window_size: int,
    r_start: int,
    n_chunks: int,
    chunk: int,
) -> None:
    """Causal streaming rows [r_start, r_start + n_chunks * chunk) past the sinks, many chunks per SDPA call.

    Every such chunk sees the same pattern: the sink keys plus a contiguous band of
    window_size + chunk - 1 keys, so the bands come from one ``unfold`` and all chunks of a
    super-batch share a single additive mask [Gs * C, Kc] and a single SDPA call.
    """
    b, _, tq, d = query.shape
    tk = groups[0][3].shape[2]
    band = window_size + chunk - 1
    kc = sink_size + band
    rows = torch.arange(chunk, device=query.device).view(-1, 1)
    cols = torch.arange(band, device=query.device).view(1, -1)
    allowed = torch.cat(  # row r of a chunk sees band columns r .. r + window_size - 1
        [torch.ones(chunk, sink_size, dtype=torch.bool, device=query.device), (cols >= rows) & (cols < rows + window_size)],
        dim=1,
    )
    add = _additive(allowed, query.dtype)
    masks: dict[int, torch.Tensor] = {}
    per_call = max(1, _ROWS_PER_CALL // chunk)
    for c0 in range(0, n_chunks, per_call):
        nb = min(per_call, n_chunks - c0)
        r0 = r_start + c0 * chunk
        r1 = r0 + nb * chunk
        k_lo = tk - tq + r0 - window_size + 1  # first band key of the first chunk
        for s, gs, q_heads, k_s, v_s in groups:
            def blocks(x):  # [B, S, Tk, D] -> [B, S * nb, Kc, D]: sinks then each chunk's band
                bands = x[:, :, k_lo : k_lo + (nb - 1) * chunk + band].unfold(2, band, chunk).transpose(-1, -2)
                sinks = x[:, :, None, :sink_size].expand(-1, -1, nb, -1, -1)
                return torch.cat([sinks, bands], dim=3).view(b, s * nb, kc, d)

            mask = masks.get(gs)
            if mask is None:
                mask = masks[gs] = add.repeat(gs, 1)  # rows ordered (q_head, row in chunk)
            # [B, S*Gs, nb*C, D] -> [B, S, nb, Gs*C, D]: fold a kv_head's q_heads into rows, per chunk.
            # (SDPA's fused CPU kernel takes 4-d inputs only: S and nb share the head dim.)
            q_c = query[:, q_heads, r0:r1].view(b, s, gs, nb, chunk, d).transpose(2, 3).reshape(b, s * nb, gs * chunk, d)
            o = F.scaled_dot_product_attention(q_c, blocks(k_s), blocks(v_s), attn_mask=mask, scale=scale)
            out[:, q_heads, r0:r1] = o.view(b, s, nb, gs, chunk, d).transpose(2, 3).reshape(b, s * gs, nb * chunk, d)


def _streaming_part(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    dense_heads: torch.Tensor,
    scale: float,
    sink_size: int,
    window_size: int,
    attention_mask: torch.Tensor | None,
    chunk_size: int,
) -> None:
    """Sink + window attention for the streaming q_heads, written into ``out``."""
    b, hq, tq, d = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    if bool(dense_heads.all()):
        return
    groups = []
    for kv_heads, q_heads in _streaming_groups(dense_heads, hkv, hq // hkv):
        kv_idx = torch.tensor(kv_heads, device=key.device)
        whole = kv_heads == list(range(hkv))
        groups.append(
            (
                len(kv_heads),
                len(q_heads) // len(kv_heads),
                torch.tensor(q_heads, device=query.device),
                key if whole else key.index_select(1, kv_idx),
                value if whole else value.index_select(1, kv_idx),
            )
        )
    spans = [(r0, min(tq, r0 + chunk_size)) for r0 in range(0, tq, chunk_size)]
    if attention_mask is None and window_size >= 1:
        # Rows whose window starts at or past the sinks all share one pattern: batch them.
        r_start = max(0, sink_size + window_size - 1 - (tk - tq))
        n_chunks = max(0, tq - r_start) // chunk_size
        if n_chunks >= 2:
            _steady_chunks(query, out, groups, scale, sink_size, window_size, r_start, n_chunks, chunk_size)
            r_end = r_start + n_chunks * chunk_size
            spans = [(r0, min(r_start, r0 + chunk_size)) for r0 in range(0, r_start, chunk_size)]
            spans += [(r_end, tq)] if r_end < tq else []
    # Without a padding mask every row sees its own key whenever window_size >= 1.
    may_be_empty = attention_mask is not None or window_size == 0
    for r0, r1 in spans:
        c = r1 - r0
        if attention_mask is None:
            cols, allowed = _chunk_keys_causal(tq, tk, r0, r1, sink_size, window_size, query.device)
            add = _additive(allowed, query.dtype).view(1, 1, c, -1)
        else:
            cols, allowed = _chunk_keys_masked(tq, tk, r0, r1, sink_size, window_size, attention_mask)
            add = _additive(allowed, query.dtype).view(allowed.shape[0], 1, c, -1)
        kc = cols.numel()
        if kc == 0:
            for _, _, q_heads, _, _ in groups:
                out[:, q_heads, r0:r1] = 0
            continue
        first, last = int(cols[0]), int(cols[-1])
        for s, gs, q_heads, k_s, v_s in groups:
            if last - first + 1 == kc:  # one contiguous slice: a view, no gather
                k_c, v_c = k_s[:, :, first : last + 1], v_s[:, :, first : last + 1]
            else:
                k_c, v_c = k_s.index_select(2, cols), v_s.index_select(2, cols)
            # Fold the Gs q_heads of one kv_head into rows: [B, S, Gs * C, D] vs [B, S, Kc, D].
            q_c = query[:, q_heads, r0:r1].reshape(b, s, gs * c, d)
            mask = add.repeat(1, 1, gs, 1)
            o = F.scaled_dot_product_attention(q_c, k_c, v_c, attn_mask=mask, scale=scale)
            if may_be_empty:
                o = _where_rows(o, torch.isfinite(mask).any(dim=-1, keepdim=True))
            out[:, q_heads, r0:r1] = o.view(b, s * gs, c, d)


def torch_hybrid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dense_heads: torch.Tensor,
    *,
    sink_size: int,
    window_size: int,
    scale: float | None = None,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Hybrid attention with SDPA (dense q_heads) and chunked sink + window SDPA (streaming q_heads).

    Inputs are assumed validated (see :func:`core_attn.ops.dispatch.hybrid_attention`).

    Args:
        query: [B, HQ, Tq, D]; key, value: [B, HKV, Tk, D].
        dense_heads: bool [HQ].
        attention_mask: optional bool [B, 1, Tq, Tk] (True = attend).
        chunk_size: query rows per streaming chunk.
    Returns:
        [B, HQ, Tq, D], same dtype as query.
    """
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    out = torch.empty_like(query)
    _dense_part(query, key, value, out, dense_heads, scale, attention_mask)
    _streaming_part(
        query, key, value, out, dense_heads, scale, sink_size, window_size, attention_mask, chunk_size
    )
    return out
