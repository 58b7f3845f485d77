"""triton_hybrid_attention against the plain reference.

Without CUDA, tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported, so the
kernel runs on CPU through the interpreter: shapes stay short (T <= 257) and few. With
CUDA the same tests run the compiled kernel, and the ``gpu`` tests add long sequences.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

from core_attn.ops.reference import hybrid_attention_reference  # noqa: E402
from core_attn.ops.triton_hybrid import triton_hybrid_attention  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cpu" if INTERPRET else "cuda"
pytestmark = pytest.mark.skipif(
    not INTERPRET and not torch.cuda.is_available(),
    reason="needs CUDA or TRITON_INTERPRET=1 (tests/conftest.py sets it without CUDA)",
)

# max |out - ref| allowed, per input dtype (the reference runs in float64). 16-bit inputs
# round P to the input dtype before the P @ V dot, as flash attention does; the interpreter
# also truncates (rather than rounds) its bf16 stores.
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


def make(b, hq, hkv, tq, tk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for h, t in ((hq, tq), (hkv, tk), (hkv, tk)))
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype), v.to(DEVICE, dtype)


def heads(hq, pattern):
    """bool [HQ]: all dense, all streaming, or alternating (q_head 0 dense)."""
    if pattern == "dense":
        return torch.ones(hq, dtype=torch.bool, device=DEVICE)
    if pattern == "stream":
        return torch.zeros(hq, dtype=torch.bool, device=DEVICE)
    return torch.arange(hq, device=DEVICE) % 2 == 0


def padding_mask(tq, tk, left=(), right=()):
    """transformers' sdpa mask [B, 1, Tq, Tk]: causal (end-aligned) & key valid & query valid.

    left / right: padded positions per batch row (one entry per row, B = len).
    """
    b = max(len(left), len(right))
    key_ok = torch.ones(b, tk, dtype=torch.bool)
    for i, n in enumerate(left):
        key_ok[i, :n] = False
    for i, n in enumerate(right):
        key_ok[i, tk - n :] = False
    causal = torch.arange(tk).view(1, tk) <= torch.arange(tk - tq, tk).view(tq, 1)
    mask = causal.view(1, 1, tq, tk) & key_ok.view(b, 1, 1, tk) & key_ok[:, tk - tq :].view(b, 1, tq, 1)
    return mask.to(DEVICE)


def check(q, k, v, dense, sink, window, mask=None, scale=None):
    kwargs = dict(sink_size=sink, window_size=window, attention_mask=mask, scale=scale)
    out = triton_hybrid_attention(q, k, v, dense, **kwargs)
    ref = hybrid_attention_reference(q, k, v, dense, **kwargs)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    err = (out.double() - ref.double()).abs().max().item()
    assert err <= TOL[q.dtype], f"max error {err:.3g} > {TOL[q.dtype]}"
    return out


CASES = [
    # id, (B, HQ, HKV, Tq, Tk, D), heads, sink, window
    ("T1", (1, 2, 1, 1, 1, 32), "mixed", 4, 16),
    ("T7-gqa2", (2, 4, 2, 7, 7, 32), "mixed", 2, 3),
    ("T63-gqa1", (1, 2, 2, 63, 63, 32), "mixed", 4, 16),
    ("T130-gqa4", (1, 8, 2, 130, 130, 16), "mixed", 4, 16),
    ("T257-gqa2", (1, 4, 2, 257, 257, 16), "mixed", 8, 40),
    ("T130-dense", (1, 4, 2, 130, 130, 32), "dense", 4, 16),
    ("T130-stream", (1, 4, 2, 130, 130, 32), "stream", 4, 16),
    ("T130-stream-w1", (1, 2, 1, 130, 130, 32), "stream", 0, 1),
    ("T130-stream-nothing", (1, 2, 1, 130, 130, 32), "stream", 0, 0),
    ("T130-sink-window-gt-T", (1, 4, 2, 130, 130, 32), "mixed", 300, 500),
    ("T200-window-gt-block", (1, 2, 1, 200, 200, 32), "stream", 3, 70),
    ("Tq7-Tk130", (2, 4, 2, 7, 130, 32), "mixed", 4, 16),
    ("Tq1-Tk130", (1, 8, 2, 1, 130, 32), "mixed", 4, 16),
    ("Tq70-Tk200", (1, 4, 1, 70, 200, 32), "mixed", 5, 33),
    ("D16", (1, 2, 1, 100, 100, 16), "mixed", 4, 16),
    ("D80-padded", (1, 2, 1, 100, 100, 80), "mixed", 4, 16),
    ("D256", (1, 2, 1, 40, 40, 256), "mixed", 4, 16),
]


@pytest.mark.parametrize("shape,pattern,sink,window", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_reference(shape, pattern, sink, window):
    q, k, v = make(*shape)
    check(q, k, v, heads(shape[1], pattern), sink, window)


@pytest.mark.parametrize("shift", range(64), ids=[f"Tk-Tq={n}{'-leftpad' if n % 2 else ''}" for n in range(64)])
def test_block_boundaries(shift):
    """Every residue of the row offset modulo the key block (BLOCK_N <= 64): the tiles that
    skip per-element tests (causal and window interiors) and, for odd shifts, the key range
    derived from a padding mask must start and end exactly."""
    q, k, v = make(1, 2, 1, 192, 192 + shift, 16, seed=shift)
    mask = padding_mask(192, 192 + shift, left=(shift,)) if shift % 2 else None
    check(q, k, v, heads(2, "mixed"), 3, 100, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision(dtype):
    q, k, v = make(1, 4, 2, 130, 130, 32, dtype)
    check(q, k, v, heads(4, "mixed"), 4, 16)


def test_strided_inputs_and_scale():
    """transformers hands [B, T, H, D] tensors transposed to [B, H, T, D] (not contiguous)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 100, h, 32, generator=g).to(DEVICE).transpose(1, 2) for h in (4, 2, 2))
    check(q, k, v, heads(4, "mixed"), 4, 16, scale=0.3)


PADDINGS = [
    # id, Tq, Tk, left, right (per batch row)
    ("left", 100, 100, (0, 37, 70), ()),
    ("right", 100, 100, (), (0, 37, 70)),
    ("left-and-right", 100, 100, (20, 0), (0, 45)),
    ("fully-padded-row", 100, 100, (0, 100), ()),
    ("Tq40-Tk130-left", 40, 130, (0, 50), ()),
]


@pytest.mark.parametrize("tq,tk,left,right", [p[1:] for p in PADDINGS], ids=[p[0] for p in PADDINGS])
def test_padding_mask(tq, tk, left, right):
    mask = padding_mask(tq, tk, left, right)
    q, k, v = make(mask.shape[0], 4, 2, tq, tk, 32)
    out = check(q, k, v, heads(4, "mixed"), 4, 16, mask=mask)
    query_padded = ~mask.any(dim=-1)  # [B, 1, Tq]
    assert (out.masked_select(query_padded.unsqueeze(-1)) == 0).all()


def test_arbitrary_bool_mask():
    """Any bool pattern is exact: holes in the middle, first keys masked, sinks re-counted."""
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(2, 1, 100, 100, generator=g) > 0.4).to(DEVICE)
    q, k, v = make(2, 4, 2, 100, 100, 32)
    check(q, k, v, heads(4, "mixed"), 5, 9, mask=mask)


def test_mask_broadcast_over_batch():
    mask = padding_mask(70, 70, left=(13,))  # [1, 1, Tq, Tk] for a batch of 2
    q, k, v = make(2, 2, 1, 70, 70, 32)
    check(q, k, v, heads(2, "mixed"), 4, 16, mask=mask)


POISONED = [
    # id, dense q_heads, left padding per batch row, poisoned key range per batch row
    ("outside-sink-and-window", (False, False, False, False), (0, 0), (64, 192)),
    ("left-padding", (False, False, True, False), (0, 128), (0, 128)),
]


@pytest.mark.parametrize("dense,left,poisoned", [p[1:] for p in POISONED], ids=[p[0] for p in POISONED])
def test_skipped_key_blocks_are_never_read(dense, left, poisoned):
    """NaN keys/values that no program may visit stay out of the output.

    32 query rows at positions 224..255 with sink 16 / window 16 need keys < 16 and > 208;
    with left padding the dense q_head needs nothing before the first real key. Holds for
    any BLOCK_N <= 64: the poisoned ranges are whole 64-key blocks.
    """
    q, k, v = make(2, 4, 2, 32, 256, 32)
    dense = torch.tensor(dense, device=DEVICE)
    mask = padding_mask(32, 256, left=left) if any(left) else None
    poison = torch.zeros(2, 1, 256, 1, dtype=torch.bool, device=DEVICE)
    poison[1, :, poisoned[0] : poisoned[1]] = True
    kwargs = dict(sink_size=16, window_size=16, attention_mask=mask)
    ref = hybrid_attention_reference(q, k, v, dense, **kwargs)
    k, v = (x.masked_fill(poison, float("nan")) for x in (k, v))
    out = triton_hybrid_attention(q, k, v, dense, **kwargs)
    assert torch.isfinite(out).all()
    assert (out.double() - ref.double()).abs().max().item() <= TOL[torch.float32]


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 2),
    hkv=st.integers(1, 2),
    group=st.sampled_from([1, 2, 4]),
    tk=st.integers(1, 160),
    tq_frac=st.floats(0.0, 1.0),
    d=st.sampled_from([16, 24, 32]),
    sink=st.integers(0, 20),
    window=st.integers(0, 80),
    dense_bits=st.integers(0, 255),
    mask_kind=st.sampled_from(["none", "padding", "random"]),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(b, hkv, group, tk, tq_frac, d, sink, window, dense_bits, mask_kind, seed):
    hq = hkv * group
    tq = max(1, round(tk * tq_frac))
    dense = torch.tensor([bool(dense_bits >> i & 1) for i in range(hq)], device=DEVICE)
    g = torch.Generator().manual_seed(seed)
    if mask_kind == "padding":
        left = torch.randint(0, tk + 1, (b,), generator=g).tolist()
        mask = padding_mask(tq, tk, left=left)
    elif mask_kind == "random":
        mask = (torch.rand(b, 1, tq, tk, generator=g) > 0.3).to(DEVICE)
    else:
        mask = None
    q, k, v = make(b, hq, hkv, tq, tk, d, seed=seed)
    check(q, k, v, dense, sink, window, mask=mask)


BAD_INPUTS = [
    # id, fn(q, k, v, dense) -> overridden arguments, expected message
    ("3d-query", lambda q, k, v, dense: dict(query=q[0]), "expected 4-D query"),
    ("hq-not-multiple", lambda q, k, v, dense: dict(query=q[:, :3]), "HQ divisible by HKV"),
    ("tq-gt-tk", lambda q, k, v, dense: dict(key=k[:, :, :7], value=v[:, :, :7]), "Tq <= Tk"),
    ("head-dim-mismatch", lambda q, k, v, dense: dict(key=k[..., :8], value=v[..., :8]), "head dim 16"),
    (
        "head-dim-too-big",
        lambda q, k, v, dense: dict(
            zip(("query", "key", "value"), (x.repeat(1, 1, 1, 20) for x in (q, k, v)), strict=True)
        ),
        "head dim in",
    ),
    ("int-dtype", lambda q, k, v, dense: dict(query=q.long(), key=k.long(), value=v.long()), "float16, bfloat16"),
    ("dense-heads-shape", lambda q, k, v, dense: dict(dense_heads=dense[:3]), r"dense_heads bool \[4\]"),
    ("dense-heads-dtype", lambda q, k, v, dense: dict(dense_heads=dense.int()), r"dense_heads bool \[4\]"),
    ("negative-sink", lambda q, k, v, dense: dict(sink_size=-1), "sink_size and window_size ints >= 0"),
    ("float-window", lambda q, k, v, dense: dict(window_size=2.5), "sink_size and window_size ints >= 0"),
    (
        "float-mask",
        lambda q, k, v, dense: dict(attention_mask=torch.zeros(2, 1, 8, 8, device=DEVICE)),
        "bool attention_mask",
    ),
    (
        "mask-shape",
        lambda q, k, v, dense: dict(attention_mask=torch.ones(2, 4, 8, 8, dtype=torch.bool, device=DEVICE)),
        r"attention_mask \[2 or 1, 1, 8, 8\]",
    ),
]


@pytest.mark.parametrize("override,message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_rejects_bad_inputs(override, message):
    q, k, v = make(2, 4, 2, 8, 8, 16)
    dense = heads(4, "mixed")
    kwargs = dict(query=q, key=k, value=v, dense_heads=dense, sink_size=4, window_size=16)
    with pytest.raises(ValueError, match=message):
        triton_hybrid_attention(**{**kwargs, **override(q, k, v, dense)})


# --- compiled kernel only -------------------------------------------------------------------

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _reference_rows(q, k, v, dense, rows, **kwargs):
    """Reference for query rows [r0, r1) of a Tq == Tk call: keys [0, r1) keep end alignment."""
    r0, r1 = rows
    return hybrid_attention_reference(
        q[:, :, r0:r1], k[:, :, :r1], v[:, :, :r1], dense, compute_dtype=torch.float32, **kwargs
    )


@gpu
@needs_cuda
@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
def test_gpu_head_dims_bf16(d):
    q, k, v = make(2, 8, 2, 1000, 1000, d, torch.bfloat16)
    check(q, k, v, heads(8, "mixed"), 64, 256)


@gpu
@needs_cuda
@pytest.mark.parametrize("t", [8192, 32768], ids=["T8k", "T32k"])
def test_gpu_long_sequence_bf16(t):
    """Qwen3-VL-8B-like shapes; rows checked in slices, dense q_heads also against SDPA."""
    q, k, v = make(1, 8, 2, t, t, 128, torch.bfloat16)
    dense = torch.tensor([True, False, False, False, True, False, False, False], device=DEVICE)
    kwargs = dict(sink_size=128, window_size=1024)
    out = triton_hybrid_attention(q, k, v, dense, **kwargs)
    assert torch.isfinite(out).all()
    for rows in ((0, 256), (t // 2 - 100, t // 2 + 28), (t - 128, t)):
        ref = _reference_rows(q, k, v, dense, rows, **kwargs)
        err = (out[:, :, rows[0] : rows[1]].float() - ref.float()).abs().max().item()
        assert err <= TOL[torch.bfloat16], f"rows {rows}: max error {err:.3g}"
    sdpa = F.scaled_dot_product_attention(q[:, dense], k[:, [0, 1]], v[:, [0, 1]], is_causal=True)
    assert (out[:, dense].float() - sdpa.float()).abs().max().item() <= TOL[torch.bfloat16]


@gpu
@needs_cuda
def test_gpu_padded_batch_bf16():
    mask = padding_mask(4096, 4096, left=(0, 1000), right=(777, 0))
    q, k, v = make(2, 8, 2, 4096, 4096, 128, torch.bfloat16)
    dense = heads(8, "mixed")
    kwargs = dict(sink_size=128, window_size=1024)
    out = triton_hybrid_attention(q, k, v, dense, attention_mask=mask, **kwargs)
    assert torch.isfinite(out).all()
    for r0, r1 in ((900, 1200), (4096 - 256, 4096)):
        ref = _reference_rows(q, k, v, dense, (r0, r1), attention_mask=mask[:, :, r0:r1, :r1], **kwargs)
        assert (out[:, :, r0:r1].float() - ref.float()).abs().max().item() <= TOL[torch.bfloat16]
