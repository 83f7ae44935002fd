"""The prepared data sets' TSVs (``train/dev/test.tsv``, header ``text<TAB>label``), read with the csv module alone,
independently of bytezoo's own readers, so the tests check what :mod:`bytezoo.data.layout` wrote."""
from __future__ import annotations

import csv
import os


def read_labelled_tsv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The ``(texts, labels)`` of a ``train/dev/test.tsv``; a wrong header or a row of other than two fields fails."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file, delimiter="\t")
        header = next(reader, None)
        assert tuple(header or ()) == ("text", "label"), (
            f"{path}: expected the header 'text<TAB>label', found {header!r}")
        for line_number, row in enumerate(reader, start=2):
            assert len(row) == 2, f"{path}: record {line_number} has {len(row)} fields, expected 2 (text, label)"
            texts.append(row[0])
            labels.append(row[1])
    return texts, labels
