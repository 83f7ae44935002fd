"""Hub references (``URL``, ``URL@TAG``, ``URL@VERSION``): recognising and normalising them. (Redacting a URL is
:func:`bytezoo.redaction.redact_url`, used everywhere, not only by the hub.)"""
from __future__ import annotations

import os
import re

from bytezoo.redaction import redact_url

from .manifest import DEFAULT_TAG, check_tag_name, is_version_prefix

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(text: str) -> bool:
    """Whether ``text`` names a location through a protocol (``s3://…``, ``file://…``,
    ``simplecache::s3://…``)."""
    return bool(_SCHEME_RE.match(text)) or "::" in text


def url_scheme(text: str) -> str:
    """The scheme before ``://`` (``"s3"`` for ``s3://bucket/x``), as written; ``""`` for a local path and for a
    chained URL (``simplecache::s3://…``), which fsspec opens as a whole."""
    match = _SCHEME_RE.match(text)
    return match[1] if match else ""


def split_ref(ref: str) -> tuple[str, str | None]:
    """Split ``URL[@SELECTOR]`` into the repository URL and the tag or version (``None`` when absent).

    The selector is what follows the last ``@``, if it contains no ``/`` (so ``https://user@host/repo`` has none).
    A URL ending in ``@something`` that is meant literally (a Hugging Face revision, say) must carry a path after it.

    >>> split_ref("s3://models/mlstm-4096@v2")
    ('s3://models/mlstm-4096', 'v2')
    >>> split_ref("s3://models/mlstm-4096")
    ('s3://models/mlstm-4096', None)
    """
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"invalid hub reference {ref!r}: expected 'URL', 'URL@TAG' or 'URL@VERSION'")
    base, sep, selector = ref.rpartition("@")
    if not sep or "/" in selector or not base or base.endswith("://"):
        return ref, None
    authority = base.split("://", 1)[-1]
    if "://" in base and "/" not in authority and ":" in authority:  # s3://KEY:SECRET@bucket: credentials, not a tag
        return ref, None
    if not is_version_prefix(selector):
        try:
            check_tag_name(selector)
        except ValueError as error:
            raise ValueError(f"invalid hub reference {redact_url(ref)!r}: {error}") from None
    return base, selector


def selector_or_default(selector: str | None) -> str:
    return selector if selector is not None else DEFAULT_TAG


def canonical_url(url: str) -> str:
    """A stable spelling of a repository URL, used to key cached tags: plain paths become absolute ``file://``."""
    url = redact_url(url).rstrip("/")
    if url.startswith("file://"):
        return "file://" + os.path.abspath(url[len("file://"):])
    if not is_url(url):
        return "file://" + os.path.abspath(os.path.expanduser(url))
    return url
