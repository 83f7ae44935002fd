"""A separate process for the hub's fault tests: push or pull, optionally freezing at a chosen point so the test can
SIGKILL it there. Run as ``python tests/hub_child.py COMMAND ...`` (see ``main``); prints a JSON result.

Freeze points (``--freeze``):

- ``mid-file``: once the upload of the first large file has begun (every fsspec backend reads local files through
  ``open``): chunked readers get its first megabyte, then the read blocks forever; a reader asking for the whole
  file at once (s3fs's single PUT) blocks immediately.
- ``before-manifest``: all blobs are published, the manifest is not.

Before freezing the child creates the file named by ``--ready``; the test waits for it, then kills.
"""
from __future__ import annotations

import argparse
import builtins
import importlib.util
import json
import os
import sys
import time
import types


def import_hub_without_zoo():
    """Import ``bytezoo.hub`` without running ``bytezoo/__init__`` (which loads torch and transformers, ~5 s per
    process). The hub depends on neither; this keeps each child process quick."""
    spec = importlib.util.find_spec("bytezoo")
    package = types.ModuleType("bytezoo")
    package.__path__ = list(spec.submodule_search_locations)
    package.__version__ = "test"
    sys.modules["bytezoo"] = package
    import bytezoo.hub

    return bytezoo.hub


def freeze_forever(ready_file: str) -> None:
    with open(ready_file, "w") as handle:
        handle.write(str(os.getpid()))
    while True:
        time.sleep(60)


def install_freeze(point: str, ready_file: str, source_dir: str) -> None:
    if point == "before-manifest":
        from bytezoo.hub.remote import HubRepo

        HubRepo.write_manifest = lambda self, manifest: freeze_forever(ready_file)
    elif point == "mid-file":
        real_open = builtins.open
        source_dir = os.path.realpath(source_dir)

        class FreezingReader:
            def __init__(self, handle):
                self._handle, self._served = handle, 0

            def read(self, size=-1):
                # A read of the whole file (s3fs's single PUT) freezes at once; chunked reads after 1 MB.
                if size is None or size < 0 or self._served >= 2**20:
                    freeze_forever(ready_file)
                data = self._handle.read(min(size, 2**20))
                self._served += len(data)
                return data

            def __getattr__(self, name):
                return getattr(self._handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                self._handle.close()

        def open_freezing_large_sources(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            is_source = isinstance(file, (str, os.PathLike)) and os.path.realpath(file).startswith(source_dir)
            if is_source and "r" in mode and os.path.getsize(file) > 4 * 2**20:
                # Only the upload is frozen, not the inspection (checks and hashing) that comes before it.
                if "inspect_file" in _caller_names():  # bytezoo.hub.local.inspect_file
                    return handle
                return FreezingReader(handle)
            return handle

        builtins.open = open_freezing_large_sources
    else:
        raise SystemExit(f"unknown freeze point {point!r}")


def _caller_names() -> set[str]:
    names, frame = set(), sys._getframe(2)
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["push", "pull"])
    parser.add_argument("source", help="push: the directory; pull: the reference")
    parser.add_argument("url", nargs="?")
    parser.add_argument("--tag")
    parser.add_argument("--move-tag", action="store_true")
    parser.add_argument("--freeze", choices=["mid-file", "before-manifest"])
    parser.add_argument("--ready", help="file to create when frozen (or, with --wait-for, when about to wait)")
    parser.add_argument("--wait-for", help="start only once this file exists (to line up concurrent children)")
    args = parser.parse_args()
    hub = import_hub_without_zoo()
    if args.freeze:
        install_freeze(args.freeze, args.ready, args.source)
    if args.wait_for:
        if args.ready:
            open(args.ready, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(args.wait_for) and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        if args.command == "push":
            result = hub.push(args.source, args.url, tag=args.tag, move_tag=args.move_tag)
        else:
            result = hub.pull(args.source)
    except hub.HubError as error:  # a refusal the test expects (a push that lost a race on the tags): told, exit 3
        print(json.dumps({"error": str(error)}))
        raise SystemExit(3)
    print(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
