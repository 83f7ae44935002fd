"""The check of a name that came from outside, before any file-system call uses it.

A hub's manifest, a tag document, a packed corpus's index and a checkpoint's ``model.safetensors.index.json`` all
name files that bytezoo then opens or creates. Whoever wrote them may be hostile, so every such name passes one of
these checks first:

- :func:`check_relative_path`: a relative POSIX path that stays inside its folder (no absolute path, ``..``, empty,
  hidden or over-long component, backslash or control character);
- :func:`check_file_name`: the same for a plain file name (one component: a shard, a checksum file, a tag);
- :func:`check_distinct_paths`: a set of paths that can all exist side by side: none listed twice (nor twice up to
  letter case, which a case-insensitive disk would merge), and none both a file and a folder (``x.json`` beside
  ``x.json/y.json``).

:func:`printable` shows a name from outside with control characters escaped, so that printing it (``hub ls``) can
never send raw terminal escapes.
"""
from __future__ import annotations

from collections.abc import Iterable

from bytezoo.errors import ByteZooError

MAX_COMPONENT_BYTES = 200  # NAME_MAX is 255: room for the temporary names made from a name (.NAME.UUID.partial)
MAX_PATH_BYTES = 1024  # a relative path; the cache's own prefix still has to fit in PATH_MAX (4096)


class UnsafeNameError(ByteZooError, ValueError):
    """A name from outside that would leave its folder, clash with another, or cannot be stored: names it."""


def _refuse(error: type[Exception], what: str, name, reason: str):
    raise error(f"invalid {what} {printable(repr(name))}: {reason}")


def check_relative_path(path: str, what: str = "file path", error: type[Exception] = UnsafeNameError) -> str:
    """``path`` if it is a safe relative POSIX path inside its folder, else raise ``error`` naming ``what`` and
    ``path`` and the reason. Refuses absolute paths, ``..``, ``.`` and empty components, backslashes, control
    characters, hidden (dot) components, components over 200 bytes and paths over 1024 bytes."""
    if not isinstance(path, str) or not path:
        _refuse(error, what, path, "expected a non-empty relative path")
    if "\\" in path or any(ord(char) < 32 or ord(char) == 127 for char in path):
        _refuse(error, what, path, "backslashes and control characters are not allowed")
    if path.startswith("/"):
        _refuse(error, what, path, "absolute paths are not allowed")
    try:
        encoded = len(path.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: no file system stores them the same way twice
        _refuse(error, what, path, "not valid Unicode")
    if encoded > MAX_PATH_BYTES:
        _refuse(error, what, path, f"longer than {MAX_PATH_BYTES} bytes")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            _refuse(error, what, path, "empty, '.' or '..' components are not allowed")
        if part.startswith("."):
            _refuse(error, what, path, "hidden files and directories are not allowed")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            _refuse(error, what, path, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
    return path


def check_file_name(name: str, what: str = "file name", error: type[Exception] = UnsafeNameError) -> str:
    """``name`` if it is a safe plain file name (one component, see :func:`check_relative_path`), else raise."""
    check_relative_path(name, what, error)
    if "/" in name:
        _refuse(error, what, name, "a plain file name is expected, not a path")
    return name


def check_distinct_paths(paths: Iterable[str], what: str = "the file list",
                         error: type[Exception] = UnsafeNameError) -> None:
    """Raise ``error`` (naming ``what`` and the path) unless ``paths``, each already checked, can all exist side by
    side in one folder: none listed twice, even up to letter case, and none both a file and the folder of another."""
    seen: dict[str, str] = {}
    for path in paths:
        key = path.casefold()
        if key in seen:
            other = seen[key]
            reason = ("is listed twice" if other == path else f"differs from {printable(repr(other))} only in letter "
                      "case (a case-insensitive disk would keep one of them)")
            raise error(f"{what}: {printable(repr(path))} {reason}")
        seen[key] = path
    folders: dict[str, str] = {}
    for key, path in seen.items():
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), path)
    for key, path in seen.items():
        if key in folders:
            raise error(f"{what}: {printable(repr(path))} is a file, and {printable(repr(folders[key]))} needs a "
                        "folder of that name")


def printable(text: str) -> str:
    """``text`` with every character that does not print (control characters and terminal escapes, bidirectional
    overrides) shown as a ``\\x1b``/``\\u202e``-style escape."""
    if not isinstance(text, str):
        text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


__all__ = ["MAX_COMPONENT_BYTES", "MAX_PATH_BYTES", "UnsafeNameError", "check_distinct_paths", "check_file_name",
           "check_relative_path", "printable"]
