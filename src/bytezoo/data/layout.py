"""The one layout every prepared data set is written in, whatever its source, and how it is written safely::

    train.tsv  dev.tsv  test.tsv    labelled splits, header ``text<TAB>label``; written with the csv module, so a
                                    text holding tabs, newlines or quotes is quoted and reads back with ``csv``,
                                    :func:`bytezoo.data.labelled.read_dataset` or ``pandas.read_csv(path, sep="\\t")``
    lm_train.txt  [lm_val.txt]      text for language-model pretraining: one document per line, line breaks inside a
                                    document replaced by spaces (only where the source has text for it)
    bytezoo-dataset.json            written last, once everything else is in place: where the data came from, how it
                                    was split, and each file's size and row count

A folder whose ``bytezoo-dataset.json`` matches the request and whose files have the recorded sizes is re-used as it
is, so preparing or downloading twice costs nothing the second time. Work happens in a scratch folder inside the
target (:func:`staged_output`) and files are renamed into place only when all of them are complete (:func:`commit`):
an interrupted or refused run leaves the target as it was.

The data sets written in it: the embedded default (:mod:`bytezoo.data.embedded`) and one module per downloadable set
(:mod:`bytezoo.data.datasets`), each described by a :class:`DatasetSpec`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from bytezoo.untrusted import jsonio

from .fetch import file_digest
from .text import model_text

MARKER = "bytezoo-dataset.json"
# Bump when the files a recipe produces change, so folders prepared by an older bytezoo are rebuilt, not re-used.
FORMAT_VERSION = 2  # 2: language-model text is HTML-unescaped
SPLIT_SEED = 0
TSV_HEADER = ("text", "label")


def data_cache_dir() -> Path:
    """``$BYTEZOO_CACHE/data`` (the cache defaults to ``~/.cache/bytezoo``, as for the hub): where data sets go by
    default."""
    return Path(os.environ.get("BYTEZOO_CACHE") or Path.home() / ".cache" / "bytezoo").expanduser() / "data"


@dataclass(frozen=True)
class DatasetSpec:
    """A standard data set that ``download`` knows: where its archive is, what it must hash to, how to convert it.

    ``checksums`` are ``"algorithm:hex"`` strings (md5, sha1 or sha256, as the publishing sources give them); the
    download must match every one. ``dev_fraction`` is the share of the training split set aside as ``dev.tsv``.
    ``max_download_bytes`` bounds what a download of the pinned archive may write (its size, with room to spare): a
    mirror that sends more is refused while it sends, never left to fill the disk. ``convert(archive, out, spec)``
    writes the layout's files into ``out`` and returns ``{file name: rows}``.
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


# --- splits -----------------------------------------------------------------------------------------------------------
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


def dev_size(count: int, fraction: float) -> int:
    return round(count * fraction)


def in_hashed_dev(text: str, fraction: float) -> bool:
    """Whether a row belongs to dev when the split must be decided one row at a time (a stream too big to hold).

    The text's hash decides, so the choice is reproducible, independent of row order, and sends duplicates to the
    same side.
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def carve_dev(rows: Sequence[tuple[str, str]], dev_indices: set[int]) -> tuple[list, list]:
    """``(train, dev)``: the rows outside ``dev_indices`` and those in them, each in the rows' order."""
    return ([row for index, row in enumerate(rows) if index not in dev_indices],
            [row for index, row in enumerate(rows) if index in dev_indices])


def write_splits(out: Path, train: Iterable[tuple[str, str]], dev: Iterable[tuple[str, str]],
                 test: Iterable[tuple[str, str]]) -> dict[str, int]:
    """``train.tsv``, ``dev.tsv`` and ``test.tsv`` in ``out``; returns ``{file name: rows}``."""
    return {"train.tsv": write_tsv(out / "train.tsv", train), "dev.tsv": write_tsv(out / "dev.tsv", dev),
            "test.tsv": write_tsv(out / "test.tsv", test)}


# --- the files --------------------------------------------------------------------------------------------------------
class TsvWriter:
    """Writes ``text<TAB>label`` rows, quoting where needed, and counts them."""

    def __init__(self, path: Path):
        self.path, self.rows = path, 0

    def __enter__(self) -> "TsvWriter":
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter="\t", lineterminator="\n")
        self._writer.writerow(TSV_HEADER)
        return self

    def write(self, text: str, label: str) -> None:
        self._writer.writerow((text, label))
        self.rows += 1

    def __exit__(self, *exc_info) -> None:
        self._file.close()


def write_tsv(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    with TsvWriter(path) as writer:
        for text, label in rows:
            writer.write(text, label)
    return writer.rows


def as_document_line(text: str) -> str:
    """One document as one line of language-model text: :func:`bytezoo.data.text.model_text`, the preprocessing the
    transfer stage's ``preprocess="openai"`` shares, so that pretraining reads the bytes the featurizer later feeds."""
    return model_text(text)


def write_documents(path: Path, texts: Iterable[str]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for text in texts:
            line = as_document_line(text)
            if line.strip():
                file.write(line + "\n")
                count += 1
    return count


# --- preparing a folder safely ----------------------------------------------------------------------------------------
def intact_record(target: Path, identity: dict) -> dict | None:
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
def staged_output(target: Path) -> Iterator[Path]:
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


def commit(staging: Path, target: Path, identity: dict, files: dict[str, int]) -> dict:
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


__all__ = ["FORMAT_VERSION", "MARKER", "SPLIT_SEED", "TSV_HEADER", "DatasetSpec", "TsvWriter", "as_document_line",
           "carve_dev", "commit", "data_cache_dir", "dev_size", "in_hashed_dev", "intact_record", "staged_output",
           "stratified_dev_indices", "write_documents", "write_splits", "write_tsv"]
