"""The ``core-attn`` command: parses arguments and calls the library (see core_attn/commands/)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers) and sets a handler with set_defaults(func=...).
COMMAND_MODULES = (
    "core_attn.commands.demo",
    "core_attn.commands.hub",
    "core_attn.commands.analysis",
    "core_attn.commands.evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="core-attn",
        description="CoRe heads for multimodal LLMs: measure, publish and exploit retrieval heads.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command group not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["demo", *argv]  # bare `core-attn [demo options]` runs the demo
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
