"""Triton flash-attention forward for hybrid (dense / streaming) attention.

One launch covers every q_head of a layer. The grid is (query block, batch * q_head); a
program keeps a BLOCK_M x D query tile in registers and walks key blocks with an online
softmax. A dense q_head walks every causal key block; a streaming q_head walks only the
sink blocks and the window blocks, so its cost is O(sink_size + window_size) per row
instead of O(T). Key blocks that no row of the tile may attend are never loaded.

Semantics are those of ``reference.hybrid_attention_reference`` (end-aligned causality,
sinks counted over attendable keys only, empty rows -> zeros), exactly, for any bool
``attention_mask``:

  * per (batch, query row) the launcher derives, with torch, the first and the last
    attendable key and the exclusive end of the row's sinks (one past its
    ``sink_size``-th attendable key); these bound the key blocks a program visits;
  * inside the visited blocks the mask tile itself is loaded (``HAS_MASK``).

Optional features are compile-time flags: ``HAS_MASK`` (bool mask given), ``EVEN_D``
(head dim is already a power of two, no load mask on D), ``UPCAST`` (compute the dots in
fp32; set for bf16 under the Triton interpreter, whose bf16 arithmetic is wrong).

Imports only torch, triton and the standard library.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

# The interpreter runs kernels on CPU with numpy; it must be chosen before triton.jit runs,
# so reading the variable at import time matches what triton itself does.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256
# Blocks stay >= 16 on every path: tl.dot rejects smaller tiles on GPUs.
_MIN_BLOCK = 16
# Rows of the [B, Tq, Tk] mask summarised per torch step in the launcher (bounds the int32
# cumulative-count buffer to about 64 MiB whatever the sequence length).
_MASK_CHUNK_ELEMENTS = 1 << 24

if _INTERPRET:
    # Small fixed tiles: exercises multi-block walks on short test sequences and keeps the
    # numpy-backed interpreter fast. Autotuning is meaningless there.
    _CONFIGS = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in (
            (128, 64, 8, 3),
            (128, 64, 4, 3),
            (128, 128, 8, 2),
            (64, 64, 4, 3),
            (64, 32, 4, 2),  # fits shared memory at head dim 256
        )
    ]


@triton.jit
def _attend_key_blocks(
    acc,
    m_i,
    l_i,
    q,
    K,
    V,
    MASK,
    start,
    end,
    offs_m,
    pos_q,
    row_ok,
    row_sink_end,
    is_dense,
    offs_d,
    d_ok,
    stride_kn,
    stride_kd,
    stride_vn,
    stride_vd,
    stride_mm,
    stride_mn,
    Tk,
    window_size,
    qk_scale,
    MASKED: tl.constexpr,
    HAS_MASK: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online-softmax update of one query tile over key blocks [start, end).

    acc [BLOCK_M, BLOCK_D] fp32, m_i / l_i [BLOCK_M] fp32 (running max in log2 units,
    running denominator). MASKED=False is only used for blocks every row of the tile fully
    attends, so it skips all per-element tests.
    """
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_ok = d_ok[None, :]
        if MASKED:
            kv_ok = kv_ok & (offs_n[:, None] < Tk)
        k_ptrs = K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if MASKED or not EVEN_D:
            k = tl.load(k_ptrs, mask=kv_ok, other=0.0)
            v = tl.load(v_ptrs, mask=kv_ok, other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
        if MASKED:
            delta = pos_q[:, None] - offs_n[None, :]  # p - j
            allowed = (delta >= 0) & (offs_n[None, :] < Tk)
            if HAS_MASK:
                m_ptrs = MASK + offs_m[:, None].to(tl.int64) * stride_mm + offs_n[None, :] * stride_mn
                tile = tl.load(m_ptrs, mask=row_ok[:, None] & (offs_n[None, :] < Tk), other=0)
                allowed = allowed & (tile != 0)
            keep = is_dense | (offs_n[None, :] < row_sink_end[:, None]) | (delta < window_size)
            s = tl.where(allowed & keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with nothing attended so far keeps m = -inf; shift by 0 so exp2 gives 0, not NaN.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_shift)
        p = tl.exp2(s - m_shift[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.autotune(configs=_CONFIGS, key=["Q_LEN_BUCKET", "BLOCK_D", "HAS_MASK"])
# Lengths and sizes change from call to call; specialising on their divisibility would only
# multiply compilations.
@triton.jit(do_not_specialize=["Tq", "Tk", "sink_size", "window_size", "Q_LEN_BUCKET"])
def _hybrid_fwd_kernel(
    Q,
    K,
    V,
    Out,
    DENSE,  # int8 [HQ]: 1 = dense q_head
    HEAD_ORDER,  # int32 [HQ]: q_heads with dense ones first (heaviest programs launch first)
    MASK,  # uint8 [B or 1, 1, Tq, Tk] (HAS_MASK only)
    ROW_FIRST,  # int32 [B or 1, Tq]: first attendable key, Tk if none (HAS_MASK only)
    ROW_LAST,  # int32 [B or 1, Tq]: last attendable key, -1 if none (HAS_MASK only)
    ROW_SINK_END,  # int32 [B or 1, Tq]: one past the sink_size-th attendable key (HAS_MASK only)
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_mb,
    stride_mm,
    stride_mn,
    stride_rb,  # batch stride of the ROW_* arrays (0 when the mask broadcasts over B)
    HQ,
    GROUP,  # HQ // HKV
    Tq,
    Tk,
    head_dim,
    sink_size,
    window_size,
    qk_scale,  # softmax scale * log2(e)
    Q_LEN_BUCKET,  # next power of two of Tq, capped: only an autotuning key
    HAS_MASK: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Query blocks in reverse: for dense q_heads the last rows see the most keys, and
    # starting the longest programs first evens out the tail of the launch.
    start_m = (tl.cdiv(Tq, BLOCK_M) - 1 - tl.program_id(0)) * BLOCK_M
    pid_bh = tl.program_id(1)
    b = pid_bh // HQ
    h = tl.load(HEAD_ORDER + pid_bh % HQ)
    is_dense = tl.load(DENSE + h) != 0
    kv_h = h // GROUP  # GQA: K/V are read in place, never repeated

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Tq
    d_ok = offs_d < head_dim
    pos_q = offs_m + (Tk - Tq)  # absolute position p of each row (end-aligned causality)
    first_pos = start_m + (Tk - Tq)  # smallest p of the tile
    last_pos = tl.minimum(start_m + BLOCK_M, Tq) - 1 + (Tk - Tq)  # largest p of a real row

    b64 = b.to(tl.int64)
    q_ptrs = (
        Q
        + b64 * stride_qb
        + h.to(tl.int64) * stride_qh
        + offs_m[:, None].to(tl.int64) * stride_qm
        + offs_d[None, :] * stride_qd
    )
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    K += b64 * stride_kb + kv_h.to(tl.int64) * stride_kh
    V += b64 * stride_vb + kv_h.to(tl.int64) * stride_vh

    if HAS_MASK:
        MASK += b64 * stride_mb
        r_ptrs = b64 * stride_rb + offs_m
        row_first = tl.load(ROW_FIRST + r_ptrs, mask=row_ok, other=Tk)
        row_last = tl.load(ROW_LAST + r_ptrs, mask=row_ok, other=-1)
        row_sink_end = tl.load(ROW_SINK_END + r_ptrs, mask=row_ok, other=0)
        key_lo = tl.min(row_first, 0)
        key_hi = tl.max(row_last, 0) + 1
        sink_hi = tl.max(row_sink_end, 0)
    else:
        row_sink_end = tl.full([BLOCK_M], 0, tl.int32) + sink_size
        key_lo = 0
        key_hi = last_pos + 1
        sink_hi = sink_size

    # Key range [key_lo, key_hi) bounds every row of the tile. A streaming q_head visits it
    # in two disjoint segments: the sink blocks [block_lo, sink_end) and the window blocks
    # [win_start, key_hi); a dense q_head visits it as a single segment.
    block_lo = (key_lo // BLOCK_N) * BLOCK_N
    win_lo = (tl.maximum(first_pos - window_size + 1, key_lo) // BLOCK_N) * BLOCK_N
    sink_end = tl.where(is_dense, block_lo, tl.minimum(tl.cdiv(sink_hi, BLOCK_N) * BLOCK_N, key_hi))
    sink_end = tl.maximum(sink_end, block_lo)
    win_start = tl.where(is_dense, block_lo, tl.maximum(win_lo, sink_end))

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # fmt: off
    acc, m_i, l_i = _attend_key_blocks(
        acc, m_i, l_i, q, K, V, MASK, block_lo, sink_end, offs_m, pos_q, row_ok, row_sink_end,
        is_dense, offs_d, d_ok, stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
        Tk, window_size, qk_scale,
        MASKED=True, HAS_MASK=HAS_MASK, EVEN_D=EVEN_D, UPCAST=UPCAST,
        DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
    )
    if HAS_MASK:
        # The mask tile has to be read for every block anyway: one masked walk.
        full_lo = key_hi
        full_hi = key_hi
    else:
        # Blocks that every row of the tile attends in full run without per-element tests:
        # causal for the first row (j + BLOCK_N - 1 <= first_pos) and, when streaming, inside
        # the window of the last row (j > last_pos - window_size).
        full_lo = tl.where(is_dense, win_start, tl.cdiv(last_pos - window_size + 1, BLOCK_N) * BLOCK_N)
        full_lo = tl.minimum(tl.maximum(full_lo, win_start), key_hi)
        full_hi = ((first_pos + 1) // BLOCK_N) * BLOCK_N
        full_hi = tl.minimum(tl.maximum(full_hi, full_lo), key_hi)
    acc, m_i, l_i = _attend_key_blocks(
        acc, m_i, l_i, q, K, V, MASK, win_start, full_lo, offs_m, pos_q, row_ok, row_sink_end,
        is_dense, offs_d, d_ok, stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
        Tk, window_size, qk_scale,
        MASKED=True, HAS_MASK=HAS_MASK, EVEN_D=EVEN_D, UPCAST=UPCAST,
        DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
    )
    acc, m_i, l_i = _attend_key_blocks(
        acc, m_i, l_i, q, K, V, MASK, full_lo, full_hi, offs_m, pos_q, row_ok, row_sink_end,
        is_dense, offs_d, d_ok, stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
        Tk, window_size, qk_scale,
        MASKED=False, HAS_MASK=HAS_MASK, EVEN_D=EVEN_D, UPCAST=UPCAST,
        DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
    )
    acc, m_i, l_i = _attend_key_blocks(
        acc, m_i, l_i, q, K, V, MASK, full_hi, key_hi, offs_m, pos_q, row_ok, row_sink_end,
        is_dense, offs_d, d_ok, stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
        Tk, window_size, qk_scale,
        MASKED=True, HAS_MASK=HAS_MASK, EVEN_D=EVEN_D, UPCAST=UPCAST,
        DOT_PRECISION=DOT_PRECISION, BLOCK_N=BLOCK_N,
    )
    # fmt: on

    # Rows that attended nothing (fully padded, or no key in range) have l = 0 and acc = 0.
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_ptrs = (
        Out
        + b64 * stride_ob
        + h.to(tl.int64) * stride_oh
        + offs_m[:, None].to(tl.int64) * stride_om
        + offs_d[None, :] * stride_od
    )
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def _mask_row_bounds(
    attention_mask: torch.Tensor, tq: int, tk: int, sink_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (batch, query row) key bounds of a bool mask combined with causality.

    Args:
        attention_mask: bool [B or 1, 1, Tq, Tk], True = may attend.
    Returns:
        int32 [B or 1, Tq] each: the first attendable key (Tk if none), the last
        attendable key (-1 if none), and the sink end, one past the ``sink_size``-th
        attendable key (last + 1 when the row has fewer; 0 when sink_size is 0).
    """
    bm = attention_mask.shape[0]
    device = attention_mask.device
    first = torch.empty(bm, tq, dtype=torch.int32, device=device)
    last = torch.empty_like(first)
    sink_end = torch.empty_like(first)
    pos_k = torch.arange(tk, device=device)
    rows = max(1, _MASK_CHUNK_ELEMENTS // max(1, bm * tk))
    for r0 in range(0, tq, rows):
        r1 = min(tq, r0 + rows)
        pos_q = torch.arange(tk - tq + r0, tk - tq + r1, device=device).view(-1, 1)
        attendable = attention_mask[:, 0, r0:r1, :] & (pos_k <= pos_q)  # [Bm, R, Tk]
        count = torch.cumsum(attendable, dim=-1, dtype=torch.int32)  # attendable keys in [0, j]
        total = count[..., -1:]
        # Keys before the first attendable one have count 0; keys from the last one on have
        # count == total; keys before the sink_size-th attendable one have count < sink_size.
        first[:, r0:r1] = (count == 0).sum(-1, dtype=torch.int32)
        row_last = torch.where(total[..., 0] > 0, tk - (count == total).sum(-1, dtype=torch.int32), -1)
        last[:, r0:r1] = row_last
        if sink_size > 0:
            sink_end[:, r0:r1] = torch.minimum((count < sink_size).sum(-1, dtype=torch.int32) + 1, row_last + 1)
        else:
            sink_end[:, r0:r1] = 0
    return first, last, sink_end


def _launch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dense_heads: torch.Tensor,
    sink_size: int,
    window_size: int,
    scale: float,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Allocate the output and launch one kernel for all q_heads (inputs already validated)."""
    b, hq, tq, d = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    out = torch.empty(b, hq, tq, d, dtype=query.dtype, device=query.device)
    if out.numel() == 0:
        return out
    # Clamping changes nothing (p - j < Tk always) and keeps the int32 arithmetic safe.
    sink_size = min(sink_size, tk)
    window_size = min(window_size, tk)
    dense = dense_heads.to(device=query.device, dtype=torch.int8)
    head_order = torch.argsort(dense, descending=True, stable=True).to(torch.int32)

    if attention_mask is not None:
        mask = attention_mask.view(torch.uint8)
        row_first, row_last, row_sink_end = _mask_row_bounds(attention_mask, tq, tk, sink_size)
        mask_strides = (
            mask.stride(0) if mask.shape[0] > 1 else 0,
            mask.stride(2),
            mask.stride(3),
        )
        stride_rb = row_first.stride(0) if row_first.shape[0] > 1 else 0
    else:
        # Never dereferenced: HAS_MASK=False compiles the mask loads away.
        mask = row_first = row_last = row_sink_end = dense
        mask_strides = (0, 0, 0)
        stride_rb = 0

    block_d = max(_MIN_BLOCK, triton.next_power_of_2(d))
    upcast = _INTERPRET and query.dtype == torch.bfloat16
    grid = lambda meta: (triton.cdiv(tq, meta["BLOCK_M"]), b * hq)  # noqa: E731
    # fmt: off
    _hybrid_fwd_kernel[grid](
        query, key, value, out, dense, head_order, mask, row_first, row_last, row_sink_end,
        *query.stride(), *key.stride(), *value.stride(), *out.stride(), *mask_strides, stride_rb,
        hq, hq // hkv, tq, tk, d, sink_size, window_size, scale * math.log2(math.e),
        min(triton.next_power_of_2(tq), 4096),
        HAS_MASK=attention_mask is not None,
        EVEN_D=block_d == d,
        UPCAST=upcast,
        # fp32 inputs keep fp32 products (tf32 would lose ~3 digits); 16-bit inputs ignore it.
        DOT_PRECISION="ieee" if query.dtype == torch.float32 or upcast else "tf32",
        BLOCK_D=block_d,
    )
    # fmt: on
    return out


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def triton_hybrid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dense_heads: torch.Tensor,
    *,
    sink_size: int,
    window_size: int,
    scale: float | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hybrid attention with one Triton launch for all q_heads.

    Args:
        query: [B, HQ, Tq, D]; key, value: [B, HKV, Tk, D] with HQ % HKV == 0 and Tq <= Tk.
            q_head h reads kv_head h // (HQ // HKV). float16, bfloat16 or float32, all the
            same dtype, on a CUDA device (CPU tensors only under TRITON_INTERPRET=1).
            D <= 256; any D works, it is padded to a power of two inside the kernel.
        dense_heads: bool [HQ]; True keeps the q_head on full causal attention, False makes
            it a streaming q_head (sinks + sliding window).
        sink_size: number of first attendable keys every streaming row keeps (>= 0).
        window_size: a streaming row at position p keeps keys j with p - j < window_size (>= 0).
        scale: softmax scale, default 1 / sqrt(D).
        attention_mask: optional bool [B or 1, 1, Tq, Tk], True = may attend (transformers'
            sdpa mask). Any bool pattern is exact; sinks count unmasked keys only.
    Returns:
        [B, HQ, Tq, D] in query.dtype (fp32 accumulation); rows with no attended key are 0.
    """
    _check(
        query.dim() == 4 and key.dim() == 4 and value.dim() == 4,
        "expected 4-D query [B, HQ, Tq, D] and key/value [B, HKV, Tk, D], found "
        f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}",
    )
    b, hq, tq, d = query.shape
    _check(
        key.shape == value.shape,
        f"expected key and value of the same shape, found {tuple(key.shape)} and {tuple(value.shape)}",
    )
    kb, hkv, tk, kd = key.shape
    _check(kb == b, f"expected key/value batch {b} (query's), found {kb}")
    _check(kd == d, f"expected key/value head dim {d} (query's), found {kd}")
    _check(hkv > 0 and hq % hkv == 0, f"expected HQ divisible by HKV, found HQ={hq}, HKV={hkv}")
    _check(tq <= tk, f"expected Tq <= Tk (queries are the last Tq positions), found Tq={tq}, Tk={tk}")
    _check(0 < d <= _MAX_HEAD_DIM, f"expected head dim in [1, {_MAX_HEAD_DIM}], found {d}")
    _check(
        query.dtype in _SUPPORTED_DTYPES and key.dtype == query.dtype and value.dtype == query.dtype,
        "expected query, key and value all float16, bfloat16 or float32, found "
        f"{query.dtype}, {key.dtype}, {value.dtype}",
    )
    _check(
        key.device == query.device and value.device == query.device,
        f"expected query, key and value on one device, found {query.device}, {key.device}, {value.device}",
    )
    _check(
        query.device.type == "cuda" or (_INTERPRET and query.device.type == "cpu"),
        f"expected CUDA tensors (CPU only with TRITON_INTERPRET=1 set before importing triton), found {query.device}",
    )
    _check(
        tuple(dense_heads.shape) == (hq,) and dense_heads.dtype == torch.bool,
        f"expected dense_heads bool [{hq}] (one flag per q_head), found {dense_heads.dtype} {list(dense_heads.shape)}",
    )
    _check(
        all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (sink_size, window_size)),
        f"expected sink_size and window_size ints >= 0, found {sink_size!r} and {window_size!r}",
    )
    if attention_mask is not None:
        _check(
            attention_mask.dtype == torch.bool,
            f"expected a bool attention_mask (True = attend), found {attention_mask.dtype}",
        )
        _check(
            attention_mask.dim() == 4
            and attention_mask.shape[0] in (1, b)
            and tuple(attention_mask.shape[1:]) == (1, tq, tk),
            f"expected attention_mask [{b} or 1, 1, {tq}, {tk}], found {list(attention_mask.shape)}",
        )
        _check(
            attention_mask.device == query.device,
            f"expected attention_mask on {query.device}, found {attention_mask.device}",
        )
    scale = d**-0.5 if scale is None else float(scale)
    return _launch(query, key, value, dense_heads, sink_size, window_size, scale, attention_mask)
