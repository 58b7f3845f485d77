"""Run named benchmark configurations: ``python -m benchmarks.run NAME [NAME ...]``.

    python -m benchmarks.run --list                      # the registry (benchmarks/registry.py)
    python -m benchmarks.run e2e-cpu memory-cpu          # CPU, a few minutes on 2 cores
    python -m benchmarks.run e2e-qwen3vl-8b --lengths 8192 131072 --dense-fractions 0.05
    python -m benchmarks.run e2e-qwen3vl-8b --ideal      # FLOP split and ideal speedups only

Each entry appends JSON rows to <results-dir>/<entry.results>.jsonl (device, versions, git
sha, config, min / median / mean seconds, peak memory, OOM flags) and, for latency entries,
redraws <entry.results>.png with benchmarks/plot.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import torch

from . import attention_op, e2e_prefill, memory, plot
from .common import RESULTS_DIR
from .registry import ENTRIES, AttentionOp, E2EPrefill, OomBoundary, RamMemory, describe


def override(entry, args):
    """The entry with the command line's --lengths / --dense-fractions / --warmup / --repeats / --head-seed applied."""
    names = {f.name for f in dataclasses.fields(entry)}
    changes = {
        "lengths": tuple(args.lengths) if args.lengths else None,
        "dense_fractions": tuple(args.dense_fractions) if args.dense_fractions else None,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "head_seed": args.head_seed,
    }
    return dataclasses.replace(entry, **{k: v for k, v in changes.items() if v is not None and k in names})


def run_attention_op(entry: AttentionOp, args, results: pathlib.Path) -> None:
    argv = ["--preset", entry.preset, "--results", str(results)]
    for flag, values in (("--lengths", args.lengths), ("--dense-fractions", args.dense_fractions)):
        if values:
            argv += [flag, *map(str, values)]
    for flag, value in (("--warmup", args.warmup), ("--repeats", args.repeats)):
        if value is not None:
            argv += [flag, str(value)]
    attention_op.main(argv)


def run_entry(name: str, args) -> None:
    entry = ENTRIES[name]
    results = args.results_dir / f"{entry.results}.jsonl"
    if isinstance(entry, AttentionOp):
        run_attention_op(entry, args, results)
    else:
        entry = override(entry, args)
        if isinstance(entry, E2EPrefill):
            e2e_prefill.run(name, entry, results)
        elif isinstance(entry, RamMemory):
            memory.run_ram(name, entry, results)
        elif isinstance(entry, OomBoundary):
            memory.run_oom(name, entry, results)
            return  # a table of boundaries, nothing to plot
    if not args.no_plot:
        print(f"wrote {results} and {plot.plot(plot.read_rows(results), results.with_suffix('.png'))}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="registry entries to run, in order")
    parser.add_argument("--list", action="store_true", help="list the registry and exit")
    parser.add_argument("--ideal", action="store_true", help="print the ideal speedups of e2e entries; run nothing")
    parser.add_argument("--lengths", type=int, nargs="+", help="context lengths (default: the entry's)")
    parser.add_argument("--dense-fractions", type=float, nargs="+", help="shares of q_heads kept dense")
    parser.add_argument("--warmup", type=int, help="untimed passes per method (default: the entry's)")
    parser.add_argument("--repeats", type=int, help="timed passes per method (default: the entry's)")
    parser.add_argument("--head-seed", type=int, help="seed of the random head scores (default: the entry's)")
    parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS_DIR, help="where rows and plots go")
    parser.add_argument("--no-plot", action="store_true", help="write rows only")
    args = parser.parse_args(argv)

    if args.list or not args.names:
        print("\n".join(describe(name) for name in ENTRIES))
        return
    unknown = [n for n in args.names if n not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {unknown}; --list shows the {len(ENTRIES)} registered ones")
    if args.ideal:
        for name in args.names:
            if isinstance(ENTRIES[name], E2EPrefill):
                e2e_prefill.print_ideal(name, override(ENTRIES[name], args))
        return
    needs_gpu = [n for n in args.names if ENTRIES[n].device == "cuda"]
    if needs_gpu and not torch.cuda.is_available():
        parser.error(
            f"{needs_gpu} need a CUDA device; CPU entries: "
            + ", ".join(n for n, e in ENTRIES.items() if e.device == "cpu")
        )
    for name in args.names:
        run_entry(name, args)


if __name__ == "__main__":
    main()
