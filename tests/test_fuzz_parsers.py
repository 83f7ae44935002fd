"""Property-based tests of every parser of untrusted input (hypothesis, a few hundred examples each, seconds in CI): each
input loads or raises the declared error naming the file; never another exception, a hang or a write outside the
target. benchmarks/fuzz_parsers.py runs the same targets with many more examples."""
from __future__ import annotations

import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzz_targets as targets  # noqa: E402

CI = settings(max_examples=60, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow],
              derandomize=False, database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module", autouse=True)
def imported():
    """Every parser's modules imported before the first example: the per-example deadline is for the parser, not
    for importing transformers."""
    import bytezoo.data.packed  # noqa: F401
    import bytezoo.hub.safety  # noqa: F401
    import bytezoo.transfer.classifier  # noqa: F401
    import bytezoo.data.labelled  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM  # noqa: F401

    import bytezoo

    bytezoo.create_model("mlstm-256", hidden_size=4, embedding_size=2)
    bytezoo.create_model("lstm-256", hidden_size=4, embedding_size=2)


def scratch():
    """A fresh folder per example (hypothesis runs many examples in one test call); its parent holds nothing else."""
    parent = Path(tempfile.mkdtemp(prefix="bytezoo-fuzz-"))
    folder = parent / "target"
    folder.mkdir()
    return parent, folder


def run(target, *args):
    parent, folder = scratch()
    try:
        target(*args, folder)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def manifest_like():
    entry = st.fixed_dictionaries({"path": st.text(max_size=12), "sha256": st.text("0123456789abcdef", max_size=64),
                                   "size": st.integers(-5, 2**64)})
    document = st.fixed_dictionaries({"format": st.sampled_from(["bytezoo.hub.manifest", "bytezoo.hub.tag", "x"]),
                                      "format_version": json_values, "version": st.text("0123456789abcdef", max_size=17),
                                      "files": st.lists(entry, max_size=3) | json_values, "tag": json_values})
    return document.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200)


@CI
@given(manifest_like())
def test_manifests_and_tags(data):
    run(targets.manifest, data)


@CI
@given(st.text(max_size=40) | st.from_regex(r"(s3|file|memory|hf)://[a-z/]{0,10}(@[ -~]{0,12})?", fullmatch=True))
def test_hub_references(text):
    run(targets.hub_reference, text)


def safetensors_like():
    tensor = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I64", "U8", "BOOL", "X"]) | json_values,
                                    "shape": st.lists(st.integers(-2, 2**40), max_size=3) | json_values,
                                    "data_offsets": st.lists(st.integers(-10, 2**45), min_size=0, max_size=3)})
    header = st.dictionaries(st.text(max_size=8), tensor | json_values, max_size=3)

    def assemble(parts):
        head, data, lie = parts
        encoded = json.dumps(head).encode()
        return (len(encoded) + lie).to_bytes(8, "little", signed=False) + encoded + data
    return st.tuples(header, st.binary(max_size=64), st.integers(0, 3)).map(assemble) | st.binary(max_size=120)


@CI
@given(safetensors_like())
def test_safetensors_headers(data):
    run(targets.safetensors_file, data)


@pytest.mark.parametrize("model_type", ["mlstm", "byte_lstm"])
def test_config_json_of_every_family(model_type):
    @CI
    @example({"hidden_size": None}, None)  # findings: TypeError '<' between NoneType and int
    @example({"hidden_size": False}, None)  # ValueError from __post_init__, unnamed file
    @example({"hidden_size": 1}, None)  # RuntimeError: weights of another shape
    @example({"dtype": ""}, None)  # AttributeError: module 'torch' has no attribute ''
    @example({"dtype": False}, None)  # AttributeError: 'bool' object has no attribute 'is_floating_point'
    @example({"dtype": []}, None)  # IndexError
    @example({"hidden_size": 3037000500}, None)  # RuntimeError: storage size overflow (the long fuzz run's finding)
    @example({"num_layers": 10**6}, None)  # minutes building a million-layer skeleton (the long fuzz run's finding)
    @given(st.dictionaries(st.sampled_from(["hidden_size", "num_layers", "vocab_size", "embedding_size", "weight_norm",
                                            "kernel", "forget_bias", "use_cache", "architectures", "dtype",
                                            "auto_map", "transformers_version", "zzz"]), json_values, max_size=5),
           st.none() | st.none() | st.binary(max_size=80))
    def check(config, weights):
        run(targets.checkpoint, model_type, config, weights)

    check()


@CI
@given(st.fixed_dictionaries({"format": st.sampled_from(["bytezoo-transfer-classifier", "x"]),
                              "format_version": json_values, "task": json_values, "classes": json_values,
                              "n_features": json_values, "C": json_values, "params": json_values,
                              "dev_scores": json_values}).map(lambda d: json.dumps(d).encode()) | st.binary(max_size=80),
       st.binary(max_size=80))
@example(b'{"format": "bytezoo-transfer-classifier", "format_version": 1}', b"")  # findings: KeyError, ...
@example(b'{"format": "bytezoo-transfer-classifier", "format_version": "1"}', b"")  # TypeError comparing versions
def test_classifier_json(metadata, weights):
    run(targets.classifier, metadata, weights)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("compression", sorted(targets.COMPRESSORS))
def test_dataset_readers(fmt, compression):
    @CI
    @example(b"not compressed at all", False)  # findings: LZMAError, ZstdError escaped the readers
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), st.booleans())
    def check(data, compress):
        run(targets.dataset, data, fmt, compression, compress)

    check()


@CI
@given(st.lists(st.text(max_size=16) | st.sampled_from(["../x", "/etc/x", "a/../../b", "C:\\x", "ok/file.txt"]),
                min_size=1, max_size=4), st.sampled_from(["zip", "tar"]))
def test_archive_members(names, kind):
    run(targets.archive, names, kind)


@CI
@given(st.fixed_dictionaries({"format": st.sampled_from(["bytezoo-packed-corpus", "x"]),
                              "format_version": st.sampled_from([1, 2]) | json_values,
                              "total_bytes": json_values, "block_bytes": st.sampled_from([4096]) | json_values,
                              "shards": json_values, "documents": json_values, "crc32": json_values,
                              "sources": json_values}).map(lambda d: json.dumps(d).encode()) | st.binary(max_size=80))
def test_packed_corpus_index(index):
    run(targets.packed_index, index)


# ---------------------------------------------------------------------------------------------------- issue 25's classes
HOSTILE_NAMES = ["../x", "/etc/x", "a/../../b", "C:\\x", "x.json", "x.json/y.json", "X.JSON", ".hidden", "a//b", "",
                 ".", "..", "a\x00b", "a\x1b[2Jb", "tags/../../v", "n" * 201, "n" * 255, "/".join(["d" * 120] * 9),
                 "ok/file.txt", "README.md", "readme.md", "shard-00000.bin", "model.safetensors", "\udcff.txt"]
hostile_name = st.sampled_from(HOSTILE_NAMES) | st.text(alphabet="ab./\\\x00\x1bA-", max_size=12)


@CI
@given(st.lists(hostile_name, min_size=1, max_size=4))
def test_hostile_manifest_paths(paths):
    run(targets.manifest_paths, paths)


@CI
@given(st.sampled_from(["v1", "latest", "a"]) | hostile_name, st.sampled_from(["v1", "latest"]) | hostile_name | json_values)
def test_hostile_tag_documents(file_name, written):
    run(targets.tag_document, file_name, written)


@CI
@given(st.lists(hostile_name | json_values, min_size=1, max_size=3))
def test_hostile_packed_index_names(names):
    run(targets.packed_index_names, names)


@CI
@given(st.dictionaries(st.text(max_size=6), hostile_name | json_values, max_size=4) | json_values)
def test_hostile_weight_maps(mapping):
    run(targets.weight_map, mapping)


@CI
@given(st.integers(0, 3000), st.integers(0, 3000))
@example(100, 2000)  # the lie of the issue: a blob far longer than its entry
@example(2000, 100)
def test_lying_blob_sizes(claimed, actual):
    run(targets.lying_blob, claimed, actual)


@settings(CI, max_examples=12)
@given(st.sampled_from([1, 99, 101, 990, 1000, 5000, 100_000]), st.sampled_from(["list", "dict"]))
def test_deep_json_everywhere(depth, container):
    run(targets.deep_json, depth, container)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_records_past_a_small_limit(fmt):
    @CI
    @given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), st.sampled_from(["", ".gz"]),
           st.integers(1, 64))
    def check(data, compression, limit):
        run(targets.records_with_a_limit, data, fmt, compression, limit)

    check()


credential_parts = st.fixed_dictionaries({
    "scheme": st.sampled_from(["http", "https", "s3", "gs", "az", "ftp"]),
    "user": st.text("abcdefghijklmnopqrstuvwxyz0123456789", max_size=8),
    "secret": st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=_-.!~*'()", min_size=4, max_size=24).map(lambda s: "SECRET" + s),
    "host": st.sampled_from(["example.com", "127.0.0.1:8080", "bucket", "host:80"]),
    "path": st.text("abcdefghijklmnopqrstuvwxyz0123456789/@.-", max_size=16),
    "key": st.sampled_from(["token", "sig", "X-Amz-Signature", "sv", "a"]),
})


@CI
@given(credential_parts)
def test_credentials_planted_in_every_url_field(parts):
    run(targets.planted_credentials, parts)
