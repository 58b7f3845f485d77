"""`core-attn extract | ablate | stability | plot` end to end on a tiny model and the shipped samples."""

import csv
import json
import shutil

import pytest
import torch
from PIL import Image

from core_attn.cli import main
from core_attn.data import sample_dir
from core_attn.heads import HeadConfig


def _png(path):
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    out = tmp_path_factory.mktemp("extract") / "qwen3-refcocog"
    assert main(["extract", "--sample", "refcocog", "--tiny", "qwen3_vl", "--out", str(out), "--top-k", "3"]) == 0
    return out


def test_extract_writes_head_config_equal_to_direct_ram(extracted):
    from core_attn.analysis.data import SampleBuilder, load_records
    from core_attn.analysis.probe import ram_scores
    from core_attn.testing.tiny_models import build_tiny_model

    config = HeadConfig.from_pretrained(extracted)
    assert (config.num_layers, config.num_q_heads, config.num_kv_heads) == (4, 4, 2)
    assert config.model_id == "tiny-qwen3_vl" and sorted(config.dataset_scores) == ["refcocog"]
    assert config.provenance["datasets"] == {"refcocog": 4} and config.provenance["family"] == "qwen3_vl"
    # the saved map is the mean of the per-record RAM maps, measured here independently
    model = build_tiny_model("qwen3_vl", seed=0)
    builder = SampleBuilder.for_tiny(model.config)
    samples = [builder(r) for r in load_records(sample_dir("refcocog"))]
    direct = torch.stack([ram_scores(model, s.inputs, s.query_index, s.target_index) for s in samples]).mean(0)
    torch.testing.assert_close(config.scores, direct, rtol=1e-5, atol=1e-6)
    assert 0 < float(config.scores.max()) <= 1
    for name in ("ram_heatmap.png", "vision_heatmap.png", "overlay_top_head.png"):
        _png(extracted / "figures" / name)


def test_extract_from_local_folder_with_limit_and_name(tmp_path):
    data = tmp_path / "docs"
    shutil.copytree(sample_dir("mmlongbench"), data)
    out = tmp_path / "out"
    argv = ["extract", "--data", str(data), "--tiny", "internvl", "--limit", "2", "--name", "longdoc"]
    assert main([*argv, "--out", str(out), "--no-figures"]) == 0
    config = HeadConfig.from_pretrained(out)
    assert sorted(config.dataset_scores) == ["longdoc"] and config.provenance["datasets"] == {"longdoc": 2}
    assert not (out / "figures").exists()


def test_plot_renders_every_score_map(extracted, tmp_path):
    assert main(["plot", str(extracted), "--out", str(tmp_path / "figs"), "--top-k", "2"]) == 0
    _png(tmp_path / "figs" / "ram_heatmap.png")
    _png(tmp_path / "figs" / "ram_heatmap_refcocog.png")


def _save_map(path, scores):
    HeadConfig.from_scores(torch.as_tensor(scores, dtype=torch.float32), num_kv_heads=1).save_pretrained(path)
    return str(path)


def test_stability_hand_worked(tmp_path):
    # 3 tasks over 2 layers x 10 heads; a task's top set (above its 95th percentile) is its best head.
    base = torch.arange(20, dtype=torch.float32).view(2, 10)  # best head L1H9
    swapped = base.flatten().clone()
    swapped[[19, 0]] = swapped[[0, 19]]  # best head L0H0, otherwise the same ranking
    paths = [
        _save_map(tmp_path / "a", base),
        _save_map(tmp_path / "b", base * 2),
        _save_map(tmp_path / "c", swapped.view(2, 10)),
    ]
    out = tmp_path / "stab"
    assert main(["stability", *paths, "--names", "ref,doc,vid", "--out", str(out)]) == 0
    rows = list(csv.reader(open(out / "spearman.csv")))
    assert rows[0] == ["task", "ref", "doc", "vid"]
    rho = [[float(v) for v in r[1:]] for r in rows[1:]]
    assert rho[0][1] == pytest.approx(1.0)  # same ranking
    # one swap of ranks 1 and 20 over n = 20: rho = 1 - 6 * 2 * 19**2 / (20 * (20**2 - 1))
    assert rho[0][2] == pytest.approx(1 - 6 * 2 * 19**2 / (20 * 399), abs=1e-6)
    counts = {r["head"]: int(r["tasks"]) for r in csv.DictReader(open(out / "stability_counts.csv"))}
    assert counts["L1H9"] == 2 and counts["L0H0"] == 1 and sum(counts.values()) == 3
    summary = json.loads((out / "stability.json").read_text())
    assert summary["heads_in_all_tasks"] == [] and summary["tasks"] == ["ref", "doc", "vid"]
    _png(out / "spearman.png")
    _png(out / "stability.png")


def test_stability_rejects_mixed_models(tmp_path):
    a, b = _save_map(tmp_path / "a", torch.rand(2, 4)), _save_map(tmp_path / "b", torch.rand(3, 4))
    with pytest.raises(SystemExit, match="different models"):
        main(["stability", a, b, "--out", str(tmp_path / "o")])


def test_ablate_writes_curves(extracted, tmp_path):
    out = tmp_path / "abl"
    argv = ["ablate", "--sample", "refcocog", "--tiny", "qwen3_vl", "--heads", str(extracted), "--ks", "0,2,4"]
    assert main([*argv, "--random-seeds", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "curves.csv")))
    assert {r["mode"] for r in rows} == {"top", "bottom", "random"}
    assert sorted({int(r["k"]) for r in rows}) == [0, 2, 4]
    at_zero = {r["mode"]: float(r["accuracy"]) for r in rows if r["k"] == "0"}
    assert len(set(at_zero.values())) == 1  # nothing ablated: every selection scores the same
    _png(out / "ablation.png")


def test_help_lists_the_analysis_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(cmd in text for cmd in ("extract", "ablate", "stability", "plot"))


def test_bad_column_mapping(tmp_path):
    with pytest.raises(SystemExit, match="--column expects COLUMN=FIELD"):
        main(["extract", "--sample", "refcocog", "--tiny", "qwen3_vl", "--column", "img", "--out", str(tmp_path)])
