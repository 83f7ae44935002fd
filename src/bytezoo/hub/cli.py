"""``bytezoo hub push | pull | ls``: the hub from the command line.

Examples::

    bytezoo hub push runs/mlstm-256 s3://team-models/mlstm-256 --tag paper
    bytezoo hub ls s3://team-models/mlstm-256
    bytezoo hub pull s3://team-models/mlstm-256@paper ./mlstm-256
    BYTEZOO_OFFLINE=1 bytezoo hub pull s3://team-models/mlstm-256@paper
    bytezoo hub push runs/mlstm-256 hf://someone/mlstm-256 --tag v1   # one commit and a git tag on the Hub
    bytezoo hub pull hf://someone/mlstm-256@v1

Credentials come from the environment (``AWS_ACCESS_KEY_ID``, ``HF_TOKEN``, ...), ``hf auth login``, or fsspec's
configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec/conf.json``); there are deliberately no credential
options. ``HF_ENDPOINT`` points ``hf://`` at another server speaking the Hub's API.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging


def register(subparsers) -> None:
    hub = subparsers.add_parser(
        "hub",
        help="share checkpoints and classifiers through any fsspec URL",
        description="Push, pull and list versions of checkpoints and classifiers on a hub (any fsspec URL).",
    )
    hub.set_defaults(func=lambda args: (hub.print_help(), 2)[1])
    commands = hub.add_subparsers(title="hub commands", metavar="COMMAND")

    push = commands.add_parser("push", help="publish a directory as a new immutable version")
    push.add_argument("directory", help="local directory with safetensors/JSON/text files")
    push.add_argument("url", help="repository URL, e.g. s3://bucket/models/mlstm-256 or a local folder")
    push.add_argument("--tag", help="also point this tag at the new version (besides 'latest'; on hf://, a git tag "
                                    "on the push's commit)")
    push.add_argument("--move-tag", action="store_true",
                      help="move --tag if it exists already and points to other files (refused otherwise; 'latest' "
                           "always moves)")
    push.add_argument("--no-card", action="store_true", help="do not generate README.md (the model card)")
    push.add_argument("--follow-symlinks", action="store_true",
                      help="share what symbolic links pointing out of DIRECTORY point to (refused by default: their "
                           "bytes would become readable by everyone who can pull)")
    push.set_defaults(func=_push)

    pull = commands.add_parser("pull", help="fetch and verify a version into the cache (and optionally a directory)")
    pull.add_argument("ref", help="URL, URL@TAG or URL@VERSION (default tag: latest)")
    pull.add_argument("directory", nargs="?", help="copy the files here (default: print the cached directory)")
    pull.add_argument("--offline", action="store_true", help="serve from the cache only (also BYTEZOO_OFFLINE=1)")
    pull.set_defaults(func=_pull)

    ls = commands.add_parser("ls", help="list the versions and tags of a repository")
    ls.add_argument("url", help="repository URL")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_ls)


def _push(args: argparse.Namespace) -> int:
    from . import api

    return _run(lambda: print(api.push(args.directory, args.url, tag=args.tag, model_card=not args.no_card,
                                       follow_symlinks=args.follow_symlinks, move_tag=args.move_tag)))


def _pull(args: argparse.Namespace) -> int:
    from . import api

    return _run(lambda: print(api.pull(args.ref, args.directory, offline=args.offline)))


def _ls(args: argparse.Namespace) -> int:
    from bytezoo.untrusted.names import printable

    from . import api

    def show():
        versions = api.ls(args.url)
        if args.json:  # JSON escapes control characters itself
            print(json.dumps([dataclasses.asdict(info) for info in versions], indent=1))
            return
        print(f"{'VERSION':<16}  {'CREATED':<27}  {'FILES':>5}  {'BYTES':>14}  TAGS")
        for info in versions:  # what a hub wrote is shown with control characters escaped, never as terminal escapes
            print(f"{printable(info.version):<16}  {printable(info.created):<27}  {info.files:>5}  {info.size:>14,}  "
                  f"{printable(', '.join(info.tags))}")

    return _run(show)


def _run(action) -> int:
    """Run a hub action. A hub error is a ByteZooError, which `bytezoo` prints on one line (bytezoo.cli.main); so is a
    malformed tag or reference typed on the command line, which the parsers report as a plain ValueError."""
    from bytezoo.errors import ByteZooError

    from .errors import HubError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        action()
    except ValueError as error:
        if isinstance(error, ByteZooError):
            raise
        raise HubError(str(error)) from error
    return 0
