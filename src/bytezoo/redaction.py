"""Secrets out of everything bytezoo writes or prints: one redaction, used by every writer and every message.

A URL may carry credentials in three places, and all three are replaced by ``***``:

- user information: ``https://alice:s3cret@host/x`` and ``s3://KEY:SECRET@bucket/x`` (a secret holding ``/``, as
  AWS secret keys do, included);
- the query string and what follows it: ``https://host/x?token=abc&sig=…`` (pre-signed URLs, SAS tokens) ->
  ``https://host/x?***``;
- a Hugging Face token pasted anywhere (``hf_…``).

:func:`redact_text` finds every URL inside free text (an error message from fsspec, aiohttp, botocore or
huggingface_hub) and redacts it; :func:`bytezoo.untrusted.jsonio.dumps` does so for every string of a JSON document
bytezoo writes. :class:`bytezoo.errors.ByteZooError` passes its message through :func:`redact_text`, so an error raised
anywhere in bytezoo is redacted before anyone sees it, and the ``bytezoo`` command redacts whatever else it prints.

>>> redact_url("https://alice:s3cret@example.com/models/x?token=abc")
'https://***@example.com/models/x?***'
>>> redact_text("cannot open 's3://AKIA123:abc/def+g@bucket/x.csv': no such bucket")
"cannot open 's3://***@bucket/x.csv': no such bucket"
"""
from __future__ import annotations

import re

MASK = "***"
# A URL in free text runs to the next space, double quote, angle bracket or backtick (characters a URL cannot hold
# unencoded): a single quote or a parenthesis may be part of a password (RFC 3986 sub-delims), so a quote that
# closes a quoted URL is taken into it, and lost with the query string when there is one.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"<>`]*")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PORT_RE = re.compile(r"[^:/@]*:\d*")  # host:port (or host:) before the path: not a password
_WEB_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{16,}")


def _split_userinfo(rest: str, scheme: str = "") -> tuple[str, str]:
    """``(userinfo with its '@', the remainder)`` of the part of a URL after ``scheme://``; userinfo is ``""`` when
    there is none. An ``@`` before the first ``/`` ends it (the last such ``@``: a password may hold one). An ``@``
    after a ``/`` is a path's (``bucket/repo@v1``, a hub reference's tag) unless a ``:`` came before the ``/``: a
    password holding a ``/``, as AWS secret keys do (``KEY:abc/def@bucket``). On web schemes that ``:`` may be a port
    (``host:8080/repo@v1``), which it is taken for when nothing after the ``@`` looks like a path."""
    slash = rest.find("/")
    head = rest if slash < 0 else rest[:slash]
    if "@" in head:
        at = head.rfind("@")
        return rest[: at + 1], rest[at + 1:]
    at = rest.find("@")
    if at < 0 or ":" not in head:
        return "", rest
    after = rest[at + 1:]
    if scheme.lower() in _WEB_SCHEMES and _PORT_RE.fullmatch(head) and "/" not in after:
        return "", rest
    return rest[: at + 1], after


def redact_url(url: str) -> str:
    """``url`` with its user information and query string replaced by ``***`` (anything else unchanged), safe for
    logs, messages, summaries and model cards. A string that is not a URL comes back as it is.

    >>> redact_url("s3://bucket/models/mlstm@v1")
    's3://bucket/models/mlstm@v1'
    >>> redact_url("https://host:8443/x@v1?sig=1")
    'https://host:8443/x@v1?***'
    """
    if not isinstance(url, str):
        return url
    out, position = [], 0
    for match in _SCHEME_RE.finditer(url):  # chained URLs (simplecache::s3://...) hold several
        if match.start() < position:
            continue
        out.append(url[position:match.end()])
        userinfo, rest = _split_userinfo(url[match.end():], match.group(0)[:-3])
        if userinfo:
            out.append(f"{MASK}@")
        position = len(url) - len(rest)
    text = "".join(out) + url[position:]
    query = text.find("?")
    if query >= 0 and _SCHEME_RE.search(text[:query]) and not text.startswith(MASK, query + 1):  # (once is enough)
        text = text[: query + 1] + MASK  # a fragment after it may hold a token too
    return _HF_TOKEN_RE.sub(f"hf_{MASK}", text)


def secrets_in(url: str) -> list[str]:
    """The secret parts of ``url`` (a password in its user information, its query string and each value in it), for
    :func:`redact_text`'s ``also``: a library may quote them outside any URL (botocore names the bucket
    ``KEY:SECRET@bucket`` in its message)."""
    if not isinstance(url, str) or "://" not in url:
        return []
    found = []
    for match in _SCHEME_RE.finditer(url):
        userinfo, _ = _split_userinfo(url[match.end():], match.group(0)[:-3])
        if ":" in userinfo:
            found.append(userinfo[:-1].split(":", 1)[1])
    query = url.split("?", 1)[1] if "?" in url else ""
    if query:
        found.append(query)
        found += [part.split("=", 1)[-1] for part in query.replace(";", "&").split("&")]
    return [secret for secret in found if len(secret) >= 4]


def redact_text(text: str, also=()) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted (:func:`redact_url`), any Hugging Face
    token, and every string of ``also`` (secrets known to be about, :func:`secrets_in`) wherever it appears."""
    if not isinstance(text, str):
        return text
    for secret in sorted(also, key=len, reverse=True):
        text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL_RE.sub(lambda match: redact_url(match.group(0)), text)
    return _HF_TOKEN_RE.sub(f"hf_{MASK}", text) if "hf_" in text else text


__all__ = ["MASK", "redact_text", "redact_url", "secrets_in"]
