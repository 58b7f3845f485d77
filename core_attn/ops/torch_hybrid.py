"""Fast PyTorch backend for hybrid attention (CPU, or any device without Triton).

Dense q_heads go through ``scaled_dot_product_attention`` (one call per kv_head that has
dense q_heads, so GQA never repeats K/V beyond one kv_head at a time).

Streaming q_heads without a padding mask, in float32 on CPU, go to the fused C++ kernel of
:mod:`core_attn.ops.cpu_kernel` when it could be built: it visits only the sink and band
keys of each row block and never masks a key block that every row sees.

Otherwise (a padding mask, another dtype or device, no compiler) streaming q_heads are
composed from SDPA calls over query chunks. For a chunk of C rows only the keys any row of
the chunk can see are gathered: the sink keys plus the window band, so one chunk costs
C * (sink + window + C) score entries and the whole pass grows as
Tq * (sink_size + window_size) instead of Tq * Tk. Within a chunk the q_heads that share a
kv_head are folded into the row dimension ([B, HKV, G * C, D] against [B, HKV, Kc, D]),
which is exact GQA without repeating K/V, and the exact per-row pattern is an SDPA bool mask.

Semantics are those of :mod:`core_attn.ops.reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_kernel

# Query rows per streaming chunk in the generic (masked / non-CPU) path.
DEFAULT_CHUNK_SIZE = 64
# Rows per chunk on the CPU fast path. A chunk of C rows scores a band of window + C - 1 keys
# for window useful ones, so small C wastes little; all chunks go into one SDPA call per
# kv_head, so C does not change the number of calls.
STEADY_CHUNK = 64
# A causal SDPA call splits its rows statically over threads, so with few (batch, q_head)
# pairs one thread gets the long rows (with 2 threads, 3/4 of the work); cutting rows into
# blocks evens the work out (see _dense_causal_blocks).
_DENSE_MIN_ROWS = 1024
# Query rows (q_heads folded in) per SDPA call on the CPU fast path; see _steady_rows.
SLAB_ROWS = 8192

# The fused CPU SDPA kernel also returns each row's log-sum-exp, which lets two partial
# attentions over disjoint key sets merge exactly (as in flash attention).
_CPU_FLASH_LSE = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _lse_fast_path(query: torch.Tensor) -> bool:
    return _CPU_FLASH_LSE is not None and query.device.type == "cpu"


def _attention_lse(q, k, v, scale, *, is_causal=False, mask=None):
    """SDPA on CPU returning (out [..., T, D], lse float32 [..., T])."""
    return _CPU_FLASH_LSE(q, k, v, 0.0, is_causal, attn_mask=mask, scale=scale)


def _merge(o1, l1, o2, l2, out=None):
    """Combine two attentions of the same rows over disjoint key sets, given their log-sum-exps.

    The weight of o2 is exp(l2) / (exp(l1) + exp(l2)) = sigmoid(l2 - l1): one lerp pass,
    written straight into ``out`` (any strides, e.g. a slice of the op's output) when given.
    """
    weight = torch.sigmoid(l2 - l1).unsqueeze(-1)
    if out is not None and o1.dtype == torch.float32 and o2.dtype == torch.float32:
        return torch.lerp(o1, o2, weight, out=out)
    merged = torch.lerp(o1.float(), o2.float(), weight).to(o1.dtype)
    return merged if out is None else out.copy_(merged)


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
        if mask is None and tq >= _DENSE_MIN_ROWS and b * len(heads) < 2 * torch.get_num_threads() and _lse_fast_path(query):
            out[:, heads] = _dense_causal_blocks(q_g, k_g, v_g, scale)
            continue
        o = F.scaled_dot_product_attention(
            q_g, k_g, v_g, attn_mask=mask, is_causal=mask is None, scale=scale
        )
        if row_has_key is not None:
            o = _where_rows(o, row_has_key)
        out[:, heads] = o


def _dense_causal_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention (Tq == Tk) with the work split evenly over threads.

    q: [B, n, T, D]; k, v: [B, n, T, D] (may be expanded views) -> [B, n, T, D].

    The rows split into ``nb`` equal blocks (after ``T % nb`` leading rows done on their own).
    All blocks' causal diagonal squares go into ONE call, stacked along the head dimension, so
    a thread gets whole squares; then each block's rectangle of earlier keys, whose rows are
    all the same length, in one call per block; the two merge through their log-sum-exps.
    """
    b, n, t, d = q.shape
    nb = _dense_blocks(t)
    out = torch.empty_like(q)
    r = t % nb  # leading rows, fewer than nb
    size = (t - r) // nb
    if r:
        out[:, :, :r] = _attention_lse(q[:, :, :r], k[:, :, :r], v[:, :, :r], scale, is_causal=True)[0]

    def blocks(x):  # [B, n, T, D] -> [B, n * nb, size, D], ordered (head, block)
        return x[:, :, r:].reshape(b, n * nb, size, d)

    o, lse = _attention_lse(blocks(q), blocks(k), blocks(v), scale, is_causal=True)
    o, lse = o.view(b, n, nb, size, d), lse.view(b, n, nb, size)
    for i in range(nb):
        r0 = r + i * size
        if r0 > 0:
            o_rect, lse_rect = _attention_lse(q[:, :, r0 : r0 + size], k[:, :, :r0], v[:, :, :r0], scale)
            _merge(o[:, :, i], lse[:, :, i], o_rect, lse_rect, out=out[:, :, r0 : r0 + size])
        else:
            out[:, :, r0 : r0 + size] = o[:, :, i]
    return out


def _dense_blocks(t: int) -> int:
    """Blocks for :func:`_dense_causal_blocks`: one per thread (at least 2), none shorter than 256 rows."""
    return max(2, min(torch.get_num_threads(), t // 256))


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


def _steady_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    dense_heads: torch.Tensor,
    scale: float,
    sink_size: int,
    window_size: int,
    r_start: int,
    n_chunks: int,
    chunk: int,
) -> None:
    """Causal streaming rows [r_start, r_start + n_chunks * chunk) whose windows start past the sinks (CPU).

    Per kv_head and slab of chunks (at most SLAB_ROWS folded rows) two SDPA calls cover the
    rows: one over the sink keys, and one where chunk c of C rows meets its band of
    window_size + C - 1 keys, taken as an overlapping ``unfold`` view of K/V (no copy) with
    one additive mask shared by all chunks. The two partial results merge exactly through
    their log-sum-exps (see :func:`_steady_slab`).
    """
    b, hq, tq, d = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    group = hq // hkv
    band = window_size + chunk - 1
    r0, r1 = r_start, r_start + n_chunks * chunk
    k_lo = tk - tq + r0 - window_size + 1  # first band key of the first chunk
    rows = torch.arange(chunk, device=query.device).view(-1, 1)
    cols = torch.arange(band, device=query.device).view(1, -1)
    band_mask = _additive((cols >= rows) & (cols < rows + window_size), query.dtype)  # [C, band]
    masks: dict[int, torch.Tensor] = {}
    stream = (~dense_heads.cpu()).view(hkv, group)
    for g in range(hkv):
        heads = [g * group + j for j in range(group) if bool(stream[g, j])]
        if not heads:
            continue
        gs = len(heads)
        if gs not in masks:
            masks[gs] = band_mask.repeat(gs, 1)  # rows ordered (q_head, row in chunk)
        idx = torch.tensor(heads, device=query.device)
        contiguous = heads == list(range(heads[0], heads[0] + gs))
        # Slabs of chunks keep every intermediate small: the allocator reuses their memory
        # instead of mapping (and page-faulting) fresh buffers as large as the whole pass.
        per_slab = max(1, SLAB_ROWS // (gs * chunk))
        for c0 in range(0, n_chunks, per_slab):
            nc = min(per_slab, n_chunks - c0)
            _steady_slab(
                query, key, value, out, g, heads, idx, contiguous, masks[gs], scale, sink_size,
                r0 + c0 * chunk, nc, chunk, k_lo + c0 * chunk, band,
            )


def _steady_slab(query, key, value, out, g, heads, idx, contiguous, mask, scale, sink_size, r0, n_chunks, chunk, k_lo, band):
    """One slab of :func:`_steady_rows`: chunks [r0, r0 + n_chunks * chunk) of kv_head g's streaming q_heads."""
    b, d = query.shape[0], query.shape[-1]
    gs = len(heads)
    r1 = r0 + n_chunks * chunk
    q_s = query[:, heads[0] : heads[0] + gs, r0:r1] if contiguous else query[:, idx, r0:r1]
    # [B, Gs, nb * C, D] -> [B, nb, Gs * C, D]: the q_heads of one kv_head fold into rows.
    q_c = q_s.reshape(b, gs, n_chunks, chunk, d).transpose(1, 2).reshape(b, n_chunks, gs * chunk, d)
    span = slice(k_lo, k_lo + (n_chunks - 1) * chunk + band)
    k_b = key[:, g, span].unfold(1, band, chunk).transpose(-1, -2)  # [B, nb, band, D], a view
    v_b = value[:, g, span].unfold(1, band, chunk).transpose(-1, -2)
    o, lse = _attention_lse(q_c, k_b, v_b, scale, mask=mask)
    # o is [B, nb, Gs * C, D]; target is out's slice seen as [B, nb, Gs, C, D] (a strided view).
    if contiguous:
        target = out[:, heads[0] : heads[0] + gs, r0:r1].view(b, gs, n_chunks, chunk, d).transpose(1, 2)
    if sink_size:
        o_s, lse_s = _attention_lse(
            q_c.view(b, 1, -1, d), key[:, g : g + 1, :sink_size], value[:, g : g + 1, :sink_size], scale
        )
        if contiguous:  # merge straight into out: no intermediate, no extra copy
            _merge(
                o.view(b, n_chunks, gs, chunk, d),
                lse.view(b, n_chunks, gs, chunk),
                o_s.view(b, n_chunks, gs, chunk, d),
                lse_s.view(b, n_chunks, gs, chunk),
                out=target,
            )
            return
        o = _merge(o, lse, o_s.view_as(o), lse_s.view_as(lse))
    o = o.view(b, n_chunks, gs, chunk, d)
    if contiguous:  # a slice of out: one strided copy, no index_put
        target.copy_(o)
    else:
        out[:, idx, r0:r1] = o.transpose(1, 2).reshape(b, gs, n_chunks * chunk, d)


def _fused_kernel_applies(query, key, value, out) -> bool:
    """Whether the fused CPU kernel (:mod:`core_attn.ops.cpu_kernel`) can take the streaming q_heads."""
    tensors = (query, key, value, out)
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 and t.stride(-1) == 1 for t in tensors)
        and cpu_kernel.available()
    )


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
    if attention_mask is None and _fused_kernel_applies(query, key, value, out):
        heads = (~dense_heads).nonzero().flatten().to(device="cpu", dtype=torch.int64)
        cpu_kernel.streaming_attention(
            query, key, value, out, heads, sink_size=sink_size, window_size=window_size, scale=scale
        )
        return
    # (S kv_heads, Gs streaming q_heads each, q_heads [S * Gs], kv_heads [S] or None for all)
    groups = []
    for kv_heads, q_heads in _streaming_groups(dense_heads, hkv, hq // hkv):
        whole = kv_heads == list(range(hkv))
        kv_idx = None if whole else torch.tensor(kv_heads, device=key.device)
        groups.append((len(kv_heads), len(q_heads) // len(kv_heads), torch.tensor(q_heads, device=query.device), kv_idx))
    spans = [(r0, min(tq, r0 + chunk_size)) for r0 in range(0, tq, chunk_size)]
    if attention_mask is None and window_size >= 1 and _lse_fast_path(query):
        # Rows whose window starts at or past the sinks all share one pattern: batch them.
        r_start = max(0, sink_size + window_size - 1 - (tk - tq))
        n_chunks = max(0, tq - r_start) // STEADY_CHUNK
        if n_chunks >= 2:
            _steady_rows(
                query, key, value, out, dense_heads, scale, sink_size, window_size, r_start, n_chunks, STEADY_CHUNK
            )
            r_end = r_start + n_chunks * STEADY_CHUNK
            spans = [(r0, min(r_start, r0 + chunk_size)) for r0 in range(0, r_start, chunk_size)]
            if tq == tk and r_start > 0:
                # Row p < sink + window - 1 sees [0, sink) and [p - window + 1, p], i.e. all of [0, p]:
                # the head rows are plain causal attention.
                _causal_head_rows(query, key, value, out, groups, scale, r_start)
                spans = []
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
            for _, _, q_heads, _ in groups:
                out[:, q_heads, r0:r1] = 0
            continue
        first, last = int(cols[0]), int(cols[-1])
        if last - first + 1 == kc:  # one contiguous slice: a view, no gather
            k_all, v_all = key[:, :, first : last + 1], value[:, :, first : last + 1]
        else:
            k_all, v_all = key.index_select(2, cols), value.index_select(2, cols)
        for s, gs, q_heads, kv_idx in groups:
            # Only this chunk's keys are gathered per group, never the whole K/V.
            k_c = k_all if kv_idx is None else k_all.index_select(1, kv_idx)
            v_c = v_all if kv_idx is None else v_all.index_select(1, kv_idx)
            # Fold the Gs q_heads of one kv_head into rows: [B, S, Gs * C, D] vs [B, S, Kc, D].
            q_c = query[:, q_heads, r0:r1].reshape(b, s, gs * c, d)
            mask = add.repeat(1, 1, gs, 1)
            o = F.scaled_dot_product_attention(q_c, k_c, v_c, attn_mask=mask, scale=scale)
            if may_be_empty:
                o = _where_rows(o, torch.isfinite(mask).any(dim=-1, keepdim=True))
            out[:, q_heads, r0:r1] = o.view(b, s * gs, c, d)


def _causal_head_rows(query, key, value, out, groups, scale: float, rows: int) -> None:
    """Rows [0, rows) of every streaming q_head as causal attention over keys [0, rows) (Tq == Tk).

    One SDPA call per group on 4-d [B, S * Gs, rows, D] tensors (a 5-d call would leave the
    fused kernel); K/V of these rows (rows < sink + window) are copied once per q_head.
    """
    b, _, _, d = query.shape
    for s, gs, q_heads, kv_idx in groups:
        k = key[:, :, :rows] if kv_idx is None else key[:, :, :rows].index_select(1, kv_idx)
        v = value[:, :, :rows] if kv_idx is None else value[:, :, :rows].index_select(1, kv_idx)
        k = k.unsqueeze(2).expand(b, s, gs, rows, d).reshape(b, s * gs, rows, d)
        v = v.unsqueeze(2).expand(b, s, gs, rows, d).reshape(b, s * gs, rows, d)
        out[:, q_heads, :rows] = F.scaled_dot_product_attention(query[:, q_heads, :rows], k, v, is_causal=True, scale=scale)


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
