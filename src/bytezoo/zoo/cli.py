"""``bytezoo models``: what the zoo holds."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the zoo's presets",
                                   description="List the zoo's registered presets with their sizes and provenance.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mlstm-*' (default: all)")
    parser.set_defaults(func=_list_models)


def _list_models(args: argparse.Namespace) -> int:
    import torch

    from .registry import create_model, get_model_info, list_models

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    print(f"{'name':<14} {'parameters':>12}  description")
    for name in names:
        info = get_model_info(name)
        with torch.device("meta"):  # count parameters without allocating them
            count = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:<14} {count:>12,}  {info.description}")
        for label, value in (("paper", info.paper), ("weights", info.source), ("license", info.license)):
            if value:
                print(f"{'':<14} {'':>12}  {label}: {value}")
    return 0
