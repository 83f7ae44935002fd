"""Amazon review polarity (Zhang et al. 2015): 4M reviews, title + text, from Google Drive.

Zhang et al.'s CSVs (``label,title,text``, no header) are converted one row at a time, so 3.6M rows never sit in
memory; dev is the rows whose text hashes into the first 1% of hash space. ``bytezoo data download amazon-polarity``.
"""
from __future__ import annotations

import csv
from contextlib import ExitStack
from pathlib import Path

from bytezoo.data.archives import archive_files, member_lines
from bytezoo.data.errors import DatasetError
from bytezoo.data.layout import DatasetSpec, TsvWriter, in_hashed_dev

_LABELS = {"1": "negative", "2": "positive"}
_SPLITS = {"amazon_review_polarity_csv/train.csv": "train", "amazon_review_polarity_csv/test.csv": "test"}


def _text(title: str, body: str) -> str:
    """Title and body as one text; a title that already ends a sentence is not given a second full stop."""
    title, body = title.strip(), body.strip()
    if not title:
        return body
    return f"{title} {body}" if title[-1] in ".!?" else f"{title}. {body}"


def convert(archive: Path, out: Path, spec: DatasetSpec) -> dict[str, int]:
    """Zhang et al.'s CSVs (``label,title,text``, no header), converted one row at a time: 3.6M rows never sit in
    memory. Dev is the rows whose text hashes into the first ``dev_fraction`` of hash space."""
    with ExitStack() as stack:
        writers = {name: stack.enter_context(TsvWriter(out / name)) for name in ("train.tsv", "dev.tsv", "test.tsv")}
        seen = set()
        for name, file in archive_files(archive):
            split = _SPLITS.get(name)
            if split is None:
                continue
            seen.add(split)
            with member_lines(file, name, archive) as lines:
                for line_number, record in enumerate(csv.reader(lines), start=1):
                    lines.end_record()
                    if len(record) != 3 or record[0] not in _LABELS:
                        raise DatasetError(f"{name} line {line_number}: expected '1|2,title,text', found "
                                           f"{record!r}"[:300])
                    text = _text(record[1], record[2])
                    if split == "train":
                        writer = writers["dev.tsv"] if in_hashed_dev(text, spec.dev_fraction) else writers["train.tsv"]
                    else:
                        writer = writers["test.tsv"]
                    writer.write(text, _LABELS[record[0]])
        if seen != {"train", "test"}:
            raise DatasetError(f"{archive.name} lacks amazon_review_polarity_csv/train.csv or test.csv: not the Amazon "
                               "polarity archive?")
    return {name: writer.rows for name, writer in writers.items()}


SPEC = DatasetSpec(
    name="amazon-polarity",
    description="Amazon review polarity (Zhang et al. 2015): 4M reviews, title + text",
    url="https://drive.google.com/uc?export=download&id=0Bz8a_Dbh9QhbaW12WVVZS2drcnM&confirm=t",
    checksums=("md5:fe39f8b653cada45afd5792e0f0e8f9b",),
    download_size="688 MB",
    splits="train ~3,564,000 / dev ~36,000 (1% of train, by text hash) / test 400,000",
    dev_fraction=0.01,
    convert=convert,
    max_download_bytes=800 << 20,  # about 688 MB
    notes="Served from Google Drive; '&confirm=t' skips its large-file confirmation page.",
)
