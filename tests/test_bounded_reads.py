"""Memory and disk stay bounded whatever a hub or a file claims (issue 25, item 3): a blob is never read past its
manifest entry's size + 1 bytes, a record past the record limit is refused in one line naming the file and the record
with peak memory a small multiple of the limit, archive members and downloads have caps too. Peak memory is measured
in a child process (``resource.getrusage``), with a 4 MiB limit against a 64 MiB record so that it stays fast.

On main: a blob claiming 100 bytes was read whole (2.5 GB peak for a 2.5 GB blob), and one huge record ended in
MemoryError (here: read whole, 2.5x its size in memory, no error).
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import zstandard

from bytezoo.cli import main as bytezoo_main
from hostile_server import HostileServer

HUGE = 64 << 20  # the record
HUGE_BLOB = 256 << 20  # a sparse file: no disk, but a reader that reads it whole holds 256 MiB
LIMIT_MB = 4
TESTS = Path(__file__).resolve().parent


def run_child(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh Python (bytezoo from this checkout); it prints one JSON line, returned as a dict.
    ``grown_mb(before)`` in the child gives its peak resident memory growth since ``before``."""
    package_parent = str(Path(__import__("bytezoo").__file__).resolve().parents[1])
    prelude = textwrap.dedent("""
        import json, resource, sys
        sys.path.insert(0, %r)
        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    """ % str(TESTS))
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": package_parent, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def lying_hub(tmp_path):
    """A hub whose manifest lists a 100-byte file whose blob holds 256 MiB."""
    from bytezoo.hub.manifest import FileEntry, Manifest, Tag

    repository = tmp_path / "hub" / "m"
    claimed = b"n" * 100
    sha256 = hashlib.sha256(claimed).hexdigest()
    (repository / "blobs" / "sha256").mkdir(parents=True)
    with open(repository / "blobs" / "sha256" / sha256, "wb") as blob:
        blob.write(claimed)
        blob.truncate(HUGE_BLOB)
    manifest = Manifest.for_files([FileEntry("notes.txt", sha256, len(claimed))], created_by="someone else")
    (repository / "versions").mkdir()
    (repository / "versions" / f"{manifest.version}.json").write_bytes(manifest.to_json())
    (repository / "tags").mkdir()
    (repository / "tags" / "latest.json").write_bytes(Tag("latest", manifest.version, "").to_json())
    return repository


@pytest.mark.parametrize("served", ["file", "http"])
def test_a_blob_longer_than_its_entry_is_read_no_further(lying_hub, tmp_path, served):
    with HostileServer(tmp_path / "hub") as server:
        url = f"{server.url}/m" if served == "http" else str(lying_hub)
        result = run_child(f"""
            from hub_child import import_hub_without_zoo
            hub = import_hub_without_zoo()
            before = peak_mb()
            try:
                hub.pull({url!r})
                message = None
            except hub.IntegrityError as error:
                message = str(error)
            print(json.dumps({{"message": message, "grown_mb": peak_mb() - before}}))
        """, BYTEZOO_CACHE=str(tmp_path / "cache"))
    assert result["message"] and "longer than its manifest entry says" in result["message"], result
    assert "(101 bytes)" in result["message"]  # the one byte past the entry, and not one more
    assert result["grown_mb"] < 16, result  # main: the whole 256 MiB (and 2.5 GB for a 2.5 GB blob)
    assert not list((tmp_path / "cache" / "hub").glob("blobs/sha256/*"))


def huge_record_file(folder: Path, kind: str) -> tuple[Path, str]:
    """A compressed record file whose second record is 64 MiB, and how messages name that record."""
    if kind == "jsonl.gz":
        path = folder / "reviews.jsonl.gz"
        with gzip.open(path, "wb", compresslevel=1) as out:
            out.write(b'{"text": "fine"}\n{"text": "')
            out.write(b"a" * HUGE)
            out.write(b'"}\n')
        return path, "line 2"
    path = folder / "reviews.csv.zst"
    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
        out.write(b"text,label\nfine,1\n\"")
        out.write(b"b" * HUGE)
        out.write(b"\",0\n")
    return path, "row 3"


@pytest.mark.parametrize("kind", ["jsonl.gz", "csv.zst"])
def test_a_huge_record_is_refused_in_one_line_with_memory_a_small_multiple_of_the_limit(tmp_path, kind):
    path, record = huge_record_file(tmp_path, kind)
    result = run_child(f"""
        import contextlib, io
        from bytezoo.cli import main
        before, err = peak_mb(), io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["data", "pack", {str(path)!r}, "--output", {str(tmp_path / "packed")!r}, "--no-progress",
                         "--max-record-mb", "{LIMIT_MB}"])
        print(json.dumps({{"code": code, "error": err.getvalue(), "grown_mb": peak_mb() - before}}))
    """)
    error = result["error"].strip()
    assert result["code"] == 2 and len(error.splitlines()) == 1, result
    assert f"{path}, {record}: a record of more than the record limit of {LIMIT_MB << 20:,} bytes" in error
    assert "--max-record-mb" in error
    assert result["grown_mb"] < 8 * LIMIT_MB, result  # main: 2.5x the 64 MiB record, then MemoryError at 1.5 GB
    assert not (tmp_path / "packed" / "index.json").exists()


def test_the_record_limit_is_raised_by_a_flag_and_the_pack_bar_counts_expanded_bytes(tmp_path, monkeypatch, capsys):
    from bytezoo.data.formats import RecordTooLargeError, iter_source_bytes

    path = tmp_path / "reviews.jsonl.bz2"
    record = {"text": "x" * (3 << 19), "unused": "y" * 1000}  # 1.5 MiB of text
    path.write_bytes(bz2.compress((json.dumps(record) + "\n").encode()))
    monkeypatch.setenv("BYTEZOO_MAX_RECORD_MB", "1")
    with pytest.raises(RecordTooLargeError, match=r"reviews.jsonl.bz2, line 1: a record of more than .* 1,048,576"):
        b"".join(iter_source_bytes(str(path)))
    assert bytezoo_main(["data", "pack", str(path), "--output", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "line 1" in capsys.readouterr().err
    assert bytezoo_main(["data", "pack", str(path), "--output", str(tmp_path / "b"), "--no-progress",
                         "--max-record-mb", "2"]) == 0
    expanded = []
    assert len(b"".join(iter_source_bytes(str(path), progress=expanded.append, max_record_bytes=2 << 20))) == (3 << 19) + 1
    assert sum(expanded) == len(json.dumps(record)) + 1  # what was read, the unused field included


def imdb_archive(folder: Path, review: bytes) -> Path:
    path = folder / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in (("aclImdb/train/pos/0_9.txt", b"great"), ("aclImdb/train/neg/1_1.txt", review),
                           ("aclImdb/test/pos/0_9.txt", b"good"), ("aclImdb/test/neg/1_2.txt", b"bad")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def sst2_archive(folder: Path, review: bytes) -> Path:
    path = folder / "SST-2.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SST-2/train.tsv", b"sentence\tlabel\ngreat film\t1\n" + review + b"\t0\n")
        archive.writestr("SST-2/dev.tsv", b"sentence\tlabel\ngood\t1\nbad\t0\n")
    return path


@pytest.mark.parametrize("name, build, where", [("imdb", imdb_archive, "member 'aclImdb/train/neg/1_1.txt'"),
                                                ("sst2", sst2_archive, "member 'SST-2/train.tsv', line 3")])
def test_an_archive_member_past_the_record_limit_is_refused_by_name(tmp_path, monkeypatch, capsys, name, build, where):
    """On main a member was read whole (``data download``: a 1.5 GB review meant 1.5 GB in memory)."""
    archive = build(tmp_path, b"w" * (3 << 20))
    checksum = f"sha256:{hashlib.sha256(archive.read_bytes()).hexdigest()}"
    monkeypatch.setenv("BYTEZOO_MAX_RECORD_MB", "1")
    from bytezoo.data.formats import RecordTooLargeError
    from bytezoo.data.datasets import download

    with pytest.raises(RecordTooLargeError, match=f"{archive.name}, {where}: a record of more than"):
        download(name, tmp_path / "out", url=archive.as_uri(), expected_hash=checksum, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_download_that_sends_more_than_its_archive_can_be_is_stopped(tmp_path, capsys):
    """On main the bytes were streamed to disk until the server stopped (then refused by checksum)."""
    with HostileServer(tmp_path) as server:
        code = bytezoo_main(["data", "download", "sst2", "--url", f"{server.url}/huge/{20 << 20}/SST-2.zip",
                             "--dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert f"announces {20 << 20:,} bytes, more than the {16 << 20:,} this data set's archive can be" in error
    assert not (tmp_path / "out").exists()
