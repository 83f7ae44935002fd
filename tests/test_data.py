"""The text layer (formats, compressions, the shared preprocessing) and packed corpora (pack, index, checked reads,
per-process reads)."""
from __future__ import annotations

import bz2
import gzip
import json
import random
import string

import fsspec
import numpy as np
import pytest
import zstandard

from bytezoo.cli import main as bytezoo_main
from bytezoo.data.formats import SourceError, SourceKind, iter_source_bytes
from bytezoo.data.packed import BLOCK_BYTES, PackedCorpus, PackError, pack
from bytezoo.data.text import model_text
from bytezoo.pretrain.data import ByteStreams, StreamLayout


def random_text(n_words: int) -> str:
    rng = random.Random()
    return " ".join("".join(rng.choices(string.ascii_lowercase + "éü", k=rng.randint(1, 9))) for _ in range(n_words))


def source_bytes(url, field=None) -> bytes:
    return b"".join(iter_source_bytes(url, field))


@pytest.mark.parametrize("name, kind", [("a.txt", ("text", None)), ("a.tsv.bz2", ("tsv", "bz2")),
                                        ("a.csv.zst", ("csv", "zstd")), ("a.jsonl.gz", ("jsonl", "gzip")),
                                        ("s3://b/x.ndjson.xz", ("jsonl", "xz")), ("notes", ("text", None))])
def test_the_name_says_format_and_compression(name, kind):
    assert (SourceKind.of(name).format, SourceKind.of(name).compression) == kind


def test_a_compressed_tsv_is_read_as_tab_separated(tmp_path):
    """Pretraining split .tsv.bz2 on commas (and failed); transfer read it fine. Both read it one way now."""
    texts = [random_text(5) + ", with a comma" for _ in range(4)]
    path = tmp_path / "reviews.tsv.bz2"
    path.write_bytes(bz2.compress(("stars\treview\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts))).encode()))
    assert source_bytes(str(path), "review") == "".join(t + "\n" for t in texts).encode()
    from bytezoo.data.labelled import read_dataset

    assert read_dataset(str(path), text_col="review", label_cols=["stars"]).texts == texts


def test_zst_sources_are_decompressed_everywhere(tmp_path):
    texts = [random_text(6) for _ in range(12)]
    csv_text = "label,text\n" + "".join(f"{i % 2},{t}\n" for i, t in enumerate(texts))
    path = tmp_path / "x.csv.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(csv_text.encode()))
    assert source_bytes(str(path)) == "".join(t + "\n" for t in texts).encode()
    from bytezoo.data.labelled import read_dataset

    assert read_dataset(str(path)).texts == texts  # `classify --input x.csv.zst` failed on "row 10: 2 fields"
    raw = tmp_path / "y.txt.zst"
    raw.write_bytes(zstandard.ZstdCompressor().compress(b"plain text\n" * 50))
    assert source_bytes(str(raw)) == b"plain text\n" * 50


def test_crlf_and_every_line_break_become_one_space_for_both_stages():
    from bytezoo.data.layout import as_document_line
    from bytezoo.transfer.featurizer import preprocess_openai

    text = "Great drug.\r\nNo side effects&#039;\rat all\u2028really\n"
    assert model_text(text) == "Great drug. No side effects' at all really"
    assert as_document_line(text) == model_text(text)  # what pretraining text is written as
    assert preprocess_openai(text) == b"\n " + model_text(text).encode() + b" "  # what the featurizer feeds
    assert b"\r" not in preprocess_openai(text)


def test_binary_sources_are_refused_by_name_unless_allowed(tmp_path):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "weights.txt"  # a safetensors file renamed .txt
    save_file({"w": torch.zeros(64, 64)}, str(weights))
    with pytest.raises(SourceError, match=r"weights.txt: not text: .*NUL bytes.*--allow-binary"):
        pack([str(weights)], str(tmp_path / "p"), progress=False)
    assert not (tmp_path / "p" / "index.json").exists()
    compressed = tmp_path / "hidden.txt"  # gzip data under a name that does not say so
    compressed.write_bytes(gzip.compress(random_text(4000).encode()))
    with pytest.raises(SourceError, match="hidden.txt: not text"):
        pack([str(compressed)], str(tmp_path / "q"), progress=False)
    index = pack([str(weights)], str(tmp_path / "p"), allow_binary=True, progress=False)
    assert index["total_bytes"] == weights.stat().st_size
    latin1 = tmp_path / "latin1.txt"  # accents in Latin-1: not UTF-8, but text
    latin1.write_bytes(("Le caf\xe9 \xe9tait tr\xe8s bon, merci beaucoup pour le service. " * 200).encode("latin-1"))
    assert pack([str(latin1)], str(tmp_path / "r"), progress=False)["total_bytes"] == latin1.stat().st_size


@pytest.fixture
def sources(tmp_path):
    """Three sources of three formats, two compressed: ~300 KB of text."""
    rng = np.random.default_rng()
    texts = [random_text(int(rng.integers(5, 60))) for _ in range(1500)]
    (tmp_path / "a.txt").write_text("\n".join(texts[:500]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as file:
        file.writelines(json.dumps({"text": t}) + "\n" for t in texts[500:1000])
    (tmp_path / "c.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("text\n" + "".join(f'"{t}"\n' for t in texts[1000:])).encode()))
    urls = [str(tmp_path / name) for name in ("a.txt", "b.jsonl.gz", "c.csv.zst")]
    return urls, b"".join(source_bytes(u) for u in urls)


def test_pack_writes_the_sources_bytes_and_is_deterministic(sources, tmp_path):
    urls, expected = sources
    first = pack(urls, str(tmp_path / "one"), shard_bytes=4 * BLOCK_BYTES, progress=False)
    second = pack(urls, str(tmp_path / "two"), shard_bytes=4 * BLOCK_BYTES, progress=False)
    assert first == second and len(first["shards"]) > 2
    for shard in first["shards"]:
        assert (tmp_path / "one" / shard["name"]).read_bytes() == (tmp_path / "two" / shard["name"]).read_bytes()
    corpus = PackedCorpus.open(str(tmp_path / "one"))
    assert corpus.total_bytes == len(expected) and bytes(corpus.read(0, len(expected))) == expected
    lengths = [len(source_bytes(u)) for u in urls]
    assert list(corpus.document_starts) == [0, lengths[0], lengths[0] + lengths[1]]
    rng = np.random.default_rng()
    for _ in range(20):  # any range, across shard and block boundaries
        start = int(rng.integers(0, len(expected)))
        length = int(rng.integers(0, min(100_000, len(expected) - start) + 1))
        assert bytes(corpus.read(start, length)) == expected[start : start + length]
    corpus.verify(progress=False)


def test_a_second_pack_into_the_same_place_needs_overwrite(sources, tmp_path, capsys):
    urls, _ = sources
    pack(urls[:1], str(tmp_path / "p"), progress=False)
    assert bytezoo_main(["data", "pack", *urls, "--output", str(tmp_path / "p"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "already holds a packed corpus: pass --overwrite" in error and len(error.splitlines()) == 1
    assert bytezoo_main(["data", "pack", *urls, "--output", str(tmp_path / "p"), "--no-progress", "--overwrite"]) == 0
    assert PackedCorpus.open(str(tmp_path / "p")).index["sources"][2]["url"] == urls[2]


def test_a_truncated_modified_or_foreign_corpus_is_named(sources, tmp_path):
    urls, _ = sources
    root = tmp_path / "p"
    index = pack(urls, str(root), shard_bytes=4 * BLOCK_BYTES, progress=False)
    shard = root / index["shards"][1]["name"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(PackError, match=rf"shard {shard.name} holds {len(data) - 10:,} bytes, the index says"):
        PackedCorpus.open(str(root))
    modified = bytearray(data)
    modified[1000] ^= 0xFF  # same size, one byte changed
    shard.write_bytes(bytes(modified))
    corpus = PackedCorpus.open(str(root))  # sizes match ...
    corpus.read(0, 100)  # ... and untouched blocks read fine
    with pytest.raises(PackError, match=rf"shard {shard.name} was modified after packing"):
        corpus.read(index["shards"][0]["bytes"], 2000)
    with pytest.raises(PackError, match=rf"shard {shard.name} does not match its sha256"):
        corpus.verify(progress=False)
    meta = json.loads((root / "index.json").read_text())
    (root / "index.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(PackError, match="packed-corpus format version 99; this bytezoo reads version 1"):
        PackedCorpus.open(str(root))
    with pytest.raises(PackError, match="no index.json: not a packed corpus"):
        PackedCorpus.open(str(tmp_path))


def test_each_process_reads_only_its_own_bytes(tmp_path):
    text = (random_text(200_000) + "\n").encode()  # ~1 MB
    (tmp_path / "big.txt").write_bytes(text)
    pack([str(tmp_path / "big.txt")], str(tmp_path / "p"), progress=False)
    per_process, seq_len = 4, 64
    for processes in (1, 2, 4):
        layout = StreamLayout.plan(len(text), per_process * processes, max_chunk_bytes=1 << 17)
        for rank in range(processes):
            corpus = PackedCorpus.open(str(tmp_path / "p"))
            streams = ByteStreams(corpus, layout, first_stream=rank * per_process, batch_size=per_process,
                                  seq_len=seq_len, prefetch=False)
            for _ in streams:
                pass
            assert corpus.bytes_read <= 1.05 * len(text) / processes + 2 * BLOCK_BYTES * per_process * layout.rounds


def test_a_packed_corpus_on_a_remote_file_system(sources):
    urls, expected = sources
    memory = fsspec.filesystem("memory")
    try:
        pack(urls, "memory://packed-test/corpus", shard_bytes=4 * BLOCK_BYTES, progress=False)
        corpus = PackedCorpus.open("memory://packed-test/corpus")
        assert bytes(corpus.read(70_000, 90_000)) == expected[70_000:160_000]
        layout = StreamLayout.plan(corpus.total_bytes, 4, max_chunk_bytes=1 << 14)
        windows = list(ByteStreams(corpus, layout, first_stream=0, batch_size=4, seq_len=32))
        assert len(windows) == layout.windows(32)
    finally:
        memory.rm("/packed-test", recursive=True)


def test_a_source_folder_does_not_reach_through_links_out_of_it(tmp_path):
    """The symlink rule of hub push, for corpora: a folder's files are its own; a link out of it is named."""
    from bytezoo.data.formats import expand_sources

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("mine\n")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.txt").write_text("not for the corpus\n")
    (tmp_path / "corpus" / "inside.txt").symlink_to(tmp_path / "corpus" / "a.txt")
    (tmp_path / "corpus" / "linked-folder").symlink_to(tmp_path / "private", target_is_directory=True)
    assert expand_sources([str(tmp_path / "corpus")]) == [str(tmp_path / "corpus" / "a.txt"),
                                                           str(tmp_path / "corpus" / "inside.txt")]
    (tmp_path / "corpus" / "s.txt").symlink_to(tmp_path / "private" / "secret.txt")
    with pytest.raises(SourceError, match=r"s.txt: a symbolic link to .*secret.txt, outside"):
        expand_sources([str(tmp_path / "corpus")])
    assert expand_sources([str(tmp_path / "corpus" / "s.txt")])  # named explicitly: the user's choice
