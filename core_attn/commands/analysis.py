"""`core-attn extract | ablate | stability | plot`: measure CoRe heads and draw the paper's figures.

Heavy imports (torch, transformers, matplotlib, the measurement code) happen inside the handlers
so that ``core-attn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

SAMPLE_KINDS = ("refcocog", "mmlongbench", "mmdocir", "vidstg")
TINY_FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl", "llava_onevision", "internvl")
FIGURES = "figures"


# --------------------------------------------------------------------------- parsers
def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder with records.jsonl (+ images), a .jsonl file, or a Hub dataset id")
    src.add_argument("--sample", choices=SAMPLE_KINDS, help="a shipped synthetic sample dataset")
    g.add_argument("--kind", choices=SAMPLE_KINDS, help="record kind (default: inferred from the record keys)")
    g.add_argument("--split", default="train", help="dataset split for Hub datasets (default: train)")
    g.add_argument("--limit", type=int, help="use at most this many records")
    g.add_argument("--index-base", type=int, default=0, choices=(0, 1), help="1 if page / frame indices are 1-based")
    g.add_argument(
        "--column", action="append", default=[], metavar="COLUMN=FIELD", help="rename a dataset column (repeatable)"
    )
    g.add_argument("--name", help="dataset name stored with the scores (default: the sample kind or folder name)")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="Hub id or local path of a supported checkpoint (uses its processor)")
    src.add_argument("--tiny", choices=TINY_FAMILIES, help="a built-in tiny random-weight model (offline)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    g.add_argument("--seed", type=int, default=0, help="seed of the tiny model's weights (default: 0)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="measure retrieval attention mass (RAM) per head over a dataset and save a head config",
        description="Runs RAM over a dataset (one forward pass per record) and writes a HeadConfig folder "
        "(head_config.json + head_scores.safetensors) with a heatmap under figures/.",
    )
    _data_args(p)
    _model_args(p)
    p.add_argument("--out", required=True, help="output folder (the head config)")
    p.add_argument("--top-k", type=int, default=20, help="heads outlined in the heatmap (default: 20)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.set_defaults(func=run_extract)

    p = sub.add_parser(
        "ablate",
        help="mask the top / bottom / random k heads and record accuracy vs k "
        "(share of samples whose greedy next token is unchanged)",
        description="Ablation sweep over k heads ranked by a head config; writes curves.csv and ablation.png.",
    )
    _data_args(p)
    _model_args(p)
    p.add_argument("--heads", required=True, help="head config folder (from `core-attn extract`)")
    p.add_argument("--ks", default="0,1,2,5,10", help="comma-separated head counts (default: 0,1,2,5,10)")
    p.add_argument("--modes", default="top,bottom,random", help="selections to sweep (default: top,bottom,random)")
    p.add_argument("--random-seeds", type=int, default=3, help="random selections averaged per k (default: 3)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_ablate)

    p = sub.add_parser(
        "stability",
        help="compare head rankings across tasks (Spearman matrix, heads shared by all tasks)",
        description="Takes several head config folders of one model (one per task) and writes spearman.csv, "
        "stability_counts.csv, stability.json and their figures.",
    )
    p.add_argument("configs", nargs="+", help="head config folders (at least two)")
    p.add_argument("--names", help="comma-separated task names (default: folder names)")
    p.add_argument("--percentile", type=float, default=95.0, help="a task's top set: heads above this percentile")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_stability)

    p = sub.add_parser(
        "plot",
        help="render the figures of a head config folder",
        description="Heatmap of the scores (and of every per-dataset score map) into <folder>/figures or --out.",
    )
    p.add_argument("config", help="head config folder")
    p.add_argument("--out", help="figure folder (default: <config>/figures)")
    p.add_argument("--top-k", type=int, default=20, help="heads outlined in the heatmaps (default: 20)")
    p.set_defaults(func=run_plot)


# ------------------------------------------------------------------------- helpers
def _progress(iterable, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="record", file=sys.stderr, dynamic_ncols=True)


def _dataset_name(args) -> str:
    if args.name:
        return args.name
    if args.sample:
        return args.sample
    path = Path(args.data)
    return (path.parent.name if path.suffix == ".jsonl" else path.name) or str(args.data)


def _load_records(args):
    from ..analysis.data import load_records

    source = args.data
    if args.sample:
        from ..data import sample_dir

        source = sample_dir(args.sample)
    columns = {}
    for item in args.column:
        if "=" not in item:
            raise SystemExit(f"--column expects COLUMN=FIELD, got {item!r}")
        key, value = item.split("=", 1)
        columns[key] = value
    records = load_records(
        source, args.kind, split=args.split, limit=args.limit, column_map=columns or None, index_base=args.index_base
    )
    if not records:
        raise SystemExit(f"no records found in {source}")
    return records


def _dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def _load_model(args):
    """(model, SampleBuilder, model_id) for --model or --tiny."""
    import torch

    from ..analysis.data import SampleBuilder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _dtype(args.dtype, device)
    if args.tiny:
        from ..testing.tiny_models import build_tiny_model

        model = build_tiny_model(args.tiny, seed=args.seed, dtype=dtype).to(device)
        return model, SampleBuilder.for_tiny(model.config, args.tiny), f"tiny-{args.tiny}"
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype).to(device).eval()
    return model, SampleBuilder.from_pretrained(args.model), args.model


def _to_device(inputs: dict, device) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ----------------------------------------------------------------------- commands
def run_extract(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from .. import __version__
    from ..analysis import plots
    from ..analysis.probe import RamAccumulator, ram_over_dataset
    from ..hf.attach import model_head_shape

    records = _load_records(args)
    model, builder, model_id = _load_model(args)
    layers, hq, hkv = model_head_shape(model)
    device = next(model.parameters()).device
    name = _dataset_name(args)
    built = []

    def samples():
        for record in records:
            sample = builder(record)
            built.append((len(sample.query_index), len(sample.target_index)))
            yield dataclasses.replace(sample, inputs=_to_device(sample.inputs, device), task=name)

    vision = RamAccumulator(layers, hq, keep_samples=False)
    acc = ram_over_dataset(model, samples(), vision=vision, desc=f"RAM {name}", total=len(records))
    provenance = {
        "command": "core-attn extract",
        "datasets": {name: len(records)},
        "source": f"sample:{args.sample}" if args.sample else str(args.data),
        "family": builder.family,
        "mean_query_tokens": sum(q for q, _ in built) / len(built),
        "mean_target_tokens": sum(t for _, t in built) / len(built),
        "library_version": __version__,
        "torch_version": torch.__version__,
    }
    config = acc.to_head_config(num_kv_heads=hkv, model_id=model_id, provenance=provenance)
    out = Path(args.out)
    config.save_pretrained(out)
    print(f"wrote {out} ({config.num_layers} layers x {config.num_q_heads} q_heads, {len(records)} records)")
    print(f"top heads: {', '.join(config.top_heads(min(10, config.num_heads_total)))}")
    if args.no_figures:
        return 0
    figures = out / FIGURES
    plots.ram_heatmap(
        config.scores, top_k=args.top_k, title=f"RAM, {model_id} on {name}", path=figures / "ram_heatmap.png"
    )
    plots.ram_heatmap(
        vision.mean(),
        top_k=args.top_k,
        label="vision mass",
        title=f"Attention on all visual tokens, {model_id} on {name}",
        path=figures / "vision_heatmap.png",
    )
    written = ["ram_heatmap.png", "vision_heatmap.png"]
    record = next((r for r in records if not r.is_video and r.boxes), None)
    if record is not None:
        _overlay(model, builder, record, config, figures / "overlay_top_head.png", device)
        written.append("overlay_top_head.png")
    print(f"wrote {', '.join(str(figures / w) for w in written)}")
    return 0


def _overlay(model, builder, record, config, path: Path, device) -> None:
    """Attention of the best head on the first boxed image of ``record``, laid over that image."""
    from ..analysis import plots
    from ..analysis.probe import measure_ram
    from ..analysis.tokens import image_token_grid

    sample = builder(record)
    image = min(record.boxes)
    positions, grid = image_token_grid(builder.family, sample.inputs["input_ids"], sample.layout, image)
    result = measure_ram(
        model, _to_device(sample.inputs, device), sample.query_index, sample.target_index, key_attention=True
    )
    layer, q_head = (int(v) for v in config.ranking()[0])
    mass = result.key_attention[layer, q_head, positions]
    plots.attention_overlay(
        record.images[image],
        mass,
        grid,
        bbox=record.boxes[image],
        title=f"L{layer}H{q_head} (top RAM head) on {record.id}",
        path=path,
    )


def run_ablate(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import plots
    from ..analysis.ablation import ablation_sweep
    from ..heads.config import HeadConfig

    config = HeadConfig.from_pretrained(args.heads)
    records = _load_records(args)
    model, builder, model_id = _load_model(args)
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    samples = [builder(r) for r in _progress(records, len(records), "encode")]
    device = next(model.parameters()).device

    def predictions(m) -> list[int]:
        with torch.no_grad():
            return [int(m(**_to_device(s.inputs, device)).logits[0, -1].argmax()) for s in samples]

    # Records carry evidence locations, not gold answers: accuracy is the share of samples whose
    # greedy next token is unchanged from the unablated model's.
    reference = predictions(model)

    def accuracy(m) -> float:
        return sum(a == b for a, b in zip(predictions(m), reference)) / max(1, len(samples))

    values = ablation_sweep(
        model, config, ks, accuracy, strategies=modes, seed=args.seed, random_repeats=args.random_seeds
    )
    curves = {mode: dict(zip(ks, accs)) for mode, accs in values.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [(mode, k, acc) for mode, points in curves.items() for k, acc in sorted(points.items())]
    _write_csv(out / "curves.csv", ["mode", "k", "accuracy"], rows)
    plots.ablation_curves(curves, title=f"Head ablation, {model_id}", path=out / "ablation.png")
    print(f"wrote {out / 'curves.csv'} and {out / 'ablation.png'}")
    return 0


def run_stability(args: argparse.Namespace) -> int:
    import torch

    from ..heads.config import HeadConfig, head_label

    if len(args.configs) < 2:
        raise SystemExit(f"stability needs at least two head configs, got {len(args.configs)}")
    configs = [HeadConfig.from_pretrained(p) for p in args.configs]
    names = args.names.split(",") if args.names else [Path(p).name for p in args.configs]
    if len(names) != len(configs):
        raise SystemExit(f"--names has {len(names)} entries for {len(configs)} head configs")
    shapes = {(c.num_layers, c.num_q_heads) for c in configs}
    if len(shapes) != 1:
        raise SystemExit(f"head configs come from different models: shapes {sorted(shapes)}")
    from ..analysis import plots
    from ..analysis.metrics import spearman_matrix, stability_counts

    maps = [c.scores for c in configs]
    _, rho = spearman_matrix(dict(zip(names, maps)))
    counts = stability_counts(maps, percentile=args.percentile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(
        out / "spearman.csv",
        ["task", *names],
        [[n, *(f"{v:.6f}" for v in row)] for n, row in zip(names, rho.tolist(), strict=True)],
    )
    layers, heads = counts.shape
    _write_csv(
        out / "stability_counts.csv",
        ["head", "layer", "q_head", "tasks"],
        [[head_label(layer, h), layer, h, int(counts[layer, h])] for layer in range(layers) for h in range(heads)],
    )
    shared_cells = (counts == len(maps)).nonzero().tolist()
    shared = [head_label(layer, h) for layer, h in shared_cells]
    summary = {
        "tasks": names,
        "percentile": args.percentile,
        "spearman": rho.tolist(),
        "heads_in_all_tasks": shared,
        "shared_heads_per_layer": torch.bincount(
            torch.tensor([layer for layer, _ in shared_cells], dtype=torch.long), minlength=layers
        ).tolist(),
    }
    (out / "stability.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plots.spearman_heatmap(rho, names, path=out / "spearman.png")
    plots.stability_map(counts, num_tasks=len(maps), path=out / "stability.png")
    print(f"{len(shared)} heads are in the top set of all {len(maps)} tasks; wrote {out}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from ..analysis import plots
    from ..heads.config import HeadConfig

    config = HeadConfig.from_pretrained(args.config)
    out = Path(args.out) if args.out else Path(args.config) / FIGURES
    model = config.model_id or Path(args.config).name
    written = [out / f"{config.metric}_heatmap.png"]
    plots.ram_heatmap(
        config.scores,
        top_k=args.top_k,
        label=config.metric.upper(),
        title=f"{config.metric.upper()}, {model}",
        path=written[0],
    )
    for name, scores in sorted(config.dataset_scores.items()):
        path = out / f"{config.metric}_heatmap_{_safe(name)}.png"
        plots.ram_heatmap(
            scores,
            top_k=args.top_k,
            label=config.metric.upper(),
            title=f"{config.metric.upper()}, {model} on {name}",
            path=path,
        )
        written.append(path)
    print("wrote " + ", ".join(os.fspath(p) for p in written))
    return 0


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
