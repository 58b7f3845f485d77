"""``core-attn sweep``: one task at several dense fractions and the dense baseline, as one table.

For every setting (the dense baseline first, then each fraction) the model is built through
lmms-eval's registry with the user's model_args plus ``dense=<fraction>``, evaluated with
``lmms_eval.evaluator.simple_evaluate`` on the task group, and freed before the next one. The
table has the paper's layout: a row per setting, a column per category and the average, each
cell "score (difference from dense)", plus the measured mean prefill time. Written as
markdown, CSV and the raw JSON.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import pathlib
import time

# group -> (column label, result key) in the paper's order; the last column is the group's average.
LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "core_mlvu": [
        ("TR", "core_mlvu_topic_reasoning"),
        ("AR", "core_mlvu_anomaly_reco"),
        ("NQA", "core_mlvu_needle"),
        ("ER", "core_mlvu_ego"),
        ("PQA", "core_mlvu_plotQA"),
        ("AO", "core_mlvu_order"),
        ("AC", "core_mlvu_count"),
        ("M-Avg", "core_mlvu"),
    ],
    "core_videomme": [
        ("Perception", "core_videomme_perception"),
        ("Recognition", "core_videomme_recognition"),
        ("Reasoning", "core_videomme_reasoning"),
        ("Other", "core_videomme_other"),
        ("Avg", "core_videomme"),
    ],
}
METRIC = "acc,none"


def setting_label(dense) -> str:
    if isinstance(dense, float) and dense == 1.0:
        return "dense"
    return f"{dense:.1%}".replace(".0%", "%") if isinstance(dense, float) else f"{dense} heads"


def scores_of(group: str, results: dict) -> dict[str, float | None]:
    """{column: accuracy in percent, or None where the category had no questions} of one run."""
    out = {}
    for column, key in LAYOUTS[group]:
        value = results.get(key, {}).get(METRIC)
        out[column] = 100.0 * float(value) if isinstance(value, (int, float)) else None
    return out


def build_table(group: str, runs: list[dict]) -> tuple[str, str]:
    """(markdown, csv) of runs [{"setting": label, "scores": {column: %}, "prefill_mean_s": s}].

    The first run is the baseline the differences are taken from.
    """
    if group not in LAYOUTS:
        raise ValueError(f"no table layout for {group!r}; known: {sorted(LAYOUTS)}")
    if not runs:
        raise ValueError("no runs to tabulate")
    columns = [c for c, _ in LAYOUTS[group]]
    base = runs[0]

    def cell(run, column):
        value, ref = run["scores"].get(column), base["scores"].get(column)
        if value is None:
            return "-"
        if run is base or ref is None:
            return f"{value:.1f}"
        return f"{value:.1f} ({value - ref:+.1f})"

    def prefill(run):
        t = run.get("prefill_mean_s")
        if t is None:
            return "-"
        ref = base.get("prefill_mean_s")
        return f"{t:.3f}" if run is base or not ref else f"{t:.3f} ({ref / t:.2f}x)"

    header = ["Setting", *columns, "Prefill s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        lines.append("| " + " | ".join([run["setting"], *(cell(run, c) for c in columns), prefill(run)]) + " |")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["setting", *columns, *(f"{c}_diff" for c in columns), "prefill_mean_s", "prefills"])
    for run in runs:
        scores = [run["scores"].get(c) for c in columns]
        diffs = [
            None if v is None or base["scores"].get(c) is None else v - base["scores"][c]
            for v, c in zip(scores, columns)
        ]
        writer.writerow([run["setting"], *scores, *diffs, run.get("prefill_mean_s"), run.get("prefills")])
    return "\n".join(lines) + "\n", buffer.getvalue()


def run_sweep(
    model: str,
    model_args: str,
    group: str,
    dense: list,
    *,
    include_path: str | None = None,
    limit: int | float | None = None,
    output: str | pathlib.Path = "sweep",
    device: str | None = None,
    batch_size: int = 1,
    model_class=None,
) -> list[dict]:
    """Evaluate ``group`` with ``model`` at the dense baseline and every fraction in ``dense``.

    model: an lmms-eval model name registered by core-attn (core_qwen3_vl, ...).
    model_args: lmms-eval's "k=v,k=v" string without dense (set per run here).
    model_class: the lmms-eval model class to build (default: ``model`` looked up in lmms-eval's
        registry); ``model`` still names it for the tasks' per-model prompts.
    Writes <output>/<group>.md, .csv and .json; returns the runs.
    """
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager
    from lmms_eval.utils import simple_parse_args_string

    from .tasks import tasks_path

    args = simple_parse_args_string(model_args) if model_args else {}
    if "dense" in args:
        raise ValueError("model_args must not set dense: the sweep sets it per run (give --dense fractions instead)")
    settings = [1.0] + [d for d in dense if not (isinstance(d, float) and d == 1.0)]
    task_manager = TaskManager(include_path=include_path or tasks_path(), model_name=model)
    model_class = model_class or get_model(model)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    runs = []
    for value in settings:
        start = time.perf_counter()
        extra = {"batch_size": batch_size, **({"device": device} if device else {})}
        lm = model_class(**args, dense=value, **extra)
        results = simple_evaluate(
            model=lm, tasks=[group], task_manager=task_manager, limit=limit, bootstrap_iters=0, log_samples=False
        )
        report = lm.core_report() if hasattr(lm, "core_report") else {}
        if hasattr(lm, "prefill_timer"):
            lm.prefill_timer.close()
        del lm
        gc.collect()
        _empty_cuda_cache()
        if results is None:  # non-zero ranks of a distributed run
            continue
        runs.append(
            {
                "setting": setting_label(value),
                "dense": value,
                "scores": scores_of(group, results["results"]),
                "prefill_mean_s": report.get("prefill_mean_s"),
                "prefills": report.get("prefills"),
                "dense_heads": report.get("dense_heads"),
                "wall_s": time.perf_counter() - start,
            }
        )
        markdown, table = build_table(group, runs)  # rewritten after every run: partial sweeps survive
        (output / f"{group}.md").write_text(markdown)
        (output / f"{group}.csv").write_text(table)
        (output / f"{group}.json").write_text(json.dumps({"model": model, "model_args": model_args, "runs": runs}, indent=1))
    return runs


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
