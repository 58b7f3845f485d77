"""The Triton op exported as a Hub kernel repo loads with `kernels` and matches the reference.

CPU runs use the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before triton
is imported); shapes stay tiny.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from core_attn.ops.reference import hybrid_attention_reference

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "export_hub_kernel.py"
TRITON_SOURCE = ROOT / "core_attn" / "ops" / "triton_hybrid.py"


def _exporter():
    spec = importlib.util.spec_from_file_location("export_hub_kernel", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernel_repo(tmp_path_factory):
    if not TRITON_SOURCE.is_file():
        pytest.skip("core_attn/ops/triton_hybrid.py is not part of this build yet: nothing to export")
    out = tmp_path_factory.mktemp("kernel-repo")
    _exporter().export_kernel(out)
    return out


def test_export_layout(kernel_repo):
    variant = kernel_repo / "build" / "torch-universal"
    module = variant / "core_hybrid_attention"
    assert sorted(p.name for p in module.iterdir()) == ["__init__.py", "reference.py", "triton_hybrid.py"]
    assert (module / "triton_hybrid.py").read_bytes() == TRITON_SOURCE.read_bytes()  # a copy made at export time
    assert (module / "reference.py").read_bytes() == (ROOT / "core_attn/ops/reference.py").read_bytes()
    meta = json.loads((variant / "metadata.json").read_text())
    assert meta["name"] == "core-hybrid-attention" and meta["version"] == 1 and meta["python-depends"] == []
    assert meta["id"].startswith("_core_hybrid_attention_")
    assert (kernel_repo / "README.md").read_text().startswith("---\nlibrary_name: kernels\n")


def test_export_rejects_foreign_imports(tmp_path, monkeypatch):
    exporter = _exporter()
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "triton_hybrid.py").write_text("import torch\nfrom .dispatch import validate_inputs\n")
    (ops / "reference.py").write_text("import torch\n")
    monkeypatch.setattr(exporter, "OPS", ops)
    with pytest.raises(ValueError, match="imports '.dispatch'"):
        exporter.export_kernel(tmp_path / "out")
    (ops / "triton_hybrid.py").write_text("import numpy\n")
    with pytest.raises(ValueError, match="imports 'numpy'"):
        exporter.export_kernel(tmp_path / "out")
    with pytest.raises(ValueError, match="kernel name"):
        exporter.export_kernel(tmp_path / "out", name="Bad_Name")


CASES = {
    "T64_causal": dict(tq=64, tk=64, pad=0, sink=4, window=8),
    "T37_left_pad": dict(tq=37, tk=37, pad=5, sink=3, window=6),
    "Tq17_Tk48_chunk": dict(tq=17, tk=48, pad=0, sink=2, window=16),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kernel_from_local_repo_matches_reference(kernel_repo, case):
    kernels = pytest.importorskip("kernels", reason="pip install kernels (the hub extra) to load Hub kernels")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("no GPU, and TRITON_INTERPRET=1 was not set before triton was imported")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = kernels.get_local_kernel(kernel_repo)
    c = CASES[case]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, c["tq"], 16, generator=g).to(device)
    k = torch.randn(1, 1, c["tk"], 16, generator=g).to(device)
    v = torch.randn(1, 1, c["tk"], 16, generator=g).to(device)
    dense = torch.tensor([True, False], device=device)
    mask = None
    if c["pad"]:
        keep = torch.arange(c["tk"], device=device) >= c["pad"]
        causal = torch.ones(c["tq"], c["tk"], dtype=torch.bool, device=device).tril(c["tk"] - c["tq"])
        mask = (causal & keep).view(1, 1, c["tq"], c["tk"])
    kwargs = dict(sink_size=c["sink"], window_size=c["window"], attention_mask=mask)
    out = module.triton_hybrid_attention(q, k, v, dense, **kwargs)
    ref = hybrid_attention_reference(q, k, v, dense, **kwargs)
    assert out.shape == (1, 2, c["tq"], 16)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    assert module.hybrid_attention_reference.__module__.endswith(".reference")
