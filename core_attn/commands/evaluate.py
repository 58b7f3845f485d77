"""``core-attn sweep`` and ``core-attn lmms-tasks``: the lmms-eval side (needs ``core-attn[eval]``)."""

from __future__ import annotations

import argparse
import pathlib


def _fraction_or_count(text: str):
    value = float(text)
    if value >= 1.0 and value.is_integer() and "." not in text:
        return int(value)  # "8" -> 8 heads; "1.0" stays the fraction 1.0
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="evaluate an lmms-eval task at several dense fractions against the dense baseline",
        description="Runs lmms-eval on one task group with the dense baseline and each --dense value, "
        "and writes one table (markdown, CSV, JSON) with every category's score, its difference "
        "from dense, and the measured prefill time.",
    )
    p.add_argument("--model", default="core_qwen3_vl", help="a core_* lmms-eval model (default: %(default)s)")
    p.add_argument("--model-args", default="", help='lmms-eval model_args without dense, e.g. "pretrained=Qwen/Qwen3-VL-8B-Instruct,head_config=org/repo"')
    p.add_argument("--tasks", default="core_mlvu", choices=["core_mlvu", "core_videomme"], help="task group (default: %(default)s)")
    p.add_argument("--dense", type=_fraction_or_count, nargs="+", default=[0.25, 0.1, 0.05, 0.025], help="dense fractions (or head counts)")
    p.add_argument("--include-path", help="task folder (default: the one core-attn ships)")
    p.add_argument("--limit", type=float, help="questions per subtask (an int) or a fraction, for quick runs")
    p.add_argument("--device", help="device passed to the model class (e.g. cuda:0, cpu)")
    p.add_argument("--output", default="sweep", help="output folder (default: %(default)s)")
    p.set_defaults(func=_sweep)

    t = sub.add_parser(
        "lmms-tasks",
        help="print the folder to pass to lmms-eval as --include_path",
        description="Without options: prints core-attn's task folder (core_mlvu, core_videomme). With "
        "--ram DIR: writes the core_ram_<kind> RAM-extraction tasks to DIR over the bundled synthetic "
        "samples, or over --records KIND=records.jsonl, and prints DIR.",
    )
    t.add_argument("--ram", metavar="DIR", help="write the core_ram_<kind> tasks to DIR")
    t.add_argument("--records", nargs="+", metavar="KIND=PATH", help="records.jsonl per kind (default: bundled samples)")
    t.set_defaults(func=_tasks)


def _sweep(args: argparse.Namespace) -> int:
    try:
        import lmms_eval  # noqa: F401
    except ModuleNotFoundError:
        raise SystemExit('core-attn sweep needs lmms-eval: pip install "core-attn[eval]" (see the README)') from None
    from core_attn_eval.sweep import run_sweep

    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    run_sweep(
        args.model,
        args.model_args,
        args.tasks,
        args.dense,
        include_path=args.include_path,
        limit=limit,
        output=args.output,
        device=args.device,
    )
    print((pathlib.Path(args.output) / f"{args.tasks}.md").read_text())
    print(f"wrote {args.output}/{args.tasks}.md, .csv, .json")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from core_attn_eval.tasks import ram_tasks, tasks_path

    if args.ram is None:
        if args.records:
            raise SystemExit("--records needs --ram DIR")
        print(tasks_path())
        return 0
    records = None
    if args.records:
        pairs = [item.partition("=") for item in args.records]
        bad = [k for k, sep, v in pairs if not sep or not v]
        if bad:
            raise SystemExit(f"--records takes KIND=PATH items, got {bad}")
        records = {k: v for k, _, v in pairs}
    print(ram_tasks(args.ram, records))
    return 0
