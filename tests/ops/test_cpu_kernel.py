"""The fused CPU streaming kernel against the plain reference, and its build / fallback."""

import shutil
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core_attn import hybrid_attention
from core_attn.ops import cpu_kernel, hybrid_attention_reference

needs_kernel = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler on this machine"
)


def make(b, hq, hkv, tq, tk, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, tq, d, generator=g),
        torch.randn(b, hkv, tk, d, generator=g),
        torch.randn(b, hkv, tk, d, generator=g),
    )


def run_kernel(q, k, v, stream_heads, sink, window):
    """Kernel output for ``stream_heads``; every other q_head is left as NaN."""
    out = torch.full_like(q, float("nan"))
    heads = torch.tensor(sorted(stream_heads), dtype=torch.int64)
    cpu_kernel.streaming_attention(q, k, v, out, heads, sink_size=sink, window_size=window, scale=q.shape[-1] ** -0.5)
    return out


def reference_streaming(q, k, v, sink, window):
    dense = torch.zeros(q.shape[1], dtype=torch.bool)
    return hybrid_attention_reference(q, k, v, dense, sink_size=sink, window_size=window)


@needs_kernel
def test_kernel_builds_where_a_compiler_exists():
    assert cpu_kernel.available(), f"build failed: {cpu_kernel._state['error']}"


CASES = [
    # b, hq, hkv, tq, tk, d, sink, window, block_m, block_n
    (1, 4, 2, 1, 1, 16, 0, 1, 64, 512),
    (2, 8, 2, 63, 63, 32, 4, 16, 64, 512),
    (1, 8, 2, 700, 700, 32, 16, 300, 64, 512),  # several row blocks, band across key blocks
    (1, 4, 1, 150, 1200, 16, 64, 500, 64, 512),  # Tq < Tk: rows start at position 1050
    (1, 4, 4, 97, 97, 24, 5, 7, 5, 7),  # odd blocks: seams everywhere
    (1, 8, 2, 90, 90, 16, 0, 0, 16, 32),  # nothing to attend: zeros
    (1, 8, 2, 90, 90, 16, 6, 0, 16, 32),  # sinks only
    (1, 8, 2, 90, 90, 16, 0, 200, 16, 32),  # window covers everything: causal attention
    (2, 16, 2, 130, 140, 64, 8, 33, 32, 64),  # GQA 8, batch 2
]


@needs_kernel
@pytest.mark.parametrize("case", CASES, ids=[f"B{c[0]}HQ{c[1]}HKV{c[2]}Tq{c[3]}Tk{c[4]}s{c[6]}w{c[7]}bm{c[8]}bn{c[9]}" for c in CASES])
def test_kernel_matches_reference(case, monkeypatch):
    b, hq, hkv, tq, tk, d, sink, window, bm, bn = case
    monkeypatch.setattr(cpu_kernel, "BLOCK_M", bm)
    monkeypatch.setattr(cpu_kernel, "BLOCK_N", bn)
    q, k, v = make(b, hq, hkv, tq, tk, d)
    out = run_kernel(q, k, v, range(hq), sink, window)
    torch.testing.assert_close(out, reference_streaming(q, k, v, sink, window).float(), atol=2e-5, rtol=0)


@needs_kernel
def test_kernel_writes_only_the_listed_heads_of_uneven_groups():
    """q_heads 1, 2 (kv_head 0), 5 (kv_head 1), 6, 7 (kv_head 1): groups of 2 and 3 rows."""
    q, k, v = make(1, 8, 2, 77, 77, 16)
    stream = [1, 2, 5, 6, 7]
    out = run_kernel(q, k, v, stream, 3, 10)
    ref = reference_streaming(q, k, v, 3, 10).float()
    torch.testing.assert_close(out[:, stream], ref[:, stream], atol=2e-5, rtol=0)
    assert torch.isnan(out[:, [0, 3, 4]]).all()


@needs_kernel
def test_kernel_reads_strided_layouts():
    """transformers hands over [B, T, H, D].transpose(1, 2): rows are H * D apart."""
    b, hq, hkv, t, d = 2, 4, 2, 45, 16
    q = torch.randn(b, t, hq, d).transpose(1, 2)
    k = torch.randn(b, t, hkv, d).transpose(1, 2)
    v = torch.randn(b, t, hkv, d).transpose(1, 2)
    out = run_kernel(q, k, v, range(hq), 2, 9)
    expected = reference_streaming(q.contiguous(), k.contiguous(), v.contiguous(), 2, 9).float()
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2),
    hkv=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 2, 4]),
    tk=st.integers(1, 160),
    dq=st.integers(0, 80),
    d=st.sampled_from([8, 16, 20]),
    sink=st.integers(0, 20),
    window=st.integers(0, 120),
    bm=st.integers(1, 40),
    bn=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_property_kernel_random_blocks(b, hkv, group, tk, dq, d, sink, window, bm, bn, seed):
    tq = max(1, tk - dq)
    hq = hkv * group
    q, k, v = make(b, hq, hkv, tq, tk, d, seed=seed)
    g = torch.Generator().manual_seed(seed)
    stream = [h for h in range(hq) if torch.rand(1, generator=g).item() < 0.7] or [0]
    old = cpu_kernel.BLOCK_M, cpu_kernel.BLOCK_N
    cpu_kernel.BLOCK_M, cpu_kernel.BLOCK_N = bm, bn
    try:
        out = run_kernel(q, k, v, stream, sink, window)
    finally:
        cpu_kernel.BLOCK_M, cpu_kernel.BLOCK_N = old
    ref = reference_streaming(q, k, v, sink, window).float()
    torch.testing.assert_close(out[:, stream], ref[:, stream], atol=2e-5, rtol=0)


@needs_kernel
def test_kernel_rejects_other_dtypes():
    q, k, v = (t.bfloat16() for t in make(1, 2, 1, 8, 8, 16))
    with pytest.raises(RuntimeError, match="float32"):
        run_kernel(q, k, v, [0, 1], 1, 2)


def test_environment_variable_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv("CORE_ATTN_CPU_KERNEL", "0")
    assert not cpu_kernel.enabled() and not cpu_kernel.available()
    with cpu_kernel.use(True):
        assert cpu_kernel.enabled()


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def broken():
        raise OSError("no compiler")

    monkeypatch.setattr(cpu_kernel, "_load", broken)
    monkeypatch.setitem(cpu_kernel._state, "loaded", None)
    monkeypatch.setitem(cpu_kernel._state, "error", None)
    q, k, v = make(1, 4, 2, 40, 40, 16)
    dense = torch.tensor([True, False, False, False])
    with pytest.warns(RuntimeWarning, match="could not be built"):
        out = hybrid_attention(q, k, v, dense, sink_size=2, window_size=5, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        again = hybrid_attention(q, k, v, dense, sink_size=2, window_size=5, backend="torch")
    ref = hybrid_attention_reference(q, k, v, dense, sink_size=2, window_size=5).float()
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(again, out, atol=0, rtol=0)


@needs_kernel
def test_torch_backend_routes_only_maskless_float32_streaming_heads_to_the_kernel():
    """The fused/composed test matrix means something only if "fused" really runs the kernel."""
    q, k, v = make(1, 4, 2, 40, 40, 16)
    mixed = torch.tensor([True, False, False, False])

    def ran_kernel(q, k, v, dense, **kw):
        before = cpu_kernel.calls()
        hybrid_attention(q, k, v, dense, sink_size=2, window_size=5, backend="torch", **kw)
        return cpu_kernel.calls() - before

    assert ran_kernel(q, k, v, mixed) == 1
    causal = torch.ones(40, 40, dtype=torch.bool).tril().view(1, 1, 40, 40)
    assert ran_kernel(q, k, v, mixed, attention_mask=causal) == 0  # a padding mask: composition
    assert ran_kernel(q.bfloat16(), k.bfloat16(), v.bfloat16(), mixed) == 0  # float32 only
    assert ran_kernel(q, k, v, torch.ones(4, dtype=torch.bool)) == 0  # no streaming heads
    with cpu_kernel.use(False):
        assert ran_kernel(q, k, v, mixed) == 0
