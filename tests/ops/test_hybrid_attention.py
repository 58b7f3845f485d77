"""hybrid_attention (torch backend) against the plain reference over many shapes.

Every test runs twice: with the fused C++ streaming kernel and with the SDPA composition
that replaces it when no compiler is at hand (see core_attn.ops.cpu_kernel).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_attn import hybrid_attention
from core_attn.ops import cpu_kernel, hybrid_allowed_mask, hybrid_attention_reference
from core_attn.ops.torch_hybrid import torch_hybrid_attention

# max |out - ref| allowed, per input dtype (the reference runs in float64)
TOL = {torch.float32: 2e-5, torch.bfloat16: 2.5e-2, torch.float16: 4e-3}


@pytest.fixture(autouse=True, params=["fused", "composed"])
def cpu_path(request):
    fused = request.param == "fused"
    if fused and not cpu_kernel.available():
        pytest.skip("the fused CPU kernel could not be built here")
    with cpu_kernel.use(fused):
        yield request.param


def padding_mask(b, tq, tk, left=None, right=None):
    """transformers-style bool mask [B, 1, Tq, Tk]: causal (end-aligned) & key valid & query valid."""
    pos_q = torch.arange(tk - tq, tk).view(tq, 1)
    causal = torch.arange(tk).view(1, tk) <= pos_q
    key_ok = torch.ones(b, tk, dtype=torch.bool)
    for i, n in enumerate(left or []):
        key_ok[i, :n] = False
    for i, n in enumerate(right or []):
        if n:
            key_ok[i, tk - n :] = False
    q_ok = key_ok[:, tk - tq :]
    return causal.view(1, 1, tq, tk) & key_ok.view(b, 1, 1, tk) & q_ok.view(b, 1, tq, 1)


def make(b, hq, hkv, tq, tk, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, tq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, tk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, tk, d, generator=g).to(dtype)
    return q, k, v


def heads(hq, pattern, seed=0):
    if pattern == "all_dense":
        return torch.ones(hq, dtype=torch.bool)
    if pattern == "all_stream":
        return torch.zeros(hq, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(hq, generator=g) < 0.4
    m[0] = True  # at least one of each
    m[-1] = False
    return m


def check(q, k, v, dh, sink, window, mask=None, chunk=None):
    kwargs = dict(sink_size=sink, window_size=window, attention_mask=mask)
    ref = hybrid_attention_reference(q, k, v, dh, **kwargs)
    if chunk is None:
        out = hybrid_attention(q, k, v, dh, backend="torch", **kwargs)
    else:
        out = torch_hybrid_attention(q, k, v, dh, chunk_size=chunk, **kwargs)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    err = (out.double() - ref.double()).abs().max().item()
    assert err <= TOL[q.dtype], f"max error {err:.3g} > {TOL[q.dtype]}"
    return out


SHAPES = [
    # b, hq, hkv, tq, tk, d
    (1, 4, 4, 1, 1, 16),
    (1, 4, 2, 7, 7, 16),
    (2, 8, 2, 63, 63, 32),
    (1, 8, 1, 257, 257, 16),
    (1, 8, 4, 33, 100, 16),  # Tq < Tk: chunked prefill
    (2, 4, 2, 1, 50, 16),  # decode-like
    (1, 16, 2, 130, 130, 64),  # GQA 8
]
WINDOWS = [(0, 1), (2, 5), (4, 16), (300, 400), (3, 0)]


@pytest.mark.parametrize("pattern", ["mixed", "all_dense", "all_stream"])
@pytest.mark.parametrize("sink,window", WINDOWS, ids=[f"s{s}w{w}" for s, w in WINDOWS])
@pytest.mark.parametrize("shape", SHAPES, ids=["B{}HQ{}HKV{}Tq{}Tk{}D{}".format(*s) for s in SHAPES])
def test_matches_reference_fp32(shape, sink, window, pattern):
    b, hq, hkv, tq, tk, d = shape
    q, k, v = make(*shape, torch.float32)
    check(q, k, v, heads(hq, pattern), sink, window, chunk=16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("pattern", ["mixed", "all_stream"])
def test_matches_reference_low_precision(dtype, pattern):
    q, k, v = make(2, 8, 2, 97, 97, 32, dtype)
    check(q, k, v, heads(8, pattern), 3, 20)


PADS = {
    "left": dict(left=[0, 5]),
    "right": dict(right=[0, 6]),
    "left_long": dict(left=[40, 0]),
    "fully_padded_row": dict(left=[0, 70]),
}


@pytest.mark.parametrize("tq", [70, 23], ids=["prefill", "chunked"])
@pytest.mark.parametrize("pattern", ["mixed", "all_dense", "all_stream"])
@pytest.mark.parametrize("pad", list(PADS), ids=list(PADS))
def test_padding_mask(pad, pattern, tq):
    tk = 70
    q, k, v = make(2, 8, 2, tq, tk, 16, torch.float32)
    mask = padding_mask(2, tq, tk, **PADS[pad])
    out = check(q, k, v, heads(8, pattern), 4, 9, mask=mask, chunk=16)
    empty = ~mask.any(-1)  # [B, 1, Tq] rows that attend nothing
    if empty.any():
        assert (out.masked_select(empty.unsqueeze(-1).expand_as(out)) == 0).all()


def test_sinks_count_only_attendable_keys():
    """With left padding the sinks are the first real tokens, not the pad positions."""
    tk, pad, sink, window = 30, 6, 2, 3
    dh = torch.zeros(1, dtype=torch.bool)
    mask = padding_mask(1, tk, tk, left=[pad])
    allowed = hybrid_allowed_mask(tk, tk, dh, sink_size=sink, window_size=window, attention_mask=mask)
    last = allowed[0, 0, -1].nonzero().flatten().tolist()
    assert last == [pad, pad + 1, tk - 3, tk - 2, tk - 1]


def test_window_covering_everything_equals_sdpa():
    q, k, v = make(1, 4, 2, 40, 40, 16, torch.float32)
    out = hybrid_attention(q, k, v, torch.zeros(4, dtype=torch.bool), sink_size=0, window_size=40, backend="torch")
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, sdpa, atol=2e-6, rtol=0)


def test_streaming_changes_output_only_of_streaming_heads():
    q, k, v = make(1, 4, 2, 64, 64, 16, torch.float32)
    dh = torch.tensor([True, False, True, False])
    full = hybrid_attention(q, k, v, torch.ones(4, dtype=torch.bool), sink_size=2, window_size=4)
    hyb = hybrid_attention(q, k, v, dh, sink_size=2, window_size=4)
    torch.testing.assert_close(hyb[:, dh], full[:, dh])
    assert (hyb[:, ~dh] - full[:, ~dh]).abs().max() > 1e-2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    b=st.integers(1, 2),
    hkv=st.sampled_from([1, 2, 4]),
    group=st.sampled_from([1, 2, 4, 8]),
    tk=st.integers(1, 90),
    dq=st.integers(0, 90),
    d=st.sampled_from([8, 16, 24]),
    sink=st.integers(0, 12),
    window=st.integers(0, 100),
    chunk=st.sampled_from([1, 5, 16, 64]),
    left=st.integers(0, 20),
    use_mask=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_random_configs(b, hkv, group, tk, dq, d, sink, window, chunk, left, use_mask, seed):
    tq = max(1, tk - dq)
    hq = hkv * group
    q, k, v = make(b, hq, hkv, tq, tk, d, torch.float32, seed=seed)
    g = torch.Generator().manual_seed(seed)
    dh = torch.rand(hq, generator=g) < 0.5
    mask = padding_mask(b, tq, tk, left=[min(left, tk)] + [0] * (b - 1)) if use_mask else None
    check(q, k, v, dh, sink, window, mask=mask, chunk=chunk)


def test_backends_agree_and_auto_is_torch_on_cpu():
    q, k, v = make(1, 4, 2, 20, 20, 16, torch.float32)
    dh = torch.tensor([True, False, False, True])
    a = hybrid_attention(q, k, v, dh, sink_size=1, window_size=3)
    t = hybrid_attention(q, k, v, dh, sink_size=1, window_size=3, backend="torch")
    torch.testing.assert_close(a, t, atol=0, rtol=0)


BAD = {
    "query_3d": (dict(q=(1, 4, 8)), "4-d"),
    "hq_not_multiple": (dict(q=(1, 3, 8, 16)), "multiple"),
    "tq_gt_tk": (dict(q=(1, 4, 9, 16)), "must not exceed"),
    "d_mismatch": (dict(q=(1, 4, 8, 8)), "D=8"),
    "dense_wrong_len": (dict(dh=torch.zeros(3, dtype=torch.bool)), "dense_heads"),
    "dense_not_bool": (dict(dh=torch.zeros(4)), "dense_heads"),
    "negative_window": (dict(window=-1), "window_size"),
    "float_mask": (dict(mask=torch.zeros(1, 1, 8, 8)), "bool"),
    "mask_shape": (dict(mask=torch.ones(1, 8, 8, dtype=torch.bool)), "shape"),
    "backend": (dict(backend="cuda"), "backend"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_inputs_raise(case):
    over, msg = BAD[case]
    q = torch.randn(*over.get("q", (1, 4, 8, 16)))
    k = torch.randn(1, 2, 8, 16)
    dh = over.get("dh", torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=msg):
        hybrid_attention(
            q,
            k,
            k.clone(),
            dh,
            sink_size=1,
            window_size=over.get("window", 4),
            attention_mask=over.get("mask"),
            backend=over.get("backend", "auto"),
        )


LONG_PATTERNS = {
    # one dense q_head: the row-blocked dense path; streaming heads contiguous per kv_head
    "one_dense": [True, False, False, False, False, False, False, False],
    # streaming q_heads 0, 2 of kv_head 0 are not contiguous: the gathered (index_put) path
    "scattered": [False, True, False, True, True, True, False, True],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("pattern", list(LONG_PATTERNS), ids=list(LONG_PATTERNS))
@pytest.mark.parametrize("fast", [True, False], ids=["cpu_lse_path", "generic_path"])
@pytest.mark.parametrize("sink", [0, 5])
def test_long_sequence_paths(monkeypatch, fast, sink, pattern, dtype):
    """T above the thresholds of the thread-balanced dense path, the causal head rows and the batched
    steady streaming path (odd T, so the dense path also has leading rows; bf16 merges through a copy)."""
    from core_attn.ops import torch_hybrid

    if not fast:
        monkeypatch.setattr(torch_hybrid, "_CPU_FLASH_LSE", None)
    q, k, v = make(1, 8, 2, 1101, 1101, 16, dtype)
    check(q, k, v, torch.tensor(LONG_PATTERNS[pattern]), sink, 70)


def test_steady_path_after_a_cache_offset():
    """Tq < Tk (chunked prefill) long enough for the batched steady rows; head rows take the generic path."""
    q, k, v = make(1, 8, 2, 400, 1201, 16, torch.float32)
    check(q, k, v, torch.tensor(LONG_PATTERNS["scattered"]), 5, 70)


@pytest.mark.parametrize("t", [513, 1024, 1031])
@pytest.mark.parametrize("nb", [2, 3, 8])
def test_dense_causal_blocks_equal_causal_sdpa(monkeypatch, t, nb):
    """The thread-balanced dense path: stacked diagonal squares plus per-block rectangles, any T % nb."""
    from core_attn.ops import torch_hybrid

    if not torch_hybrid._lse_fast_path(torch.empty(0)):
        pytest.skip("needs torch's CPU flash-attention op with log-sum-exp")
    monkeypatch.setattr(torch_hybrid, "_dense_blocks", lambda _t: nb)
    q, k, v = make(2, 3, 3, t, t, 16, torch.float32)
    k, v = k[:, :1].expand_as(q), v[:, :1].expand_as(q)  # as the dense path passes a GQA group
    out = torch_hybrid._dense_causal_blocks(q, k, v, 0.25)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)
