"""Figures: each renders a non-empty PNG and shows the data it was given."""

import numpy as np
import pytest
import torch
from PIL import Image

from core_attn.analysis import plots


def _png_ok(path):
    assert path.is_file() and path.stat().st_size > 2000
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # something was drawn, not a blank canvas


@pytest.fixture(scope="module")
def scores():
    return torch.arange(6 * 4, dtype=torch.float32).view(6, 4).flip(0) / 24  # best head: L0H3


def test_ram_heatmap_data_labels_and_top_k(tmp_path, scores):
    fig = plots.ram_heatmap(scores, top_k=3, path=tmp_path / "sub" / "ram.png")
    _png_ok(tmp_path / "sub" / "ram.png")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), scores.numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"L{i}" for i in range(6)]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"H{i}" for i in range(4)]
    outlined = sorted((round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in ax.patches)
    assert outlined == [(1, 0), (2, 0), (3, 0)]  # (q_head, layer) of the 3 best
    assert len(fig.axes) == 2  # colorbar


def test_top_cells_ranks_best_first():
    assert plots.top_cells(np.array([[0.1, 0.9], [0.5, 0.9]]), 3) == [(0, 1), (1, 1), (1, 0)]


def test_heatmap_thins_labels_for_large_models(tmp_path):
    fig = plots.ram_heatmap(torch.rand(64, 40), top_k=5)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) <= 24 and labels[:2] == ["L0", "L3"]


def test_heatmap_rejects_1d():
    with pytest.raises(ValueError, match=r"2-d \[num_layers, num_q_heads\], found shape \(5,\)"):
        plots.ram_heatmap(torch.rand(5))


def test_stability_map(tmp_path):
    counts = torch.tensor([[0, 1, 4], [2, 4, 3]])
    fig = plots.stability_map(counts, num_tasks=4, path=tmp_path / "stab.png")
    _png_ok(tmp_path / "stab.png")
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), counts.numpy())
    assert "2 heads in all 4" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match=r"counts must lie in \[0, 3\], found \[0, 4\]"):
        plots.stability_map(counts, num_tasks=3)


def test_spearman_heatmap_annotations(tmp_path):
    m = np.array([[1.0, 0.82], [0.82, 1.0]])
    fig = plots.spearman_heatmap(m, ["refcocog", "vidstg"], path=tmp_path / "rho.png")
    _png_ok(tmp_path / "rho.png")
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.82", "0.82", "1.00", "1.00"]
    with pytest.raises(ValueError, match="2x2 but 3 names"):
        plots.spearman_heatmap(m, ["a", "b", "c"])


def test_ablation_curves(tmp_path):
    curves = {
        "top": {0: 45.3, 5: 27.0, 10: 6.0},
        "bottom": [(0, 45.3), (10, 41.0), (5, 44.0)],
        "random": {0: 45.3, 5: 40.0, 10: 35.0},
    }
    fig = plots.ablation_curves(
        curves, baseline=45.3, spread={"random": {0: 0.0, 5: 1.0, 10: 2.0}}, path=tmp_path / "abl.png"
    )
    _png_ok(tmp_path / "abl.png")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"top-k", "bottom-k", "random-k", "no ablation"}
    assert list(lines["bottom-k"].get_xdata()) == [0, 5, 10]  # sorted by k
    assert list(lines["bottom-k"].get_ydata()) == [45.3, 44.0, 41.0]
    assert len(fig.axes[0].collections) == 1  # the random band


def test_coverage_curves_percent(tmp_path):
    fig = plots.coverage_curves({"qwen": [0.1, 0.25, 0.5], "llava": {1: 0.05, 3: 0.2}}, path=tmp_path / "cov.png")
    _png_ok(tmp_path / "cov.png")
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [10.0, 25.0, 50.0]


def test_attention_overlay_grid(tmp_path):
    image = Image.new("RGB", (80, 40), (30, 120, 200))
    mass = torch.arange(8, dtype=torch.float32)
    fig = plots.attention_overlay(image, mass, (2, 4), bbox=(0, 0, 40, 20), path=tmp_path / "ov.png")
    _png_ok(tmp_path / "ov.png")
    heat = fig.axes[0].images[1]
    np.testing.assert_array_equal(heat.get_array(), mass.view(2, 4).numpy())
    assert heat.get_extent() == [0, 80, 40, 0]  # the token grid spans the whole image
    with pytest.raises(ValueError, match="mass has 8 values, grid 3x3 needs 9"):
        plots.attention_overlay(image, mass, (3, 3))
