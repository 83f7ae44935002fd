"""bytezoo.data.labelled: labelled sets from CSV, TSV and JSON lines (any fsspec URL, any compression), and the
texts ``bytezoo classify`` labels; rows and columns named in every error."""
from __future__ import annotations

import gzip
import io
import json
import warnings

import numpy as np
import pytest

from bytezoo.data.errors import DatasetError
from bytezoo.data.labelled import read_dataset, read_texts
from bytezoo.transfer.featurizer import text_to_bytes


def test_reads_csv_tsv_jsonl_and_compressed_files(tmp_path):
    (tmp_path / "a.csv").write_text('label,sentence\n1,"Good, really"\n0,bad\n', encoding="utf-8")
    (tmp_path / "a.tsv").write_text("text\tsentiment\nnice\tpositive\nmeh\tneutral\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(json.dumps({"review": "ok", "y": 2.0}) + "\n\n"
                                      + json.dumps({"review": "no", "y": 1}) + "\n")
    with gzip.open(tmp_path / "b.csv.gz", "wt") as handle:
        handle.write("label,sentence\n1,zipped\n")
    csv_data = read_dataset(str(tmp_path / "a.csv"))
    assert csv_data.texts == ["Good, really", "bad"] and csv_data.labels.tolist() == ["1", "0"]
    assert csv_data.text_col == "sentence"
    tsv_data = read_dataset(str(tmp_path / "a.tsv"), label_cols=["sentiment"])
    assert tsv_data.labels.tolist() == ["positive", "neutral"]
    json_data = read_dataset(str(tmp_path / "a.jsonl"), text_col="review", label_cols="y")
    assert json_data.labels.tolist() == ["2", "1"]  # 2.0 and 2 are one label
    assert read_dataset(str(tmp_path / "b.csv.gz")).texts == ["zipped"]


def test_reads_from_an_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    try:
        with fs.open("/transfer-test/data.tsv", "w") as handle:
            handle.write("text\tlabel\nhello\t1\n")
        assert read_dataset("memory://transfer-test/data.tsv").texts == ["hello"]
    finally:
        fs.rm("/transfer-test", recursive=True)


def test_multilabel_columns(tmp_path):
    (tmp_path / "m.csv").write_text("Tweet,joy,anger\nyay,1,0\ngrr,0,1\nhm,0,0\n")
    data = read_dataset(str(tmp_path / "m.csv"), "Tweet", ["joy", "anger"])
    assert data.multilabel and data.labels.tolist() == [[1, 0], [0, 1], [0, 0]]
    (tmp_path / "bad.csv").write_text("Tweet,joy,anger\nyay,1,0\ngrr,2,1\n")
    with pytest.raises(DatasetError, match=r"row 3, column 'joy'.*0 or 1"):
        read_dataset(str(tmp_path / "bad.csv"), "Tweet", ["joy", "anger"])


@pytest.mark.parametrize(
    "content, columns, message",
    [
        ("label,sentence\n1,a\n,b\n", {}, r"row 3, column 'label': missing label"),
        ("label,sentence\n1,a\nNaN,b\n", {}, r"row 3, column 'label': missing label"),
        ("label,sentence\n1,a\n", {"text_col": "review"},
         r"no text column 'review'; columns are \['label', 'sentence'\]"),
        ("label,sentence\n1,a\n", {"label_cols": ["stars"]}, r"no label column 'stars'"),
        ("id,body2\n1,a\n", {}, r"no text column given"),
        ("label,sentence\n1,a,extra\n", {}, r"row 2: 3 fields but the header has 2"),
        ("label,sentence\n", {}, r"no data rows"),
    ],
)
def test_bad_datasets_name_the_row_and_column(tmp_path, content, columns, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_dataset(str(path), **columns)


def test_non_utf8_bytes_and_huge_fields_are_kept(tmp_path):
    huge = "w" * 300_000  # above csv's default field limit
    (tmp_path / "d.csv").write_bytes(b"label,sentence\n1,caf\xe9 ok\n0," + huge.encode() + b"\n")
    with pytest.warns(UserWarning, match=r"row 2, column 'sentence': bytes that are not valid UTF-8"):
        data = read_dataset(str(tmp_path / "d.csv"))
    assert text_to_bytes(data.texts[0], "none") == b"caf\xe9 ok"
    assert len(data.texts[1]) == 300_000
    with pytest.raises(DatasetError, match="file not found"):
        read_dataset(str(tmp_path / "missing.csv"))


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    """Spreadsheets save "CSV UTF-8" with a byte-order mark: it is not part of the first column's name."""
    for name, content in (("d.csv", "label,text\n1,great\n0,dull\n"), ("d.tsv", "text\tlabel\ngreat\t1\n"),
                          ("d.jsonl", '{"text": "great", "label": 1}\n')):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + content.encode())
        data = read_dataset(str(tmp_path / name))  # both columns guessed by name
        assert data.text_col == "text" and data.label_cols == ["label"] and data.texts[0] == "great", name


def test_texts_to_label_from_lines_standard_input_or_records(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfgreat film\r\n\nbad \xff one\n")  # a BOM, CRLF, an empty line
    assert read_texts(str(tmp_path / "t.txt")) == ["great film", "", "bad \udcff one"]
    assert read_texts("-", stdin=io.BytesIO(b"one\ntwo")) == ["one", "two"]  # no final line break: still a text
    assert read_texts("-", fmt="csv", stdin=io.BytesIO(b"text,x\n\"a, quoted\nline\",1\n")) == ["a, quoted\nline"]
    (tmp_path / "t.jsonl").write_text('{"review": "fine"}\n')
    assert read_texts(str(tmp_path / "t.jsonl")) == ["fine"]


def test_semeval_multilabel_reads(semeval_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_dataset(str(semeval_dir / "val.csv"), "Tweet", ["anger", "joy", "fear"])
    assert data.labels.shape == (len(data.texts), 3) and set(np.unique(data.labels)) <= {0, 1}


def test_one_list_of_record_formats_for_every_reader_and_option(tmp_path, capsys):
    """The record formats are written once (bytezoo.data.formats): the labelled-set reader, the pretraining reader,
    ``TransferConfig`` and ``--format`` all take that list and name it when refusing another."""
    from bytezoo.cli import main
    from bytezoo.data.formats import RECORD_FORMATS, SourceError, iter_records
    from bytezoo.errors import InvalidArgumentError
    from bytezoo.transfer.config import TransferConfig

    assert RECORD_FORMATS == ("csv", "tsv", "jsonl")
    path = tmp_path / "d.csv"
    path.write_text("label,sentence\n1,a\n")
    with pytest.raises(DatasetError, match="unknown format 'xml'; choose csv, tsv or jsonl"):
        read_dataset(str(path), fmt="xml")
    with pytest.raises(SourceError, match="not a record file"):
        list(iter_records(str(path), "xml"))
    with pytest.raises(InvalidArgumentError, match="format 'xml' is not one of csv, tsv, jsonl"):
        TransferConfig(model="m", train=str(path), output="o", format="xml").validated()
    for fmt in RECORD_FORMATS:
        TransferConfig(model="m", train=str(path), output="o", format=fmt).validated()
    with pytest.raises(SystemExit):
        main(["classify", "--pipeline", "p", "--format", "xml", "text"])
    assert "choose from 'csv', 'tsv', 'jsonl'" in capsys.readouterr().err
