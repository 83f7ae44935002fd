"""The ``bytezoo`` command. Each subcommand lives with the package it drives; this file only wires them up.

A subpackage exposes ``register(subparsers)`` in its ``cli`` module, adding its subcommands; each subcommand sets
``func`` (called with the parsed arguments, returning an exit code). Heavy imports happen inside those functions so
``bytezoo --help`` stays fast.

Threads: ``--threads N`` (anywhere on the line) or ``BYTEZOO_NUM_THREADS`` fixes torch's CPU thread count; without
either, the library measures the cores other processes leave free (:mod:`bytezoo.threads`), again while long work
runs. Before any subcommand imports torch, the OpenMP wait policy is chosen from the load unless the user set one:
``OMP_WAIT_POLICY=PASSIVE`` beside busy cores (spinning threads collapsed throughput 3-24x on a 2-core machine with one
busy core), a short spin on an idle one (sleeping threads cost 1.5-2.4x there; benchmarks/results/threads.md).

Errors: a user's mistake raises a :class:`~bytezoo.errors.ByteZooError` wherever it is found; :func:`main` catches it
here, once, and prints one line (``bytezoo SUBCOMMAND: error: MESSAGE``) with exit code 2, as it does for a bad
option. ``--debug`` (anywhere on the line) or ``BYTEZOO_DEBUG=1`` prints the traceback as well. A failed remote request
that escaped its conversion (a status, a refused connection, a timeout from fsspec, aiohttp or botocore) is told the
same way (:func:`bytezoo.untrusted.network.describe`). Any other exception is a bug and keeps its traceback. Whatever
is printed here is redacted first: no credential or query string of a URL reaches the terminal
(:mod:`bytezoo.redaction`).

Records: ``--max-record-mb N`` (anywhere on the line) or ``BYTEZOO_MAX_RECORD_MB`` sets the largest record (a JSON line,
a CSV/TSV row, an archive member) any command reads, 64 MiB by default (:mod:`bytezoo.untrusted.limits`).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
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
    "bytezoo.serving",
    "bytezoo.finetune.cli",
    "bytezoo.hub.cli",
)
DEBUG_ENV = "BYTEZOO_DEBUG"  # "1": tracebacks for user errors too
THREADS_ENV = "BYTEZOO_NUM_THREADS"  # the thread count bytezoo.threads applies; --threads sets it
THREADS_HELP = (f"CPU threads for torch (default: the cores other processes leave free, measured at start; "
                f"0: PyTorch's default; also {THREADS_ENV})")
RECORD_LIMIT_ENV = "BYTEZOO_MAX_RECORD_MB"  # bytezoo.untrusted.limits reads it; --max-record-mb sets it
RECORD_LIMIT_HELP = (f"the largest record (a JSON line, a CSV/TSV row, an archive member) to read, in MiB (default: "
                     f"64; also {RECORD_LIMIT_ENV})")
USER_ERROR_EXIT_CODE = 2  # argparse's code for a bad option; the same for a bad file, key or folder


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (naming ``--help``) instead of the usage block and the error."""

    def error(self, message: str):
        self.exit(USER_ERROR_EXIT_CODE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bytezoo",
        description="Byte-level mLSTM language models: zoo, pretraining, sentiment transfer, hub.",
    )
    parser.add_argument("--version", action="version", version=f"bytezoo {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"print the traceback of an error, not just its line (also {DEBUG_ENV}=1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    parser.add_argument("--max-record-mb", type=float, default=None, metavar="N", help=RECORD_LIMIT_HELP)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a real missing dependency inside the module: surface it
                raise
            continue
        module.register(subparsers)
    _equip_subcommands(parser)
    return parser


def _equip_subcommands(parser: argparse.ArgumentParser) -> None:
    """Every (nested) subcommand learns its name, for error lines, and accepts ``--debug`` after its own options."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                subparser.set_defaults(command=subparser.prog)  # the innermost subcommand's default wins
                if "--debug" not in subparser._option_string_actions:
                    subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                           help=argparse.SUPPRESS)
                if "--threads" not in subparser._option_string_actions:
                    subparser.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                                           help=THREADS_HELP)
                if "--max-record-mb" not in subparser._option_string_actions:
                    subparser.add_argument("--max-record-mb", type=float, default=argparse.SUPPRESS, metavar="N",
                                           help=RECORD_LIMIT_HELP)
                _equip_subcommands(subparser)


def _debugging(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return USER_ERROR_EXIT_CODE
    from .errors import ByteZooError, one_line
    from .redaction import redact_text, secrets_in
    from .threads import ask_for, openmp_wait_before_torch
    from .untrusted.network import describe

    if getattr(args, "threads", None) is not None:  # the library's thread policy reads it (bytezoo.threads)
        if args.threads < 0:
            parser.error(f"--threads must be >= 0 (0: PyTorch's default); got {args.threads}")
        os.environ[THREADS_ENV] = str(args.threads)  # for what this process starts
        ask_for(args.threads, "--threads")  # named as the flag, not the variable, in the start line
    if getattr(args, "max_record_mb", None) is not None:  # every reader of records reads it (bytezoo.untrusted.limits)
        if not args.max_record_mb > 0:
            parser.error(f"--max-record-mb must be > 0; got {args.max_record_mb}")
        os.environ[RECORD_LIMIT_ENV] = repr(args.max_record_mb)
    openmp_wait_before_torch()  # idle OpenMP threads sleep beside busy cores, spin briefly on an idle machine
    command = getattr(args, "command", parser.prog)
    typed = [secret for arg in (sys.argv[1:] if argv is None else argv) for secret in secrets_in(str(arg))]
    if sys.excepthook is sys.__excepthook__ or getattr(sys.excepthook, "func", None) is _redacting_excepthook:
        sys.excepthook = functools.partial(_redacting_excepthook, also=typed)  # a bug's traceback is redacted too
    try:
        return int(args.func(args) or 0)
    except Exception as error:
        if isinstance(error, ByteZooError):  # its message is redacted already; redacted again, as all printed here
            message = one_line(error)
        else:  # the last guard: a failed request that nothing turned into a ByteZooError
            what = describe(error)
            if what is None:
                raise  # a bug: it keeps its traceback
            message = f"{what} ({type(error).__name__})"
        if _debugging(args):
            import traceback

            print(redact_text(traceback.format_exc(), typed).rstrip("\n"), file=sys.stderr)
    print(f"{command}: error: {redact_text(message, typed)}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE


def _redacting_excepthook(kind, error, trace, also=()) -> None:
    """Python's own report of an uncaught exception, with every URL in it redacted, and ``also`` (the secrets of the
    URLs on the command line) wherever they appear."""
    import traceback

    from .redaction import redact_text

    print(redact_text("".join(traceback.format_exception(kind, error, trace)), also).rstrip("\n"), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
