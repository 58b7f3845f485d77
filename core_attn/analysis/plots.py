"""Figures of a head analysis (matplotlib, rendered off-screen with Agg; no pyplot state).

Every function returns a ``matplotlib.figure.Figure`` and, given ``path``, also writes it as a
PNG (parent folders are created). Score maps are [L, HQ]: rows are layers ("L{l}"), columns are
q_heads ("H{h}").
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

DPI = 120


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, path: str | os.PathLike | None):
    if path is not None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
    return fig


def _as_2d(name: str, values) -> np.ndarray:
    arr = values.detach().cpu().float().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-d [num_layers, num_q_heads], found shape {tuple(arr.shape)}")
    return arr


def _ticks(ax, n_rows: int, n_cols: int, max_labels: int = 24) -> None:
    rstep, cstep = max(1, math.ceil(n_rows / max_labels)), max(1, math.ceil(n_cols / max_labels))
    ax.set_yticks(range(0, n_rows, rstep), [f"L{i}" for i in range(0, n_rows, rstep)], fontsize=7)
    ax.set_xticks(range(0, n_cols, cstep), [f"H{i}" for i in range(0, n_cols, cstep)], fontsize=7, rotation=90)
    ax.set_xlabel("q_head")
    ax.set_ylabel("layer")


def _map_size(n_rows: int, n_cols: int) -> tuple[float, float]:
    return min(4.0 + 0.22 * n_cols, 14.0), min(2.5 + 0.2 * n_rows, 14.0)


def top_cells(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """(layer, q_head) of the k highest scores, best first (ties in (layer, q_head) order)."""
    flat = torch.as_tensor(scores, dtype=torch.float32).flatten()
    order = torch.sort(flat, descending=True, stable=True).indices[: max(0, min(k, flat.numel()))]
    n_cols = scores.shape[1]
    return [(int(i) // n_cols, int(i) % n_cols) for i in order]


def ram_heatmap(
    scores,
    *,
    top_k: int = 10,
    title: str | None = None,
    label: str = "RAM",
    cmap: str = "viridis",
    path: str | os.PathLike | None = None,
):
    """Layer x q_head heatmap of a score map [L, HQ], with the top_k heads outlined in red."""
    from matplotlib.patches import Rectangle

    data = _as_2d("scores", scores)
    n_rows, n_cols = data.shape
    fig = _figure(*_map_size(n_rows, n_cols))
    ax = fig.add_subplot()
    im = ax.imshow(data, aspect="auto", cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=label)
    for rank, (layer, head) in enumerate(top_cells(data, top_k)):
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
        if rank < 5:
            ax.text(head, layer, str(rank + 1), ha="center", va="center", color="white", fontsize=7, weight="bold")
    _ticks(ax, n_rows, n_cols)
    ax.set_title(title or f"{label} per head (top {top_k} outlined)", fontsize=10)
    return _finish(fig, path)


def stability_map(counts, *, num_tasks: int, title: str | None = None, path: str | os.PathLike | None = None):
    """Layer x q_head map of how many tasks put each head in their top set (int counts [L, HQ] in 0..num_tasks)."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap

    data = _as_2d("counts", counts)
    if data.min() < 0 or data.max() > num_tasks:
        raise ValueError(f"counts must lie in [0, {num_tasks}], found [{data.min():g}, {data.max():g}]")
    n_rows, n_cols = data.shape
    fig = _figure(*_map_size(n_rows, n_cols))
    ax = fig.add_subplot()
    colors = colormaps["magma_r"](np.linspace(0.05, 0.9, num_tasks + 1))
    colors[0] = (0.95, 0.95, 0.95, 1.0)
    norm = BoundaryNorm(np.arange(-0.5, num_tasks + 1), num_tasks + 1)
    im = ax.imshow(data, aspect="auto", cmap=ListedColormap(colors), norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, ticks=range(num_tasks + 1), label="tasks with the head in their top set")
    _ticks(ax, n_rows, n_cols)
    ax.set_title(
        title or f"Cross-task stability ({int((data == num_tasks).sum())} heads in all {num_tasks})", fontsize=10
    )
    return _finish(fig, path)


def spearman_heatmap(matrix, names: Sequence[str], *, title: str | None = None, path: str | os.PathLike | None = None):
    """Annotated D x D matrix of rank correlations between the flattened score maps of D tasks."""
    data = _as_2d("matrix", matrix)
    if data.shape != (len(names), len(names)):
        raise ValueError(f"matrix is {data.shape[0]}x{data.shape[1]} but {len(names)} names were given")
    d = len(names)
    fig = _figure(2.5 + 0.9 * d, 2.0 + 0.8 * d)
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, label="Spearman rho")
    for i in range(d):
        for j in range(d):
            ax.text(
                j,
                i,
                f"{data[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if abs(data[i, j]) > 0.6 else "black",
            )
    ax.set_xticks(range(d), names, rotation=30, ha="right")
    ax.set_yticks(range(d), names)
    ax.set_title(title or "Cross-task rank correlation of head scores", fontsize=10)
    return _finish(fig, path)


def _curve(points) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(points, Mapping):
        items = sorted((float(k), float(v)) for k, v in points.items())
    else:
        items = sorted((float(k), float(v)) for k, v in points)
    arr = np.array(items, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


ABLATION_STYLE = {"top": ("tab:red", "o"), "bottom": ("tab:blue", "s"), "random": ("tab:gray", "^")}


def ablation_curves(
    curves: Mapping[str, Mapping[int, float] | Sequence[tuple[int, float]]],
    *,
    baseline: float | None = None,
    spread: Mapping[str, Mapping[int, float]] | None = None,
    ylabel: str = "accuracy",
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Accuracy vs number of ablated heads k, one line per selection ("top", "bottom", "random", ...).

    Args:
        curves: selection -> {k: accuracy} (or (k, accuracy) pairs).
        baseline: accuracy with no head ablated, drawn as a dashed line.
        spread: selection -> {k: std} drawn as a band (e.g. over random seeds).
    """
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    for name, points in curves.items():
        x, y = _curve(points)
        color, marker = ABLATION_STYLE.get(name, (None, "o"))
        ax.plot(x, y, marker=marker, color=color, label=f"{name}-k")
        if spread and name in spread:
            sx, sy = _curve(spread[name])
            lo, hi = y - np.interp(x, sx, sy), y + np.interp(x, sx, sy)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    if baseline is not None:
        ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label="no ablation")
    ax.set_xlabel("ablated heads k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Head ablation", fontsize=10)
    return _finish(fig, path)


def coverage_curves(
    curves: Mapping[str, Mapping[int, float] | Sequence[float]],
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Cumulative key-token coverage (0..1) of the top-k heads vs k, one line per model / task / group.

    ``curves``: name -> {k: coverage} or a sequence whose i-th entry is the coverage at k = i + 1.
    """
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    for name, points in curves.items():
        if not isinstance(points, Mapping):
            points = {i + 1: v for i, v in enumerate(torch.as_tensor(points, dtype=torch.float64).tolist())}
        x, y = _curve(points)
        ax.plot(x, 100.0 * y, label=name)
    ax.set_xlabel("top-k heads")
    ax.set_ylabel("key-token coverage (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Key-token coverage of the top-k heads", fontsize=10)
    return _finish(fig, path)


def token_mass_grid(mass, grid: Sequence[int]) -> np.ndarray:
    """Per-token attention mass [rows * cols] of one image, as a [rows, cols] array (row-major tokens)."""
    arr = mass.detach().cpu().float().numpy() if isinstance(mass, torch.Tensor) else np.asarray(mass, dtype=float)
    rows, cols = (int(v) for v in grid)
    if arr.size != rows * cols:
        raise ValueError(f"mass has {arr.size} values, grid {rows}x{cols} needs {rows * cols}")
    return arr.reshape(rows, cols)


def attention_overlay(
    image,
    mass,
    grid: Sequence[int],
    *,
    bbox: Sequence[float] | None = None,
    title: str | None = None,
    alpha: float = 0.55,
    cmap: str = "inferno",
    path: str | os.PathLike | None = None,
):
    """One head's attention over an image: per-token mass [rows * cols] laid on the token grid over the image.

    Args:
        image: PIL image or array [H, W(, C)].
        mass: attention mass per visual token of this image, row-major over ``grid = (rows, cols)``.
        bbox: optional ground-truth box ``(x0, y0, x1, y1)`` in image pixels, drawn in green.
    """
    from matplotlib.patches import Rectangle

    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    heat = token_mass_grid(mass, grid)
    fig = _figure(4.0 * min(2.0, max(0.6, width / height)) + 1.0, 4.0)
    ax = fig.add_subplot()
    ax.imshow(pixels, extent=(0, width, height, 0))
    im = ax.imshow(heat, extent=(0, width, height, 0), alpha=alpha, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="attention mass")
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=2))
    ax.set_axis_off()
    ax.set_title(title or "Attention of one head on the image", fontsize=10)
    return _finish(fig, path)
