"""The guards of bytezoo.untrusted, one by one: redaction, the name check, the size caps, strict JSON, the network's
one-line failures. (The user paths that rely on them are tested in test_hostile_names.py, test_secrets.py,
test_bounded_reads.py, test_network_failures.py and test_parsers_one_line.py.)"""
from __future__ import annotations

import io
import json

import pytest

from bytezoo.errors import ByteZooError, InvalidArgumentError
from bytezoo.untrusted import jsonio, limits, network
from bytezoo.untrusted.names import UnsafeNameError, check_distinct_paths, check_file_name, printable
from bytezoo.redaction import redact_text, redact_url, secrets_in


@pytest.mark.parametrize("url, shown", [
    ("https://alice:s3cret@example.com/models/x?token=abc", "https://***@example.com/models/x?***"),
    ("s3://AKIAEXAMPLE:wJalr/XUtn+FEMI@bucket/corpus/*.jsonl", "s3://***@bucket/corpus/*.jsonl"),
    ("s3://KEY:1234/abc@bucket/x", "s3://***@bucket/x"),  # a secret of digits and a slash is not a port on s3
    ("s3://k:a@b@bucket/x", "s3://***@bucket/x"),  # a password holding '@'
    ("simplecache::s3://k:secret@bucket/x", "simplecache::s3://***@bucket/x"),
    ("https://host/x?X-Amz-Signature=abc#frag", "https://host/x?***"),
    ("s3://bucket/models/mlstm@v1", "s3://bucket/models/mlstm@v1"),  # a hub reference's tag is not user information
    ("https://host:8443/repo@v1", "https://host:8443/repo@v1"),  # nor is a port
    ("runs/local/folder?", "runs/local/folder?"),  # not a URL: left alone
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_redact_text_finds_urls_in_messages_and_masks_known_secrets_anywhere():
    message = ("400, message='Bad Request', url='https://h/x?sig=abc&t=1': token hf_abcdefghijklmnopqrstuvwxyz012345 "
               'and Invalid bucket name "KEY:wJalr/XUtn@bucket"')
    shown = redact_text(message, secrets_in("s3://KEY:wJalr/XUtn@bucket/x"))
    assert "sig=abc" not in shown and "hf_abcdef" not in shown and "wJalr/XUtn" not in shown
    assert "url='https://h/x?***" in shown and "hf_***" in shown and '"KEY:***@bucket"' in shown
    assert str(ByteZooError(f"cannot read {'http://u:pw@h/x?t=secret'}")) == "cannot read http://***@h/x?***"


def test_the_name_check():
    assert check_file_name("shard-00000.bin") == "shard-00000.bin"
    for bad in ("a/b", "..", "", ".hidden", "a\x1bb", "x" * 201, "a\\b"):
        with pytest.raises(UnsafeNameError):
            check_file_name(bad)
    check_distinct_paths(["a.json", "b/a.json", "b/c.json"])
    with pytest.raises(UnsafeNameError, match="'a.json' is listed twice"):
        check_distinct_paths(["a.json", "a.json"])
    with pytest.raises(UnsafeNameError, match="'b' is a file, and 'b/c.json' needs a folder"):
        check_distinct_paths(["b", "b/c.json"])
    assert printable("a\x1b[2J\u202eb\tc") == "a\\x1b[2J\\u202eb\\x09c" and printable("café") == "café"


def test_the_size_caps(monkeypatch):
    assert limits.max_record_bytes() == 64 << 20
    monkeypatch.setenv("BYTEZOO_MAX_RECORD_MB", "0.5")
    assert limits.max_record_bytes() == 1 << 19 and limits.max_record_bytes(10) == 10
    monkeypatch.setenv("BYTEZOO_MAX_RECORD_MB", "-1")
    with pytest.raises(InvalidArgumentError, match="BYTEZOO_MAX_RECORD_MB='-1'"):
        limits.max_record_bytes()

    class Endless(io.RawIOBase):
        read_bytes = 0

        def readinto(self, buffer):
            buffer[:] = b"x" * len(buffer)
            self.read_bytes += len(buffer)
            return len(buffer)

    source = Endless()
    assert len(limits.read_at_most(source, 1000, chunk=64)) == 1001 and source.read_bytes == 1001


def test_strict_json():
    assert jsonio.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}
    for data, message in ((b'{"a": 1, "a": 2}', "'a' is given twice"), (b'{"a": NaN}', "NaN is not a JSON number"),
                          (b"[" * 101 + b"]" * 101, "nested more than 100 levels"),
                          (b"[" * 100_000 + b"]" * 100_000, "nested too deeply to parse"),
                          (b"\xff", "not UTF-8"), (b"{", "Expecting property name")):
        with pytest.raises(jsonio.JSONDocumentError, match=message):
            jsonio.loads(data)
    assert jsonio.loads(b'{"a": 1, "a": NaN}', strict=False)["a"] != 0  # records: lenient, but never a RecursionError
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonio.loads("[" * 100_000, strict=False)
    assert json.loads(jsonio.dumps({"url": "s3://k:secret@b/x", "x": float("nan")})) == {"url": "s3://***@b/x",
                                                                                        "x": None}
    assert json.loads(jsonio.dumps({"text": "http://h/x?t=1"}, redact=False)) == {"text": "http://h/x?t=1"}


def test_a_failed_request_is_described_in_one_line():
    import aiohttp
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    forbidden = aiohttp.ClientResponseError(None, (), status=403, message="Forbidden")
    assert network.describe(forbidden).startswith("HTTP 403 (Forbidden): not allowed")
    throttled = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
    assert network.describe(throttled) == "HTTP 503 (SlowDown): the server failed: try again later"
    assert "cannot connect" in network.describe(EndpointConnectionError(endpoint_url="http://h"))
    assert "no data for 60 s (BYTEZOO_IDLE_TIMEOUT)" in network.describe(ReadTimeoutError(endpoint_url="http://h"))
    assert network.describe(KeyError("a bug")) is None
    with pytest.raises(ByteZooError, match=r"^reading http://\*\*\*@h/x\?\*\*\*: HTTP 403"):
        with network.remote_errors("http://u:pw@h/x?t=1", "reading", ByteZooError):
            raise forbidden
