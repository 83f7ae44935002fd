"""The data path at scale: bytes each process reads and its time to the first window, for simulated layouts of 1 to
128 processes over a packed corpus of >= 1 GB, against the code before packed corpora (which read, decompressed and
parsed the whole corpus in every process) measured in the same run; the data-path throughput of one process (windows
of B=256, T=256 with resets and targets), from a local packed corpus and from a real S3 server (SeaweedFS on
127.0.0.1); and the packing rate for .txt and .jsonl.gz.

A "process" here is rank r of P instantiated alone (no training): the bytes it reads come from the corpus object's
counter (new) or from counting the bytes its reader consumed (old). Writes benchmarks/results/data-path.json (with the
CPU model) and prints a table.

    .venv/bin/python benchmarks/bench_data.py [--gigabytes 1.0] [--work /tmp/bytezoo-bench-data]
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path


from bytezoo.data.packed import PackedCorpus, pack
from bytezoo.pretrain.data import ByteStreams, StreamLayout

from _machine import SHARED_DATA, cpu_model, machine  # noqa: E402  (benchmarks/ is the script's folder)

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA / "sst" / "unsup.csv"
OLD_REVISION = "cf0395c"  # the last commit before packed corpora: its pretrain/data.py is "today's code"
PROCESSES = (1, 2, 8, 32, 128)
PER_PROCESS = 32  # streams per process: the global batch grows with the process count, as in the paper's recipe
SEQ_LEN = 256
SHARD = 1 << 20  # --shard-bytes: at most this many contiguous bytes per stream between resets (pretrain's default)




def sentences() -> list[str]:
    """Real English sentences: SST's text (beside the checkout) if present, else the embedded drug reviews."""
    if SHARED.is_file():
        import csv

        with open(SHARED, newline="", encoding="utf-8") as file:
            return [row["sentence"] for row in csv.DictReader(file)]
    from bytezoo.data.embedded import prepare_embedded_default

    return prepare_embedded_default().lm_train.read_text().splitlines()


def make_text(path: Path, size: int, lines: list[str]) -> None:
    """``size`` bytes of real sentences in a fresh random order per pass (so no two megabytes are alike)."""
    rng = random.Random(0)
    written = 0
    with open(path, "w", encoding="utf-8") as file:
        while written < size:
            rng.shuffle(lines)
            block = "\n".join(lines) + "\n"
            file.write(block)
            written += len(block.encode())


def load_old_data_module():
    source = subprocess.check_output(["git", "-C", str(ROOT), "show", f"{OLD_REVISION}:src/bytezoo/pretrain/data.py"])
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "bytezoo_old_pretrain_data.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("bytezoo_old_pretrain_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure_new(corpus_url: str, processes: int, full_epoch: bool) -> dict:
    """Rank 0 of ``processes``: time to its first window, and bytes read for the first window and the whole epoch."""
    start = time.perf_counter()
    corpus = PackedCorpus.open(corpus_url)
    layout = StreamLayout.plan(corpus.total_bytes, PER_PROCESS * processes, SHARD)
    streams = ByteStreams(corpus, layout, first_stream=0, batch_size=PER_PROCESS, seq_len=SEQ_LEN)
    next(streams)
    first = time.perf_counter() - start
    first_bytes = corpus.bytes_read
    epoch_seconds = None
    if full_epoch:
        t0 = time.perf_counter()
        for _ in streams:
            pass
        epoch_seconds = time.perf_counter() - t0
    streams.close()
    return {"first_window_seconds": first, "bytes_at_first_window": first_bytes,
            "bytes_per_epoch": corpus.bytes_read if full_epoch else None,
            "ideal_bytes_per_epoch": corpus.total_bytes / processes,
            "epoch_seconds_after_first": epoch_seconds}


def measure_old(old, text_url: str, processes: int, full_epoch: bool, text_field=None) -> dict:
    """The same with the code before packed corpora: its start-up pass, then its reader, which consumed the corpus in
    order (every process the whole of it) and kept its own chunks."""
    consumed = {"bytes": 0}
    real = old.read_pieces

    def counting(url, field=None):
        for piece in real(url, field):
            consumed["bytes"] += len(piece.data)
            yield piece

    old.read_pieces = counting
    try:
        start = time.perf_counter()
        urls = old.expand_sources([text_url])
        size = old.corpus_size(urls, text_field)
        startup_bytes = consumed["bytes"]
        layout = old.StreamLayout.plan(size, PER_PROCESS * processes, SHARD)
        streams = old.ByteStreams(urls, layout, first_stream=0, batch_size=PER_PROCESS, seq_len=SEQ_LEN, text_field=text_field)
        next(streams)
        first = time.perf_counter() - start
        first_bytes = consumed["bytes"]
        if full_epoch:
            for _ in streams:
                pass
        return {"first_window_seconds": first, "startup_pass_bytes": startup_bytes, "bytes_at_first_window": first_bytes,
                "bytes_per_epoch": consumed["bytes"] - startup_bytes if full_epoch else None}
    finally:
        old.read_pieces = real


def throughput(corpus_url: str, batch: int = 256, seq_len: int = 256, seconds: float = 8.0, storage_options=None) -> dict:
    """Characters per second of one process assembling windows (B, T) with resets and targets, after the first."""
    corpus = PackedCorpus.open(corpus_url) if storage_options is None else _open_with(corpus_url, storage_options)
    layout = StreamLayout.plan(corpus.total_bytes, batch, SHARD)
    streams = ByteStreams(corpus, layout, first_stream=0, batch_size=batch, seq_len=seq_len)
    next(streams)
    count, start = 0, time.perf_counter()
    for _ in streams:
        count += 1
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start
    streams.close()
    return {"windows": count, "chars_per_second": count * batch * seq_len / elapsed, "batch": batch, "seq_len": seq_len}


def _open_with(url: str, storage_options: dict) -> PackedCorpus:
    import fsspec

    fsspec.config.conf.setdefault("s3", {}).update(storage_options)
    return PackedCorpus.open(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--work", default="/tmp/bytezoo-bench-data")
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.gigabytes * (1 << 30))
    lines = sentences()
    text = work / "corpus.txt"
    if not text.is_file() or text.stat().st_size < size:
        make_text(text, size, lines)
    result = {"benchmark": "data-path", "machine": machine(), "cpu": cpu_model(), "python": platform.python_version(),
              "corpus_bytes": text.stat().st_size, "streams_per_process": PER_PROCESS, "seq_len": SEQ_LEN}

    # packing rates: plain text (the big corpus) and JSON lines, gzip-compressed (100 MB of records)
    packed = work / "packed"
    shutil.rmtree(packed, ignore_errors=True)
    t0 = time.perf_counter()
    pack([str(text)], str(packed), progress=False)
    result["pack_txt_mb_per_s"] = text.stat().st_size / (time.perf_counter() - t0) / 1e6
    jsonl = work / "records.jsonl.gz"
    if not jsonl.is_file():
        with gzip.open(jsonl, "wt", compresslevel=6) as file:
            written = 0
            rng = random.Random(1)
            while written < 100_000_000:
                line = json.dumps({"id": written, "text": rng.choice(lines)}) + "\n"
                file.write(line)
                written += len(line)
    t0 = time.perf_counter()
    index = pack([str(jsonl)], str(work / "packed-jsonl"), progress=False, overwrite=True)
    seconds = time.perf_counter() - t0
    result["pack_jsonl_gz"] = {"text_bytes_out": index["total_bytes"], "seconds": seconds,
                               "text_mb_per_s": index["total_bytes"] / seconds / 1e6}

    # bytes per process and time to the first window, new and old, by process count
    old = load_old_data_module()
    rows = []
    for processes in PROCESSES:
        full = True  # every layout: rank 0 reads its whole epoch
        new = measure_new(str(packed), processes, full_epoch=full)
        before = measure_old(old, str(text), processes, full_epoch=processes == 128)
        rows.append({"processes": processes, "new": new, "old": before})
        print(f"P={processes:>3}  new: first window {new['first_window_seconds']:.3f} s, "
              f"{(new['bytes_per_epoch'] or float('nan')) / new['ideal_bytes_per_epoch']:.3f} x corpus/P per epoch | "
              f"old: first window {before['first_window_seconds']:.2f} s, read {before['bytes_at_first_window'] / 1e6:,.0f} MB "
              f"by then", flush=True)
    result["by_processes"] = rows
    # the old start-up pass on a compressed JSON-lines corpus (the size had to be counted by reading it all)
    t0 = time.perf_counter()
    urls = old.expand_sources([str(jsonl)])
    old.corpus_size(urls)
    result["old_startup_pass_jsonl_gz_seconds"] = time.perf_counter() - t0

    result["throughput_local"] = throughput(str(packed))
    print(f"throughput, local: {result['throughput_local']['chars_per_second'] / 1e6:.1f}M chars/s", flush=True)
    if not args.skip_s3:
        from bytezoo.hub.testing import LocalS3Server

        with LocalS3Server(work / "s3") as server:
            server.create_bucket("corpora")
            small = work / "packed-s3-source.txt"
            make_text(small, 256 << 20, lines)
            import fsspec

            fsspec.config.conf.setdefault("s3", {}).update(server.storage_options)
            try:
                pack([str(small)], "s3://corpora/bench", progress=False, overwrite=True)
                result["throughput_s3"] = throughput("s3://corpora/bench", seconds=8.0)
                result["throughput_s3"]["corpus_bytes"] = small.stat().st_size
            finally:
                fsspec.config.conf.get("s3", {}).clear()
        print(f"throughput, S3: {result['throughput_s3']['chars_per_second'] / 1e6:.1f}M chars/s", flush=True)
    result["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data-path.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
