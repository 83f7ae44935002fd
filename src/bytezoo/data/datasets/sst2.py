"""SST-2, the Stanford Sentiment Treebank's binary task as GLUE ships it (phrase-level training set).

GLUE's test labels are private, so its labelled ``dev.tsv`` is our test split, and dev is carved from its train split
(10%, stratified). ``bytezoo data download sst2``.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import IO

from bytezoo.data.archives import archive_files, member_lines
from bytezoo.data.errors import DatasetError
from bytezoo.data.layout import DatasetSpec, carve_dev, dev_size, stratified_dev_indices, write_splits

_LABELS = {"0": "negative", "1": "positive"}


def _read(file: IO[bytes], member: str, archive: Path) -> list[tuple[str, str]]:
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
            if len(record) != 2 or record[1] not in _LABELS:
                raise DatasetError(f"{member} line {line_number}: expected 'sentence<TAB>0|1', found {record!r}")
            rows.append((record[0].strip(), _LABELS[record[1]]))
    return rows


def convert(archive: Path, out: Path, spec: DatasetSpec) -> dict[str, int]:
    """GLUE SST-2: its labelled ``dev.tsv`` becomes our test split (GLUE's test labels are private); dev is carved
    from train."""
    found = {}
    for name, file in archive_files(archive):
        if name in ("SST-2/train.tsv", "SST-2/dev.tsv"):
            found[name] = _read(file, name, archive)
    missing = sorted({"SST-2/train.tsv", "SST-2/dev.tsv"} - set(found))
    if missing:
        raise DatasetError(f"{archive.name} lacks {', '.join(missing)}: not the GLUE SST-2 archive?")
    labels = [label for _, label in found["SST-2/train.tsv"]]
    dev_indices = stratified_dev_indices(labels, dev_size(len(labels), spec.dev_fraction))
    return write_splits(out, *carve_dev(found["SST-2/train.tsv"], dev_indices), found["SST-2/dev.tsv"])


SPEC = DatasetSpec(
    name="sst2",
    description="Stanford Sentiment Treebank, binary, as GLUE SST-2 (phrase-level training set)",
    url="https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
    checksums=("md5:9f81648d4199384278b86e315dac217c",),
    download_size="7.4 MB",
    splits="train 60,614 / dev 6,735 (carved from GLUE train) / test 872 (GLUE dev)",
    dev_fraction=0.1,
    convert=convert,
    max_download_bytes=16 << 20,  # 7,439,277 bytes
    notes=(
        "GLUE's test labels are private, so GLUE's dev set is our test set and dev is carved from GLUE's "
        "phrase-level train set. This is not the sentence-level 6,920 / 872 / 1,821 split of the "
        "sentiment-neuron paper (Radford et al. 2017): scores are not directly comparable with it."
    ),
)
