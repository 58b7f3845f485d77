"""The README's main job: `core-attn` (the demo) runs offline and reports an exact dense parity."""

import re

from core_attn.cli import main
from core_attn.ops import cpu_kernel


def test_demo_runs_and_dense_is_exact(capsys):
    assert main(["demo", "--new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    exact = re.search(r"all heads dense\s*: max \|diff\| = ([0-9.e+-]+)", out)
    assert exact and float(exact.group(1)) == 0.0
    assert re.search(r"attach\(dense=0.25, sink=4, window=16\): 4/16 heads dense", out)
    assert out.count("\n    L") == 4  # one map line per layer
    assert "recovered exactly: True" in out  # RAM finds the planted retrieval heads
    # the line says which path actually ran: the fused kernel wherever it builds
    expected = "the fused C++ CPU kernel" if cpu_kernel.available() else "the SDPA composition"
    assert f"streaming heads ran on     : {expected}" in out


def test_bare_command_is_the_demo(capsys):
    assert main(["--new-tokens", "1"]) == 0
    assert "demo" in capsys.readouterr().out
