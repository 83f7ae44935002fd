"""Byte streams for truncated backprop: layout, ownership per process, resets, formats, URLs, bad input; schedules."""
from __future__ import annotations

import gzip
import http.server
import json
import math
import threading

import fsspec
import numpy as np
import pytest
import torch

from bytezoo.data.formats import iter_source_bytes
from bytezoo.data.packed import BLOCK_BYTES, PackedCorpus, pack
from bytezoo.pretrain.data import IGNORE_INDEX, ByteStreams, DataError, StreamLayout, expand_sources
from bytezoo.pretrain.schedules import Schedule, scaled_lr, warmup_steps


def corpus_bytes(urls, text_field=None) -> bytes:
    return b"".join(data for url in urls for data in iter_source_bytes(url, text_field))


def corpus_size(urls, text_field=None) -> int:
    """Bytes of the packed corpus of ``urls`` (packed into a fresh memory:// folder)."""
    folder = f"memory://pack-size-{np.random.default_rng().integers(1 << 62)}"
    try:
        return pack(urls, folder, text_field=text_field, progress=False)["total_bytes"]
    finally:
        memory = fsspec.filesystem("memory")
        if memory.exists(folder.split("://")[1]):
            memory.rm(folder.split("://")[1], recursive=True)


def all_windows(corpus, layout, seq_len, **kwargs):
    return list(ByteStreams(corpus, layout, seq_len=seq_len, **kwargs))


@pytest.fixture
def two_files(tmp_path):
    """Two random binary files packed (as --allow-binary does), and their bytes."""
    rng = np.random.default_rng()
    first, second = rng.integers(0, 256, 1500, dtype=np.uint8).tobytes(), rng.integers(0, 256, 700, dtype=np.uint8).tobytes()
    (tmp_path / "a.txt").write_bytes(first)
    (tmp_path / "b.txt").write_bytes(second)
    pack([str(tmp_path / "*.txt")], str(tmp_path / "packed"), allow_binary=True, shard_bytes=BLOCK_BYTES, progress=False)
    return PackedCorpus.open(str(tmp_path / "packed")), first + second


def test_streams_are_contiguous_chunks_with_resets_at_chunk_and_file_starts(two_files):
    corpus, text = two_files
    streams, seq_len = 4, 8
    layout = StreamLayout.plan(len(text), streams, max_chunk_bytes=100)
    assert layout.rounds * streams * layout.chunk_bytes <= len(text) < (layout.rounds * streams) * (layout.chunk_bytes + 1)
    windows = all_windows(corpus, layout, seq_len, first_stream=0, batch_size=streams)
    assert len(windows) == layout.windows(seq_len)
    chunk = layout.chunk_bytes
    for stream in range(streams):
        # the stream is its chunks of every round, in order; consecutive windows overlap by one byte
        expected = b"".join(text[(r * streams + stream) * chunk:(r * streams + stream + 1) * chunk] for r in range(layout.rounds))
        got = bytes(windows[0].input_ids[stream].tolist()) + b"".join(
            bytes(w.input_ids[stream].tolist()) for w in windows[1:])
        assert got == expected[: len(got)]
        for index, window in enumerate(windows):
            offsets = index * seq_len + np.arange(seq_len)  # stream offsets of the inputs
            corpus_offsets = [(o // chunk * streams + stream) * chunk + o % chunk for o in offsets]
            starts = [o % chunk == 0 or c == 1500 for o, c in zip(offsets, corpus_offsets)]  # 1500: file b begins
            assert window.reset_mask[stream].tolist() == starts
            target_starts = [(o + 1) % chunk == 0 or c + 1 == 1500 for o, c in zip(offsets, corpus_offsets)]
            targets = window.targets[stream]
            assert (targets[torch.tensor(target_starts)] == IGNORE_INDEX).all()
            assert (targets[~torch.tensor(target_starts)] >= 0).all()


@pytest.mark.parametrize("streams, seq_len, max_chunk", [(4, 8, 100), (3, 7, 50), (5, 16, 1 << 20), (1, 9, 64)])
def test_window_ranges_are_the_bytes_the_windows_read(two_files, streams, seq_len, max_chunk):
    """What the compressors beside validation BPC read: every byte a window holds (inputs and targets), no other."""
    corpus, text = two_files
    layout = StreamLayout.plan(len(text), streams, max_chunk_bytes=max_chunk)
    windows = all_windows(corpus, layout, seq_len, first_stream=0, batch_size=streams)
    chunk, read = layout.chunk_bytes, {}
    for index, window in enumerate(windows):
        for stream in range(streams):
            inputs = window.input_ids[stream].tolist()
            for o in range(index * seq_len, index * seq_len + seq_len + 1):  # T inputs, then the last target's byte
                position = (o // chunk * streams + stream) * chunk + o % chunk
                read[position] = inputs[o - index * seq_len] if o < index * seq_len + seq_len else None
    ranges = layout.window_ranges(seq_len)
    covered = [position for offset, length in ranges for position in range(offset, offset + length)]
    assert covered == sorted(read) and len(covered) == len(set(covered))  # in order, merged, each byte once
    assert all(text[p] == byte for p, byte in read.items() if byte is not None)
    assert all(a + n < b for (a, n), (b, _) in zip(ranges, ranges[1:]))  # adjacent ranges are merged
    assert sum(n for _, n in ranges) == streams * (len(windows) * seq_len + 1)


def test_each_process_owns_its_streams_and_the_union_is_the_single_process_batch(two_files):
    corpus, text = two_files
    layout = StreamLayout.plan(len(text), 6, max_chunk_bytes=64)
    for epoch in (0, 1):
        whole = all_windows(corpus, layout, 8, first_stream=0, batch_size=6, epoch=epoch, seed=3)
        parts = [all_windows(corpus, layout, 8, first_stream=r * 2, batch_size=2, epoch=epoch, seed=3) for r in range(3)]
        assert all(len(part) == len(whole) for part in parts)  # every process runs the same number of steps
        for step, window in enumerate(whole):
            for field in ("input_ids", "targets", "reset_mask"):
                joined = torch.cat([getattr(part[step], field) for part in parts])
                assert torch.equal(joined, getattr(window, field))
        assert len({bytes(w.input_ids.flatten().tolist()) for w in whole}) == len(whole)


def test_order_is_deterministic_for_a_seed_and_epochs_differ(two_files):
    corpus, text = two_files
    layout = StreamLayout.plan(len(text), 4, max_chunk_bytes=64)
    run = lambda seed, epoch: torch.stack([w.input_ids for w in all_windows(corpus, layout, 8, first_stream=0, batch_size=4, seed=seed, epoch=epoch)])
    assert torch.equal(run(5, 1), run(5, 1))
    assert not torch.equal(run(5, 1), run(5, 0))
    assert not torch.equal(run(5, 1), run(6, 1))


def test_resuming_mid_epoch_yields_the_remaining_windows(two_files):
    corpus, text = two_files
    layout = StreamLayout.plan(len(text), 3, max_chunk_bytes=50)  # several rounds, so skipping crosses rounds
    whole = all_windows(corpus, layout, 8, first_stream=0, batch_size=3, epoch=1)
    for start in (1, 7, len(whole) - 1):
        rest = all_windows(corpus, layout, 8, first_stream=0, batch_size=3, epoch=1, start_window=start)
        assert len(rest) == len(whole) - start
        assert all(torch.equal(a.input_ids, b.input_ids) and torch.equal(a.reset_mask, b.reset_mask) for a, b in zip(rest, whole[start:]))


@pytest.mark.parametrize("compressed", [False, True])
def test_text_jsonl_and_csv_formats(tmp_path, compressed):
    records = ["plain review", "a \"quoted\", comma\nand newline", "ünïcödé ✓", ""]
    write = (lambda path, data: gzip.open(path, "wb").write(data)) if compressed else (lambda path, data: path.write_bytes(data))
    suffix = ".gz" if compressed else ""
    write(tmp_path / f"r.jsonl{suffix}", "".join(json.dumps({"body": r, "id": i}) + "\n" for i, r in enumerate(records)).encode())
    import csv as csv_module
    import io

    buffer = io.StringIO()
    writer = csv_module.writer(buffer)
    writer.writerow(["label", "sentence"])
    writer.writerows([[i, r] for i, r in enumerate(records)])
    write(tmp_path / f"r.csv{suffix}", buffer.getvalue().encode())
    raw = b"raw \xff\xfe bytes that are not UTF-8\n"
    write(tmp_path / f"r.txt{suffix}", raw)
    expected = "".join(r + "\n" for r in records).encode()
    assert corpus_bytes([str(tmp_path / f"r.jsonl{suffix}")], "body") == expected
    assert corpus_bytes([str(tmp_path / f"r.csv{suffix}")]) == expected  # "sentence" is found without --text-field
    assert corpus_bytes([str(tmp_path / f"r.txt{suffix}")]) == raw  # invalid UTF-8 is data
    for name in ("r.jsonl", "r.csv", "r.txt"):
        url = str(tmp_path / (name + suffix))
        field = "body" if name == "r.jsonl" else None
        assert corpus_size([url], field) == len(corpus_bytes([url], field))


def test_invalid_utf8_inside_csv_records_survives_byte_for_byte(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"text\nbad \xff\xc3 byte\n")
    assert corpus_bytes([str(tmp_path / "x.csv")]) == b"bad \xff\xc3 byte\n"


def test_memory_and_http_urls(tmp_path):
    text = b"streamed from a URL " * 40
    memory = fsspec.filesystem("memory")
    try:
        memory.pipe("/pretrain-test/part-0.txt", text)
        memory.pipe("/pretrain-test/part-1.txt", text[::-1])
        urls = expand_sources(["memory://pretrain-test/part-*.txt"])
        assert urls == ["memory:///pretrain-test/part-0.txt", "memory:///pretrain-test/part-1.txt"]
        assert corpus_bytes(urls) == text + text[::-1] and corpus_size(urls) == 2 * len(text)
    finally:
        memory.rm("/pretrain-test", recursive=True)

    (tmp_path / "c.txt").write_bytes(text)
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/c.txt"
        assert corpus_bytes(expand_sources([url])) == text
        with pytest.raises(DataError, match="no data at"):
            expand_sources([f"http://127.0.0.1:{server.server_address[1]}/missing.txt"])
    finally:
        server.shutdown()
        server.server_close()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no data at"):
        expand_sources([str(tmp_path / "nothing-*.txt")])
    with pytest.raises(DataError, match="cannot read|no data at"):
        expand_sources(["nosuchprotocol://bucket/x.txt"])
    (tmp_path / "r.jsonl").write_text(json.dumps({"review": "x"}) + "\n" + json.dumps({"other": "y"}) + "\n")
    with pytest.raises(DataError, match="line 2 has no field 'review'"):
        corpus_size([str(tmp_path / "r.jsonl")], "review")
    with pytest.raises(DataError, match="no text field"):
        corpus_size([_write(tmp_path / "o.jsonl", '{"a": 1}\n')])
    with pytest.raises(DataError, match="bad.jsonl, line 1: not valid JSON"):
        corpus_size([_write(tmp_path / "bad.jsonl", "{oops\n")])


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_layout_arithmetic():
    layout = StreamLayout.plan(10_000, 8, max_chunk_bytes=300)
    assert layout.rounds == math.ceil(10_000 / (8 * 300)) and layout.chunk_bytes == 10_000 // (8 * layout.rounds)
    assert layout.windows(16) == (layout.stream_bytes - 1) // 16
    assert StreamLayout.plan(100, 8, 1 << 20).windows(16) == 0  # 12 bytes per stream: no 17-byte window


def test_schedules_and_scaling():
    assert scaled_lr(5e-4, 32768, "linear", 128, cap=3e-3) == 3e-3  # the cap binds at large batches
    assert scaled_lr(5e-4, 256, "linear", 128, cap=3e-3) == pytest.approx(1e-3)
    assert scaled_lr(5e-4, 512, "sqrt", 128) == pytest.approx(1e-3)
    assert warmup_steps(0.1, 200) == 20 and warmup_steps(7, 200) == 7
    linear = Schedule(1.0, 10, "linear", warmup_steps=2)
    assert [linear(u) for u in range(3)] == [0.5, 1.0, 1.0] and linear(6) == pytest.approx(0.5) and linear(10) == 0.0
    cosine = Schedule(2.0, 10, "cosine")
    assert cosine(0) == 2.0 and cosine(5) == pytest.approx(1.0) and cosine(10) == pytest.approx(0.0, abs=1e-12)
    exponential = Schedule(1.0, 101, "exponential", warmup_steps=1)
    assert exponential(1) == 1.0 and exponential(101) == pytest.approx(0.01)
    assert Schedule(1.0, 5, "constant")(4) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule(1.0, 5, "step")
