"""``bytezoo data``: pack and verify corpora for pretraining, list and download the standard sentiment sets, prepare
the embedded default. Heavy imports happen inside the handlers, so ``--help`` stays fast. Their errors (a
:class:`~bytezoo.errors.ByteZooError`) are printed on one line by :func:`bytezoo.cli.main`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .datasets import DATASETS, download
from .embedded import EMBEDDED_PACKAGE, prepare_embedded_default
from .layout import MARKER

PACK_DESCRIPTION = """\
Stream text sources once into a packed corpus at OUTPUT (a folder or any fsspec URL: s3://, gs://, ...):
flat byte shards plus index.json, written last. `bytezoo pretrain --data OUTPUT` then has each process read
only the bytes of its own streams (memory-mapped locally, ranged reads remotely), with no pass over the corpus
at start-up. Pack a large corpus once, before a multi-process run; `pretrain` given raw files packs them itself
into OUTPUT/corpus on the main process while the others wait.

Sources: paths, globs or URLs; .txt (raw bytes), .jsonl/.json/.ndjson, .csv, .tsv, each optionally compressed
(.gz, .bz2, .xz, .zst). A record file contributes its text field + "\\n" per record; the recurrent state resets
where each source begins. Packing the same sources again gives identical shards."""


def add_parsers(commands: argparse._SubParsersAction) -> None:
    packing = commands.add_parser("pack", help="pack text sources once into byte shards + an index, for pretraining",
                                  description=PACK_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    packing.add_argument("sources", nargs="+", metavar="SRC", help="a path, glob or fsspec URL (repeatable)")
    packing.add_argument("--output", required=True, metavar="URL", help="where the packed corpus goes")
    packing.add_argument("--text-field", help="the text column (CSV/TSV) or key (JSON lines); default: the first of "
                                              "text, sentence, review, content, body")
    packing.add_argument("--shard-mb", type=int, default=256, help="shard size in MiB (default: 256)")
    packing.add_argument("--allow-binary", action="store_true",
                         help="pack a source even if it does not look like text (NUL bytes, mostly invalid UTF-8)")
    packing.add_argument("--overwrite", action="store_true", help="replace a packed corpus already at OUTPUT")
    packing.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    packing.set_defaults(func=_pack)

    verifying = commands.add_parser("verify", help="check every shard of a packed corpus against its sha256",
                                    description="Read a packed corpus in full and check each shard's sha256 against "
                                                "its index (sizes and block checksums are checked on every use "
                                                "anyway).")
    verifying.add_argument("url", help="the packed corpus")
    verifying.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    verifying.set_defaults(func=_verify)


def _pack(args: argparse.Namespace) -> int:
    import time

    from bytezoo.redaction import redact_url

    from .packed import pack

    started = time.perf_counter()
    index = pack(args.sources, args.output, text_field=args.text_field, shard_bytes=args.shard_mb << 20,
                 allow_binary=args.allow_binary, overwrite=args.overwrite, progress=args.progress)
    seconds = time.perf_counter() - started
    print(f"packed {len(index['sources'])} source(s), {index['total_bytes']:,} bytes in {len(index['shards'])} "
          f"shard(s) into {redact_url(args.output)} ({index['total_bytes'] / max(seconds, 1e-9) / 1e6:.1f} MB/s)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from bytezoo.redaction import redact_url

    from .packed import PackedCorpus

    corpus = PackedCorpus.open(args.url)
    corpus.verify(progress=args.progress)
    print(f"{redact_url(args.url)}: {len(corpus.index['shards'])} shard(s), {corpus.total_bytes:,} bytes: every "
          "sha256 matches")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``bytezoo data`` with ``list``, ``download``, ``prepare-default``, ``pack`` and ``verify``."""
    parser = subparsers.add_parser(
        "data",
        help="pack corpora for pretraining, prepare the embedded default data set, download standard sentiment sets",
        description="Prepare the embedded default data set (offline) or download standard sentiment sets with pinned "
                    "checksums.",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    commands = parser.add_subparsers(title="data commands", metavar="COMMAND")

    listing = commands.add_parser("list", help="the data sets 'download' knows: sizes, sources, checksums",
                                  description="List the data sets 'bytezoo data download' knows.")
    listing.set_defaults(func=_list_handler)

    fetching = commands.add_parser(
        "download",
        help="download, verify and convert a standard data set",
        description="Download a standard data set, verify its pinned checksum and write train/dev/test.tsv (+ "
                    "lm_train.txt).",
    )
    fetching.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    fetching.add_argument("--dir", type=Path, help="where to write the files (default: $BYTEZOO_CACHE/data/NAME)")
    fetching.add_argument("--url", help="fetch from this fsspec URL (a mirror or a local copy) instead; the pinned "
                                        "checksum still applies")
    fetching.set_defaults(func=_download_handler)

    default = commands.add_parser(
        "prepare-default",
        help="write the embedded default data set (drug reviews) and print its paths",
        description=f"Write the embedded default data set, 978 drug reviews from the {EMBEDDED_PACKAGE} package, and "
                    "print where its files are.",
    )
    default.add_argument("--dir", type=Path, help="where to write the files (default: $BYTEZOO_CACHE/data/drugreview)")
    default.set_defaults(func=_prepare_default_handler)

    add_parsers(commands)  # pack, verify


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _list_handler(args: argparse.Namespace) -> int:
    for spec in DATASETS.values():
        print(f"{spec.name}  ({spec.download_size})  {spec.description}")
        print(f"    source:  {spec.url}")
        print(f"    pinned:  {', '.join(spec.checksums)}")
        print(f"    splits:  {spec.splits}")
        if spec.notes:
            print(f"    note:    {spec.notes}")
    print(f"embedded default (no download): drug reviews from the {EMBEDDED_PACKAGE} package; 'bytezoo data "
          "prepare-default'")
    return 0


def _download_handler(args: argparse.Namespace) -> int:
    path = download(args.name, args.dir, url=args.url)
    record = json.loads((path / MARKER).read_text(encoding="utf-8"))
    for name, entry in record["files"].items():
        print(f"{path / name}  ({entry['rows']:,} {'documents' if name.endswith('.txt') else 'rows'})")
    return 0


def _prepare_default_handler(args: argparse.Namespace) -> int:
    default = prepare_embedded_default(args.dir)
    print(default.describe())
    return 0
