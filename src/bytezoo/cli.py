"""The ``bytezoo`` command. Each subcommand lives with the package it drives; this file only wires them up.

A subpackage exposes ``register(subparsers)`` in its ``cli`` module, adding its subcommands; each subcommand sets
``func`` (called with the parsed arguments, returning an exit code). Heavy imports happen inside those functions so
``bytezoo --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Modules that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = (
    "bytezoo.demo",
    "bytezoo.data.cli",
    "bytezoo.zoo.cli",
    "bytezoo.zoo.convert.cli",
    "bytezoo.pretrain.cli",
    "bytezoo.transfer.cli",
    "bytezoo.finetune.cli",
    "bytezoo.hub.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bytezoo",
        description="Byte-level mLSTM language models: zoo, pretraining, sentiment transfer, hub.",
    )
    parser.add_argument("--version", action="version", version=f"bytezoo {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a real missing dependency inside the module: surface it
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
