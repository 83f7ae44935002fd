"""What may travel through the hub: an allow-list of data-only file types, checked by name *and* by content.

Nothing executable ever comes from a hub. The original mLSTM releases were pickles behind download links, and
unpickling runs arbitrary code, so the hub accepts only formats that a reader parses as data:

=================  =============================================================================
suffix             content check
=================  =============================================================================
``.safetensors``   an 8-byte header length, a JSON header whose tensors lie inside the file
``.json``          valid UTF-8 JSON
``.jsonl``         UTF-8 text (config, tokenizer, summaries, reports, predictions)
``.md`` ``.txt``   UTF-8 text (model card, notes, vocabularies)
``.csv`` ``.tsv``  UTF-8 text (tables of results)
``.html``          UTF-8 text (rendered reports; never executed by bytezoo)
``.png``           PNG signature (plots)
``.jpg``/``.jpeg`` JPEG signature
=================  =============================================================================

Every other suffix is refused, except that a push leaves out Python source (``.py``, ``.pyc``) with a warning:
``save_pretrained`` copies a model's code next to its weights for ``trust_remote_code``, and code never travels
through the hub (bytezoo provides the classes). The one exception is ``hf://``, where the code that ``auto_map``
names is committed for transformers users, outside the manifest; bytezoo's pulls never download it. Files named
like PyTorch/NumPy/joblib checkpoints (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt``, ``.npy``, ...) get a
message that says they are pickles and how to convert them. Content checks also catch a pickle or a ``torch.save``
zip renamed to an allowed suffix. The checks run when pushing and again when pulling, because a reader cannot trust
that whoever wrote the hub ran them.
"""
from __future__ import annotations

import codecs
import struct
from pathlib import Path, PurePosixPath
from typing import Any

from bytezoo.untrusted import jsonio
from bytezoo.untrusted.names import check_relative_path

from .errors import UnsafeFileError

TEXT_SUFFIXES = frozenset({".jsonl", ".md", ".txt", ".csv", ".tsv", ".html"})
ALLOWED_SUFFIXES = frozenset({".safetensors", ".json", ".png", ".jpg", ".jpeg"}) | TEXT_SUFFIXES

# Suffixes of formats that are (or may be) pickles; refused with a pointer to safetensors.
PICKLE_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".npy", ".npz", ".joblib", ".dill", ".sav"}
)

_PICKLE_HINT = (
    "pickle-based checkpoints can run arbitrary code when loaded, so the hub refuses them; save tensors with "
    "safetensors instead (model.save_pretrained(...) writes model.safetensors, or "
    "safetensors.torch.save_file(state_dict, 'model.safetensors'))"
)
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors library's own limit
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_ZIP_SIGNATURE = b"PK\x03\x04"  # torch.save's default format: a zip holding data.pkl


def check_allowed_name(path: str) -> None:
    """Raise :class:`UnsafeFileError` unless ``path`` is a safe relative path (the one check of a name from outside,
    :func:`bytezoo.untrusted.names.check_relative_path`) and its suffix is on the allow-list."""
    check_relative_path(path, "file path", UnsafeFileError)
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UnsafeFileError(f"refusing {path!r}: {suffix} files are pickles or may contain them; {_PICKLE_HINT}")
    if suffix not in ALLOWED_SUFFIXES:
        allowed = ", ".join(sorted(ALLOWED_SUFFIXES))
        raise UnsafeFileError(
            f"refusing {path!r}: {suffix or 'files without a suffix'} not on the hub's allow-list of data-only "
            f"formats ({allowed})"
        )


def check_file(local_path: str | Path, name: str) -> dict[str, Any] | None:
    """Check the *content* of ``local_path`` (shared as ``name``) against what its suffix promises.

    Returns the parsed safetensors header for ``.safetensors`` files (the model card counts parameters from it),
    else ``None``. Raises :class:`UnsafeFileError` naming ``name`` when the content is a pickle, a zip, or not what
    the suffix says.
    """
    check_allowed_name(name)
    suffix = PurePosixPath(name).suffix.lower()
    with open(local_path, "rb") as handle:
        head = handle.read(16)
        _refuse_pickled_content(head, name)
        if suffix == ".safetensors":
            header = read_safetensors_header(handle, name)
            _check_with_safetensors(local_path, name)
            return header
        handle.seek(0)
        if suffix == ".json":
            try:
                jsonio.loads(handle.read())
            except ValueError as error:
                raise UnsafeFileError(f"refusing {name!r}: not valid UTF-8 JSON ({error})") from None
        elif suffix in TEXT_SUFFIXES:
            _check_utf8(handle, name)
        elif suffix == ".png" and not head.startswith(_PNG_SIGNATURE):
            raise UnsafeFileError(f"refusing {name!r}: not a PNG image (bad signature)")
        elif suffix in (".jpg", ".jpeg") and not head.startswith(_JPEG_SIGNATURE):
            raise UnsafeFileError(f"refusing {name!r}: not a JPEG image (bad signature)")
    return None


def read_safetensors_header(handle, name: str) -> dict[str, Any]:
    """Parse and validate the header of an open safetensors file (positioned anywhere) without reading tensors."""
    handle.seek(0, 2)
    file_size = handle.tell()
    handle.seek(0)
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise UnsafeFileError(f"refusing {name!r}: too short to be a safetensors file")
    (header_size,) = struct.unpack("<Q", prefix)
    if header_size > min(_MAX_SAFETENSORS_HEADER, file_size - 8):
        raise UnsafeFileError(f"refusing {name!r}: not a safetensors file (header size {header_size} is impossible)")
    try:
        header = jsonio.loads(handle.read(header_size))  # a tensor named twice is refused here
    except ValueError as error:
        raise UnsafeFileError(f"refusing {name!r}: safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise UnsafeFileError(f"refusing {name!r}: safetensors header is not a JSON object")
    data_size = file_size - 8 - header_size
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            valid = isinstance(entry["dtype"], str) and all(int(dim) >= 0 for dim in entry["shape"])
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid or not (0 <= begin <= end <= data_size):
            raise UnsafeFileError(f"refusing {name!r}: safetensors entry {key!r} is malformed or outside the file")
    return header


def _check_with_safetensors(local_path: str | Path, name: str) -> None:
    """The safetensors library's own validation (what loading will do): every tensor's byte range must match its
    dtype and shape exactly and the ranges must cover the data, so a header claiming a [100, 100] F32 tensor in 64
    bytes, or terabytes, is refused here, before anything is allocated. It maps the file; it reads no tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(local_path), framework="numpy") as file:
            file.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise UnsafeFileError(f"refusing {name!r}: not a valid safetensors file ({error})") from None


def _refuse_pickled_content(head: bytes, name: str) -> None:
    # Protocol 2+ pickles start with PROTO (0x80) and the protocol number; torch.save writes a zip with data.pkl.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise UnsafeFileError(f"refusing {name!r}: its content is a Python pickle; {_PICKLE_HINT}")
    if head.startswith(_ZIP_SIGNATURE):
        raise UnsafeFileError(
            f"refusing {name!r}: its content is a zip archive (torch.save's format wraps a pickle); {_PICKLE_HINT}"
        )


def _check_utf8(handle, name: str, chunk_size: int = 2**20) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := handle.read(chunk_size):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise UnsafeFileError(f"refusing {name!r}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def count_parameters(header: dict[str, Any]) -> int:
    """Number of scalar values in the tensors a safetensors header describes."""
    total = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total
