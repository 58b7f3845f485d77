"""`core-attn push | show`: publish a head config on the Hugging Face Hub and inspect one."""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="upload a head config folder to a Hugging Face Hub repo (with a model card and heatmap)",
        description="Uploads head_config.json, head_scores.safetensors, a README.md model card and a heatmap "
        "to REPO_ID in one commit, creating the repo if needed. Text you wrote in the repo's README.md outside "
        "the generated block is kept. Uses your Hugging Face login or HF_TOKEN.",
    )
    p.add_argument("folder", metavar="FOLDER", help="head config folder (from `core-attn extract` or save_pretrained)")
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub repo id, e.g. org/Qwen3-VL-8B-Instruct-core-heads")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its own)")
    p.add_argument("--revision", help="branch to push to (created from main if missing)")
    p.add_argument("--commit-message", help="default: 'Upload core-attn head config for MODEL'")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--no-heatmap", action="store_true", help="do not draw head_scores.png")
    p.add_argument("--top-k", type=int, default=20, help="heads listed in the model card (default: 20)")
    p.set_defaults(func=run_push)

    p = sub.add_parser(
        "show",
        help="print a summary and the top heads of a head config (folder, Hub repo or indexed model id)",
        description="REPO_OR_FOLDER is a local folder, a model id listed in core-attn's index of published "
        "rankings, or a Hub head config repo id (in that order). Only the json and safetensors files are fetched.",
    )
    p.add_argument("target", metavar="REPO_OR_FOLDER", nargs="?", help="folder, model id or Hub repo id")
    p.add_argument("--revision", help="branch, tag or commit of a Hub repo")
    p.add_argument("--top", type=int, default=10, help="number of top heads to print (default: 10)")
    p.add_argument("--list", action="store_true", help="list the index of published rankings")
    p.set_defaults(func=run_show)


def run_push(args: argparse.Namespace) -> int:
    from ..heads.hub import push_head_config

    if not os.path.isdir(args.folder):
        raise SystemExit(f"core-attn push: no head config folder at {args.folder!r}")
    info = push_head_config(
        args.folder,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        heatmap=not args.no_heatmap,
        top_k=args.top_k,
    )
    repo_id = getattr(getattr(info, "repo_url", None), "repo_id", None) or args.repo_id
    print(f"pushed {args.folder} -> {repo_id}")
    print(f"commit: {info.commit_url}")
    if getattr(info, "pr_url", None):
        print(f"pull request: {info.pr_url}")
    from ..heads.config import HeadConfig

    config = HeadConfig.from_pretrained(args.folder)
    if config.model_id:
        entry = {
            "repo_id": repo_id,
            "revision": info.oid,
            "method": config.metric,
            "how": config.provenance.get("command", "describe how the scores were obtained"),
        }
        print("index entry (core_attn/head_configs/index.json, under \"models\"):")
        print(json.dumps({config.model_id: entry}, indent=2, sort_keys=True))
    return 0


def _load(args: argparse.Namespace):
    """(HeadConfig, folder, where) for a folder, an index model id or a Hub repo id."""
    from ..heads.config import HeadConfig
    from ..heads.hub import resolve_folder
    from ..heads.registry import load_index

    target = args.target
    if not os.path.isdir(target) and not args.revision:
        entry = load_index().get(target)
        if entry is not None:
            folder = entry.path if entry.path is not None else resolve_folder(
                entry.repo_id, revision=entry.revision, subfolder=entry.subfolder
            )
            where = f"published ranking of {target} ({entry.method}) from {entry.source}"
            return HeadConfig.from_pretrained(os.fspath(folder)), os.fspath(folder), where
    folder = resolve_folder(target, revision=args.revision)
    where = target if os.path.isdir(target) else f"{target} (Hub, revision {args.revision or 'main'})"
    return HeadConfig.from_pretrained(folder), folder, where


def summary(config, folder: str | None = None, where: str | None = None, top: int = 10) -> str:
    """Readable summary of a HeadConfig: shape, metric, provenance and the top heads."""
    from ..heads.card import sample_counts, top_heads_rows
    from ..heads.config import CONFIG_NAME

    stamp = {}
    if folder is not None and os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as f:
            stamp = json.load(f)
    model = config.model_id or "(not recorded)"
    if config.model_revision:
        model += f" @ {config.model_revision}"
    lines = []
    if where:
        lines.append(f"head config : {where}")
    lines += [
        f"model       : {model}",
        f"heads       : {config.num_layers} layers x {config.num_q_heads} q_heads ({config.num_kv_heads} kv_heads) "
        f"= {config.num_heads_total} q_heads",
        f"metric      : {config.metric}",
        f"streaming   : sink {config.sink_size}, window {config.window_size}",
    ]
    counts = sample_counts(config)
    if counts:
        lines.append(
            "datasets    : " + ", ".join(f"{k} ({v} samples)" if v is not None else k for k, v in counts.items())
        )
    if stamp:
        lines.append(f"written by  : {stamp.get('library', '?')} {stamp.get('library_version', '?')}, "
                     f"format {stamp.get('format_version', '?')}")
    rows = top_heads_rows(config, min(top, config.num_heads_total))
    lines.append(f"top {len(rows)} heads:")
    lines.append("   rank  head      kv_head  score")
    lines += [f"   {r:>4}  {label:<8}  {kv:>7}  {score:.4g}" for r, label, _, _, kv, score in rows]
    return "\n".join(lines)


def run_show(args: argparse.Namespace) -> int:
    from ..heads.registry import bundled_dir, list_entries

    if args.list or not args.target:
        entries = list_entries()
        print(f"published head rankings ({bundled_dir() / 'index.json'}):")
        for e in entries:
            print(f"  {e.model_id:<40} {e.method:<8} {e.source}")
        if not args.target:
            return 0
    config, folder, where = _load(args)
    print(summary(config, folder, where, top=args.top))
    return 0
