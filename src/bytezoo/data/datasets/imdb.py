"""IMDB, the Large Movie Review Dataset (Maas et al. 2011): 50k polar movie reviews and 50k unlabelled ones.

``aclImdb/{train,test}/{pos,neg}/*.txt`` are the labelled splits (dev: 10% of train, stratified), and
``aclImdb/train/unsup/*.txt`` the language-model text. ``bytezoo data download imdb``.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from bytezoo.data.archives import archive_files, read_member
from bytezoo.data.errors import DatasetError
from bytezoo.data.layout import (
    SPLIT_SEED,
    DatasetSpec,
    carve_dev,
    dev_size,
    stratified_dev_indices,
    write_documents,
    write_splits,
)

_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/[^/]+\.txt$")


def convert(archive: Path, out: Path, spec: DatasetSpec) -> dict[str, int]:
    """``aclImdb/{train,test}/{pos,neg}/*.txt`` are the labelled splits, ``aclImdb/train/unsup/*.txt`` the LM text."""
    labelled: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}  # (member name, text, label)
    unlabelled: list[tuple[str, str]] = []
    for name, file in archive_files(archive):
        match = _MEMBER.match(name)
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
    labels = [label for _, label in rows["train"]]
    train, dev = carve_dev(rows["train"], stratified_dev_indices(labels, dev_size(len(labels), spec.dev_fraction)))
    counts = write_splits(out, train, dev, rows["test"])
    if unlabelled:
        counts["lm_train.txt"] = write_documents(out / "lm_train.txt", (text for _, text in sorted(unlabelled)))
    return counts


SPEC = DatasetSpec(
    name="imdb",
    description="Large Movie Review Dataset (Maas et al. 2011): 50k polar movie reviews + 50k unlabelled",
    url="http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    checksums=("md5:7c2ac02c03563afcf9b574c7e56c153a", "sha1:01ada507287d82875905620988597833ad4e0903"),
    download_size="84 MB",
    splits="train 22,500 / dev 2,500 / test 25,000; lm_train 50,000 unlabelled reviews",
    dev_fraction=0.1,
    convert=convert,
    max_download_bytes=100 << 20,  # the archive: 84,125,825 bytes
)
