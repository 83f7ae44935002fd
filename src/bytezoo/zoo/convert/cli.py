"""``bytezoo convert openai SRC_DIR OUT_DIR`` and ``bytezoo convert nvidia CKPT OUT_DIR``."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert an original OpenAI / NVIDIA mLSTM checkpoint to a bytezoo checkpoint",
        description="Convert the original released mLSTM checkpoints to bytezoo checkpoints (safetensors).",
    )
    sources = convert.add_subparsers(title="sources", metavar="SOURCE")

    openai = sources.add_parser(
        "openai",
        help="the 15 .npy files of Radford et al. 2017",
        description="Convert OpenAI's released parameters (0.npy … 14.npy, github.com/openai/generating-reviews-"
        "discovering-sentiment) into a bytezoo checkpoint. Sizes are read from the arrays' shapes.",
    )
    openai.add_argument("src_dir", metavar="SRC_DIR", help="folder (local path or fsspec URL) holding 0.npy … 14.npy")
    openai.add_argument("out_dir", metavar="OUT_DIR", help="local output directory (must be new or empty)")
    openai.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    openai.set_defaults(func=_convert_openai)

    nvidia = sources.add_parser(
        "nvidia",
        help="an NVIDIA sentiment-discovery mLSTM checkpoint (.pt)",
        description="Convert an NVIDIA sentiment-discovery mLSTM language-model checkpoint (PyTorch pickle, fp32 or "
        "fp16, possibly weight-normalised) into a bytezoo checkpoint. The file is read with "
        "torch.load(weights_only=True), which cannot run code.",
    )
    nvidia.add_argument("ckpt", metavar="CKPT", help="checkpoint file (local path or fsspec URL)")
    nvidia.add_argument("out_dir", metavar="OUT_DIR", help="local output directory (must be new or empty)")
    nvidia.add_argument(
        "--trust-pickle",
        action="store_true",
        help="if the safe loader refuses the file, load it with the full unpickler, which can execute arbitrary code: "
        "only for files from a source you trust",
    )
    nvidia.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    nvidia.set_defaults(func=_convert_nvidia)

    convert.set_defaults(func=lambda args: _missing_source(convert))


def _missing_source(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _report(model, out_dir: str) -> None:
    config = model.config
    print(
        f"wrote {out_dir}: mLSTM, {config.num_layers} layer(s) of {config.hidden_size} units, "
        f"{config.embedding_size}-d embedding, vocab {config.vocab_size}, weight_norm={config.weight_norm}"
    )


def _convert_openai(args: argparse.Namespace) -> int:
    from . import convert_openai

    # a ConversionError: one line (bytezoo.cli)
    model = convert_openai(args.src_dir, args.out_dir, overwrite=args.overwrite)
    _report(model, args.out_dir)
    return 0


def _convert_nvidia(args: argparse.Namespace) -> int:
    from . import convert_nvidia

    model = convert_nvidia(args.ckpt, args.out_dir, trust_pickle=args.trust_pickle, overwrite=args.overwrite)
    _report(model, args.out_dir)
    return 0
