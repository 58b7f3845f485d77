"""The benchmark runner end to end on the tiny registry entries (T = 256, 2 layers): rows and plots.

Schema only: timings on a shared CPU say nothing, so nothing here asserts on them.
"""

import dataclasses
import json

import pytest
import torch

from benchmarks import memory, plot, run
from benchmarks.registry import ENTRIES, TINY, OomBoundary

STAMPS = {"benchmark", "entry", "timestamp", "device_name", "torch", "triton", "transformers", "git_sha", "git_dirty"}
TIMED = {"oom", "min_s", "mean_s", "median_s", "times_s", "tflops", "peak_mem_bytes", "mem_before_bytes"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    run.main(["e2e-smoke", "memory-smoke", "--results-dir", str(out)])
    return out


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_e2e_rows(results):
    entry = ENTRIES["e2e-smoke"]
    rows = read(results / "e2e_smoke.jsonl")
    assert len(rows) == len(entry.lengths) * len(entry.dense_fractions)
    for row in rows:
        assert STAMPS <= row.keys()
        assert row["benchmark"] == "e2e_prefill" and row["entry"] == "e2e-smoke"
        assert row["config"]["seq_len"] == 256 and row["config"]["backbone"]["layers"] == 2
        assert row["config"]["n_dense"] == 2  # ceil(25% of 2 layers * 4 q_heads)
        for method in ("sdpa", "hybrid"):
            assert TIMED <= row[method].keys() and row[method]["oom"] is False
            assert len(row[method]["times_s"]) == entry.repeats
            assert row[method]["min_s"] <= row[method]["median_s"]
            assert row[method]["peak_mem_bytes"] > 0
        assert row["oom"] is False
        assert row["flops"]["sdpa"]["other"] == row["flops"]["hybrid"]["other"]
        assert row["flops"]["hybrid"]["attention"] < row["flops"]["sdpa"]["attention"]
        assert row["ideal_speedup"] > 1 and row["measured_speedup"] > 0
        assert row["measured_over_ideal"] == pytest.approx(row["measured_speedup"] / row["ideal_speedup"])


def test_memory_rows(results):
    (row,) = read(results / "memory_smoke.jsonl")
    assert STAMPS <= row.keys()
    assert row["benchmark"] == "ram_memory" and row["entry"] == "memory-smoke"
    assert row["config"]["n_query"] == 8 and row["config"]["n_target"] == 32
    for method in ("forward", "ram"):
        assert TIMED <= row[method].keys() and row[method]["oom"] is False
    assert row["peak_mem_ratio"] > 0 and row["time_ratio"] > 0


@pytest.mark.parametrize("stem", ["e2e_smoke", "memory_smoke"])
def test_plot_written(results, stem):
    png = results / f"{stem}.png"
    assert png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_keeps_newest_row_per_point(results, tmp_path):
    rows = read(results / "e2e_smoke.jsonl")
    older = {**rows[0], "timestamp": "2000-01-01T00:00:00+00:00", "measured_speedup": -1.0}
    assert plot.newest_series([older, *rows]) == rows
    assert plot.plot([older, *rows], tmp_path / "p.png").exists()


def test_cuda_entry_refused_without_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit):
        run.main(["e2e-qwen3vl-8b"])
    assert "need a CUDA device" in capsys.readouterr().err


def test_oom_boundary_stops_at_first_out_of_memory(monkeypatch, tmp_path):
    """The boundary search on CPU, with a model that runs out of memory above 256 tokens."""
    real_build = memory.build_backbone

    def build(*args):
        model = real_build(*args)
        forward = model.forward

        def limited(*a, input_ids, **kw):
            if input_ids.shape[1] > 256:
                raise torch.OutOfMemoryError("simulated")
            return forward(*a, input_ids=input_ids, **kw)

        model.forward = limited
        return model

    monkeypatch.setattr(memory, "build_backbone", build)
    entry = OomBoundary(
        TINY, "float32", (128, 256, 512, 1024), (0.25,), "oom", sink_size=16, window_size=64, n_query=8, n_target=32
    )
    rows = memory.run_oom("oom-tiny", dataclasses.replace(entry, device="cpu"), tmp_path / "oom.jsonl")
    assert [(r["config"]["setting"], r["config"]["dense_fraction"]) for r in rows] == [
        ("sdpa", None),
        ("ram", None),
        ("hybrid", 0.25),
    ]
    for row in rows:
        assert [f["seq_len"] for f in row["fits"]] == [128, 256]  # 1024 is never tried
        assert row["max_fitting_len"] == 256 and row["first_oom_len"] == 512
        assert all(f["peak_mem_bytes"] > 0 for f in row["fits"])
    assert len(read(tmp_path / "oom.jsonl")) == 3


def test_attention_op_rows_through_the_runner(tmp_path):
    """attention-op-cpu at a small T through the same runner: one row with both methods and the speedup fields."""
    run.main(["attention-op-cpu", "--lengths", "2000", "--warmup", "0", "--repeats", "1", "--results-dir", str(tmp_path)])
    (row,) = read(tmp_path / "attention_op.jsonl")
    assert row["benchmark"] == "attention_op" and row["config"]["n_dense"] == 1
    for method in ("sdpa", "hybrid"):
        assert row[method]["oom"] is False and len(row[method]["times_s"]) == 1
    assert row["ideal_speedup"] > 1  # T = 2000 > window 1024: streaming q_heads attend fewer pairs
    assert row["measured_speedup"] == pytest.approx(row["sdpa"]["mean_s"] / row["hybrid"]["mean_s"])
    assert row["measured_over_ideal"] == pytest.approx(row["measured_speedup"] / row["ideal_speedup"])
    assert (tmp_path / "attention_op.png").read_bytes()[:4] == b"\x89PNG"
