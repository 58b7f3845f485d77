"""Plot latency against context length from a results file: ``python -m benchmarks.plot FILE.jsonl [--out PNG]``.

Reads rows of attention_op, e2e_prefill or ram_memory and draws the newest configuration
(the device and config of the newest row; for each (T, dense fraction) point its newest row):
  latency     mean seconds per method, whiskers from min to max of the timed runs
  speedup     measured (mean baseline / mean method) solid, ideal from FLOPs dashed
              (attention_op, e2e_prefill)
  peak memory per method, where the rows have it
"""

from __future__ import annotations

import argparse
import json
import pathlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# benchmark -> (baseline method, compared method); both are per-row summaries
METHODS = {
    "attention_op": ("sdpa", "hybrid"),
    "e2e_prefill": ("sdpa", "hybrid"),
    "ram_memory": ("forward", "ram"),
}
POINT_KEYS = ("seq_len", "dense_fraction", "n_dense")  # config fields that vary within one series


def read_rows(path: pathlib.Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def newest_series(rows: list[dict]) -> list[dict]:
    """Rows of the newest row's device and configuration, newest row per (T, dense fraction)."""
    rows = [r for r in rows if r.get("benchmark") in METHODS]
    if not rows:
        raise ValueError(f"no rows of {sorted(METHODS)} to plot")
    newest = max(rows, key=lambda r: r["timestamp"])

    def shape(row):
        return {k: v for k, v in row["config"].items() if k not in POINT_KEYS}

    same = [r for r in rows if r["device_name"] == newest["device_name"] and shape(r) == shape(newest)]
    points = {}
    for row in sorted(same, key=lambda r: r["timestamp"]):
        points[(row["config"]["seq_len"], row["config"].get("dense_fraction"))] = row
    return [points[k] for k in sorted(points, key=lambda k: (k[0], -(k[1] or 0)))]


def label(benchmark: str, method: str, fraction: float | None) -> str:
    if fraction is None or method == METHODS[benchmark][0]:
        return method
    return f"{method} {fraction:.1%} dense"


def composed_label(benchmark: str, method: str, fraction: float | None) -> str:
    return f"{label(benchmark, method, fraction)} (SDPA composition)"


def plot(rows: list[dict], out: pathlib.Path, title: str | None = None) -> pathlib.Path:
    """Write the figure of ``rows`` (see the module docstring) to ``out``; returns ``out``."""
    rows = newest_series(rows)
    benchmark = rows[0]["benchmark"]
    baseline, method = METHODS[benchmark]
    series: dict[str, list[tuple[int, dict]]] = {}
    for row in rows:
        t, fraction = row["config"]["seq_len"], row["config"].get("dense_fraction")
        series.setdefault(label(benchmark, baseline, None), []).append((t, row[baseline]))
        series.setdefault(label(benchmark, method, fraction), []).append((t, row[method]))
        if "composed" in row:  # CPU attention op: the same hybrid on the SDPA composition
            series.setdefault(composed_label(benchmark, method, fraction), []).append((t, row["composed"]))
    series = {k: sorted(dict(v).items()) for k, v in series.items()}  # one point per T

    has_speedup = "ideal_speedup" in rows[0]
    has_memory = any(s.get("peak_mem_bytes") is not None for points in series.values() for _, s in points)
    n_panels = 1 + has_speedup + has_memory
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.2), squeeze=False)
    axes = list(axes[0])
    colors = {name: f"C{i}" for i, name in enumerate(series)}

    ax = axes.pop(0)
    for name, points in series.items():
        ok = [(t, s) for t, s in points if not s["oom"]]
        if ok:
            ts = [t for t, _ in ok]
            means = [s["mean_s"] for _, s in ok]
            low = [s["mean_s"] - s["min_s"] for _, s in ok]
            high = [max(s["times_s"]) - s["mean_s"] for _, s in ok]
            ax.errorbar(ts, means, yerr=[low, high], marker="o", capsize=3, color=colors[name], label=name)
        for t, s in points:
            if s["oom"]:
                ax.annotate(
                    "OOM", (t, 1), xycoords=("data", "axes fraction"), color=colors[name], ha="center", va="top"
                )
    ax.set(
        xscale="log", yscale="log", xlabel="context length T (tokens)", ylabel="seconds per prefill", title="latency"
    )
    ax.legend(fontsize=8)

    if has_speedup:
        ax = axes.pop(0)
        by_fraction: dict[float, list[dict]] = {}
        for row in rows:
            by_fraction.setdefault(row["config"]["dense_fraction"], []).append(row)
        for fraction, fraction_rows in by_fraction.items():
            color = colors[label(benchmark, method, fraction)]
            ts = [r["config"]["seq_len"] for r in fraction_rows]
            measured = [(r["config"]["seq_len"], r["measured_speedup"]) for r in fraction_rows if r["measured_speedup"]]
            if measured:
                ax.plot(*zip(*measured), marker="o", color=color, label=f"{fraction:.1%} dense measured")
            composed = [
                (r["config"]["seq_len"], r["composed"]["measured_speedup"])
                for r in fraction_rows
                if r.get("composed", {}).get("measured_speedup")
            ]
            if composed:
                ax.plot(
                    *zip(*composed), marker="s", ls=":", color=colors[composed_label(benchmark, method, fraction)],
                    label=f"{fraction:.1%} dense, SDPA composition",
                )
            ideal = [r["ideal_speedup"] for r in fraction_rows]
            ax.plot(ts, ideal, ls="--", marker="x", color=color, label=f"{fraction:.1%} dense ideal")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set(
            xscale="log", xlabel="context length T (tokens)", ylabel=f"{baseline} time / {method} time", title="speedup"
        )
        ax.legend(fontsize=8)

    if has_memory:
        ax = axes.pop(0)
        for name, points in series.items():
            ok = [(t, s["peak_mem_bytes"] / 2**30) for t, s in points if s.get("peak_mem_bytes") is not None]
            if ok:
                ax.plot(*zip(*ok), marker="o", color=colors[name], label=name)
        ax.set(xscale="log", xlabel="context length T (tokens)", ylabel="GiB", title="peak memory")
        ax.legend(fontsize=8)

    lengths = sorted({r["config"]["seq_len"] for r in rows})
    for ax in fig.axes:  # ticks at the measured lengths, as 4k / 16k / 128k
        ax.set_xticks(lengths, [f"{t // 1024}k" if t % 1024 == 0 else str(t) for t in lengths])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if ax.get_yscale() == "log":  # plain numbers (2, 3, 5, 10) instead of 2x10^0
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))

    newest = rows[-1]
    dirty = "+changes" if newest.get("git_dirty") else ""
    where = f"{newest['device_name']}, torch {newest['torch']}, git {str(newest.get('git_sha'))[:8]}{dirty}"
    fig.suptitle(f"{title or newest.get('entry', benchmark)} ({where})", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path, help="a results .jsonl file")
    parser.add_argument("--out", type=pathlib.Path, help="PNG to write (default: the results file with .png)")
    parser.add_argument("--title", help="figure title (default: the entry name)")
    args = parser.parse_args(argv)
    out = plot(read_rows(args.results), args.out or args.results.with_suffix(".png"), args.title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
