"""Labelled text sets from CSV, TSV or JSON lines, at any path or fsspec URL; texts to label from a file or stdin.

>>> data = read_dataset("s3://bucket/reviews/train.tsv", text_col="review", label_cols=["rating"])  # doctest: +SKIP
>>> data.texts[:1], data.labels[:1]                                                               # doctest: +SKIP

The format follows the extension (``.csv``, ``.tsv``/``.tab``, ``.jsonl``/``.ndjson``/``.json``, each optionally
compressed: ``.gz``, ``.bz2``, ``.xz``, ``.zst``…) unless ``fmt=`` names one of
:data:`~bytezoo.data.formats.RECORD_FORMATS`. Records are read by :func:`bytezoo.data.formats.iter_records`, as
pretraining reads them. Bytes that are not valid UTF-8 are kept as they are (decoded with ``surrogateescape``, so the
byte-level model reads the original bytes) and reported once in a warning naming the first such row and column.
Problems that make a row unusable raise :class:`~bytezoo.data.errors.DatasetError` naming the file, the row (1-based,
counting the header as row 1 in CSV/TSV, as a spreadsheet shows it; the line in JSON lines) and the column.

``bytezoo transfer`` and ``bytezoo finetune`` read their splits with :func:`read_dataset`; ``bytezoo classify`` reads
its texts with :func:`read_texts`.
"""
from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import DatasetError
from .formats import COMPRESSIONS, RECORD_FORMATS, SourceError, SourceKind, iter_records, open_source
from bytezoo.untrusted.limits import max_record_bytes

TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "tweet", "content", "body", "document")
LABEL_COLUMN_GUESSES = ("label", "labels", "sentiment", "rating", "class", "target", "y")
MISSING_LABELS = ("", "nan", "NaN", "NA", "N/A", "null", "None")


@dataclass
class LabeledTexts:
    """Texts with their labels as read from one file.

    Attributes:
        texts: one string per row.
        labels: (n,) label values as strings (one label column), (n, k) 0/1 ints (several label columns: multi-label),
            or ``None`` when no label column was asked for.
        text_col, label_cols: the columns read.
        source: the path or URL.
        rows: the row number in the file of each example (for error messages downstream).
    """

    texts: list[str]
    labels: np.ndarray | None
    text_col: str
    label_cols: list[str] = field(default_factory=list)
    source: str = ""
    rows: list[int] = field(default_factory=list)

    @property
    def multilabel(self) -> bool:
        return self.labels is not None and self.labels.ndim == 2

    def __len__(self) -> int:
        return len(self.texts)


def detect_format(path: str) -> str:
    """The record format a file's name says (``csv``, ``tsv`` or ``jsonl``), or a :class:`DatasetError` that asks for
    it."""
    kind = SourceKind.of(path)  # the one reading of names and compressions (bytezoo.data.formats)
    if kind.format == "text":
        raise DatasetError(f"{path}: cannot tell the format from the extension; name the file .csv, .tsv or .jsonl "
                           "(optionally compressed), or say which it is (--format on the command line, fmt= in Python)")
    return kind.format


def _read_records(path: str, fmt: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """Column names and ``(row number, record)`` pairs of a file, read by :func:`bytezoo.data.formats.iter_records`."""
    header: list[str] = []
    records = []
    try:
        for row, record in iter_records(path, fmt):
            if not header or fmt == "jsonl":
                header.extend(key for key in record if key not in header)
            records.append((row, record))
    except SourceError as error:
        raise DatasetError(str(error)) from None
    if fmt in ("csv", "tsv") and not records:
        try:  # a header without rows still names its columns
            with open_source(path) as raw:  # (the header passed the record limit already)
                first = raw.readline(max_record_bytes() + 1).decode("utf-8", "surrogateescape").removeprefix("\ufeff")
            header = next(csv.reader([first], delimiter="," if fmt == "csv" else "\t"), [])
        except (SourceError, OSError):
            header = []
    return header, records


def _guess_column(header: list[str], guesses: tuple[str, ...], what: str, path: str) -> str:
    lowered = {name.lower(): name for name in header}
    for guess in guesses:
        if guess in lowered:
            return lowered[guess]
    raise DatasetError(f"{path}: no {what} column given and none of {list(guesses)} found; columns are {header}")


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in MISSING_LABELS


def read_dataset(
    path: str,
    text_col: str | None = None,
    label_cols: list[str] | str | None = None,
    *,
    fmt: str | None = None,
    require_labels: bool = True,
) -> LabeledTexts:
    """Read texts and labels from ``path`` (any fsspec URL).

    Args:
        text_col: the text column; guessed from common names (``text``, ``sentence``, ``review``, ``tweet``…) if None.
        label_cols: one label column (binary or multi-class; any values, kept as strings), several (multi-label: each
            column 0/1), or None to guess one (``label``, ``sentiment``, ``rating``…).
        fmt: ``"csv"``, ``"tsv"`` or ``"jsonl"``; from the extension when None.
        require_labels: False to read texts only (for prediction): then a missing label column is not an error and
            ``labels`` is None.

    Raises:
        DatasetError: unknown columns, missing/NaN labels, non-0/1 multi-label values, a text that is not a string,
            malformed rows, each naming the file, row and column.
    """
    path = str(path)
    fmt = fmt or detect_format(path)
    if fmt not in RECORD_FORMATS:
        raise DatasetError(f"{path}: unknown format {fmt!r}; choose {', '.join(RECORD_FORMATS[:-1])} or "
                           f"{RECORD_FORMATS[-1]}")
    header, records = _read_records(path, fmt)
    text_col, label_cols = _columns(header, text_col, label_cols, require_labels, path)
    if not records:
        raise DatasetError(f"{path}: no data rows")

    texts, labels, rows = [], [], []
    first_bad_bytes = None
    for row, record in records:
        text = record.get(text_col)
        if text is None:
            text = ""  # an absent JSON key or null: an empty text, which the featurizer handles
        if not isinstance(text, str):
            raise DatasetError(f"{path}, row {row}, column {text_col!r}: text must be a string; got "
                               f"{type(text).__name__} {text!r:.40}")
        if first_bad_bytes is None and _has_bad_bytes(text):
            first_bad_bytes = row
        texts.append(text)
        labels.append([_label_value(record.get(name), path, row, name) for name in label_cols])
        rows.append(row)
    if first_bad_bytes is not None:
        warnings.warn(
            f"{path}, row {first_bad_bytes}, column {text_col!r}: bytes that are not valid UTF-8; they are kept as "
            "they are (the byte-level model reads the original bytes)",
            stacklevel=2,
        )
    return LabeledTexts(texts=texts, labels=_label_array(labels, label_cols, rows, path), text_col=text_col,
                        label_cols=list(label_cols), source=path, rows=rows)


def _columns(header: list[str], text_col: str | None, label_cols: list[str] | str | None, require_labels: bool,
             path: str) -> tuple[str, list[str]]:
    """The text column and the label columns to read: given ones checked against ``header``, missing ones guessed."""
    if text_col is None:
        text_col = _guess_column(header, TEXT_COLUMN_GUESSES, "text", path)
    elif text_col not in header:
        raise DatasetError(f"{path}: no text column {text_col!r}; columns are {header}")
    if isinstance(label_cols, str):
        label_cols = [label_cols]
    if label_cols is None:
        label_cols = [_guess_column(header, LABEL_COLUMN_GUESSES, "label", path)] if require_labels else []
    if not require_labels:
        label_cols = [name for name in label_cols if name in header]
    for name in label_cols:
        if name not in header:
            raise DatasetError(f"{path}: no label column {name!r}; columns are {header}")
    if text_col in label_cols:
        raise DatasetError(f"{path}: column {text_col!r} is given as both the text and a label column")
    return text_col, list(label_cols)


def _label_value(value, path: str, row: int, column: str) -> str:
    """A label cell as a string (numbers as :func:`_format_number` writes them, other JSON values as JSON)."""
    if _is_missing(value):
        raise DatasetError(f"{path}, row {row}, column {column!r}: missing label ({value!r}); fill it in or drop the "
                           "row")
    if isinstance(value, str):
        return value
    return _format_number(value) if isinstance(value, (int, float)) else json.dumps(value)


def _label_array(labels: list[list[str]], label_cols: list[str], rows: list[int], path: str) -> np.ndarray | None:
    """One label column: (n,) strings; several: (n, k) 0/1 ints, every value checked; none: None."""
    if len(label_cols) == 1:
        return np.asarray([_normalise_label(values[0]) for values in labels], dtype=object)
    if not label_cols:
        return None
    label_array = np.zeros((len(labels), len(label_cols)), dtype=np.int64)
    for index, values in enumerate(labels):
        for column, value in enumerate(values):
            flag = value.strip()
            if flag in ("1", "1.0", "true", "True"):
                label_array[index, column] = 1
            elif flag not in ("0", "0.0", "false", "False"):
                raise DatasetError(f"{path}, row {rows[index]}, column {label_cols[column]!r}: multi-label columns "
                                   f"hold 0 or 1; got {value!r}")
    return label_array


def read_texts(path: str, text_col: str | None = None, *, fmt: str | None = None, stdin=None) -> list[str]:
    """Texts to label, without labels: ``path`` ``"-"`` is standard input, a ``.txt`` file (or standard input
    without ``fmt``) holds one text per line (a final line break ends the last text, it does not add an empty one),
    and any other file is read as :func:`read_dataset` reads it (its text column). Line breaks inside a text need a
    record format (CSV quotes them; JSON escapes them). A UTF-8 byte-order mark is dropped; other bytes that are not
    UTF-8 are kept as they are."""
    import os
    import sys
    import tempfile

    path = str(path)
    if path == "-":
        data = (stdin if stdin is not None else sys.stdin.buffer).read()
        if fmt is None:
            return _lines(data)
        with tempfile.TemporaryDirectory() as folder:  # the record readers take a path: the bytes as a file
            copy = os.path.join(folder, f"stdin.{fmt}")
            with open(copy, "wb") as handle:
                handle.write(data)
            return read_dataset(copy, text_col, fmt=fmt, require_labels=False).texts
    if fmt is None and _is_txt(path):
        try:
            with open_source(path) as raw:
                return _lines(raw.read())
        except SourceError as error:
            raise DatasetError(str(error)) from None
    return read_dataset(path, text_col, fmt=fmt, require_labels=False).texts


def _is_txt(path: str) -> bool:
    """A ``.txt`` name, optionally compressed (``reviews.txt.gz``)."""
    kind = SourceKind.of(path)
    name = path.lower().split("?", 1)[0]
    for suffix, codec in COMPRESSIONS.items():
        if kind.compression == codec and name.endswith(suffix):
            name = name[: -len(suffix)]
    return kind.format == "text" and name.endswith(".txt")


def _lines(data: bytes) -> list[str]:
    """One text per line of ``data`` (\n or \r\n); no text after a final line break."""
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _normalise_label(value: str) -> str:
    """``"1.0"`` and ``" 1"`` are the label ``"1"``: spreadsheets and pandas write integers as floats."""
    value = value.strip()
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def _format_number(value) -> str:
    """Labels compare as strings: ``1`` and ``1.0`` (pandas' float columns) become the same ``"1"``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


__all__ = ["LabeledTexts", "detect_format", "read_dataset", "read_texts"]
