"""Remote reads that end: connect and idle timeouts on every one, and a failure told in one line.

Every file system bytezoo opens for a URL comes from :func:`url_to_fs` (or :func:`open_url`), which adds two
timeouts to fsspec's options for the protocols that take them:

========================  ==================================  ========================================================
timeout                   default                             what it bounds
========================  ==================================  ========================================================
connect                   30 s (``BYTEZOO_CONNECT_TIMEOUT``)  opening a connection to the server
idle                      60 s (``BYTEZOO_IDLE_TIMEOUT``)     waiting for the next bytes of an answer; and a stream
                                                              read through :func:`guarded` fails once a whole idle
                                                              period brought less than 1 KiB, so that a server
                                                              trickling a byte a second ends in it too
========================  ==================================  ========================================================

``http(s)://`` gets them as aiohttp's ``sock_connect``/``sock_read``, ``s3://`` as botocore's ``connect_timeout``/
``read_timeout``. Options the caller passes (``storage_options``) or fsspec's configuration sets win over these
defaults. ``hf://`` goes through huggingface_hub, which has its own (``HF_HUB_ETAG_TIMEOUT``,
``HF_HUB_DOWNLOAD_TIMEOUT``).

:func:`remote_errors` turns what fsspec, aiohttp and botocore raise for a failed request (a status, a refused
connection, a timeout) into the caller's :class:`~bytezoo.errors.ByteZooError` with one line: what was being done,
the redacted URL, the status, and what to do (:func:`describe`).
"""
from __future__ import annotations

import contextlib

from bytezoo.errors import ByteZooError

from .limits import positive_from_environment
from bytezoo.redaction import redact_text, redact_url, secrets_in

CONNECT_TIMEOUT_ENV = "BYTEZOO_CONNECT_TIMEOUT"
IDLE_TIMEOUT_ENV = "BYTEZOO_IDLE_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 60.0
_HTTP = ("http", "https")
_S3 = ("s3", "s3a")


def timeouts() -> tuple[float, float]:
    """``(connect, idle)`` in seconds, from the environment or the defaults."""
    return (positive_from_environment(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, "seconds"),
            positive_from_environment(IDLE_TIMEOUT_ENV, DEFAULT_IDLE_TIMEOUT, "seconds"))


def protocol_of(url: str) -> str:
    """The protocol fsspec opens ``url`` with: the innermost of a chained URL (``simplecache::s3://…`` -> ``s3``)."""
    last = str(url).rsplit("::", 1)[-1]
    return last.split("://", 1)[0].lower() if "://" in last else "file"


def storage_options(url: str, options: dict | None = None) -> dict:
    """fsspec options for ``url``: ``options`` (the caller's), with bytezoo's timeouts added where the protocol takes
    them and neither ``options`` nor fsspec's configuration sets one."""
    import fsspec

    options = dict(options or {})
    protocol = protocol_of(url)
    configured = fsspec.config.conf.get(protocol, {})
    connect, idle = timeouts()
    if protocol in _HTTP:
        import aiohttp

        client = {**configured.get("client_kwargs", {}), **options.get("client_kwargs", {})}
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=idle))
        added = {"client_kwargs": client}
    elif protocol in _S3:
        config = {**configured.get("config_kwargs", {}), **options.get("config_kwargs", {})}
        config.setdefault("connect_timeout", connect)
        config.setdefault("read_timeout", idle)
        added = {"config_kwargs": config}
    else:
        return options
    if "::" in str(url):  # a chained URL: options for the inner file system go under its protocol's name
        return {**options, protocol: {**options.get(protocol, {}), **added}}
    return {**options, **added}


def url_to_fs(url: str, **options):
    """``fsspec.core.url_to_fs(url, **options)`` with the timeouts of :func:`storage_options`."""
    import fsspec

    return fsspec.core.url_to_fs(url, **storage_options(url, options))


def open_url(url: str, mode: str = "rb", **options):
    """``fsspec.open(url, mode, **options)`` (an ``OpenFile``) with the timeouts of :func:`storage_options`;
    ``compression``, ``encoding`` and the like pass through."""
    import fsspec

    return fsspec.open(url, mode, **storage_options(url, options))


STALL_BYTES = 1024  # a stream that brings less than this in a whole idle period has stalled


class StalledTransfer(TimeoutError):
    """A stream that brought less than :data:`STALL_BYTES` in a whole idle period (a server trickling bytes)."""


class _Guarded:
    """A binary file object whose reads fail with :class:`StalledTransfer` once an idle period brought less than
    :data:`STALL_BYTES`; everything else passes to the wrapped object."""

    def __init__(self, handle, idle: float):
        self._handle, self._idle = handle, idle
        self._window_start, self._window_bytes = None, 0

    def read(self, size: int = -1) -> bytes:
        import time

        if self._window_start is None:
            self._window_start = time.monotonic()
        data = self._handle.read(size)
        self._window_bytes += len(data)
        now = time.monotonic()
        if now - self._window_start >= self._idle:
            if self._window_bytes < STALL_BYTES and data:
                raise StalledTransfer(f"less than {STALL_BYTES:,} bytes in {self._idle:g} s ({IDLE_TIMEOUT_ENV}): the "
                                      "server stalled or trickles; try again, or raise the timeout")
            self._window_start, self._window_bytes = now, 0
        return data

    read1 = read  # io.TextIOWrapper and the decompressors read through one of these three

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def guarded(handle):
    """``handle`` (a binary stream from a server) with the stall check of the idle timeout (see the table above)."""
    return _Guarded(handle, timeouts()[1])


def _status_of(error: BaseException) -> tuple[int | None, str]:
    status = getattr(error, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status, str(getattr(error, "message", "") or "")
    response = getattr(error, "response", None)  # botocore.exceptions.ClientError, huggingface_hub's errors
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (code if isinstance(code, int) else None), str(response.get("Error", {}).get("Code", ""))
    code = getattr(response, "status_code", None)
    return (code if isinstance(code, int) else None), ""


_STATUS_HINTS = (
    ((401, 403), "not allowed: check the credentials (environment, fsspec configuration) and that they may read it"),
    ((404, 410), "not found: check the URL"),
    ((408, 429), "the server is busy or limiting requests: wait and try again"),
)


def describe(error: BaseException, url: str | None = None) -> str | None:
    """One line for a failed remote request (the status, or what broke, and what to do), redacted (the secrets of
    ``url`` too, wherever the library quoted them); ``None`` if ``error`` is not a failed request."""
    from asyncio import TimeoutError as AsyncTimeout

    also = secrets_in(url) if url else []

    def _short(error: BaseException) -> str:
        return _shortened(error, also)

    connect, idle = timeouts()
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 5:
        chain.append(chain[-1].__cause__)
    names = {cls.__name__ for item in chain for cls in type(item).__mro__}
    stalled = next((item for item in chain if isinstance(item, StalledTransfer)), None)
    if stalled is not None:
        return str(stalled)
    status, reason = next(((s, r) for s, r in map(_status_of, chain) if s is not None), (None, ""))
    if status is not None:
        hint = next((text for codes, text in _STATUS_HINTS if status in codes), None)
        if hint is None:
            hint = "the server failed: try again later" if status >= 500 else "the server refused the request"
        reason = redact_text(" ".join(reason.split())[:80], also)
        return f"HTTP {status}{f' ({reason})' if reason else ''}: {hint}"
    if names & {"ConnectionTimeoutError", "ConnectTimeoutError"}:
        return (f"no connection within {connect:g} s ({CONNECT_TIMEOUT_ENV}): check the URL and that the server is "
                "up, or raise the timeout")
    if isinstance(error, (TimeoutError, AsyncTimeout)) or names & {"ServerTimeoutError", "ReadTimeoutError",
                                                                   "FSTimeoutError", "ReadTimeout", "TimeoutException"}:
        return (f"no data for {idle:g} s ({IDLE_TIMEOUT_ENV}): the server stalled or is too slow; try again, or "
                "raise the timeout")
    if names & {"ClientPayloadError", "ServerDisconnectedError", "ConnectionResetError", "IncompleteRead",
                "ResponseStreamingError", "RemoteProtocolError", "BrokenPipeError"}:
        return f"the connection broke off ({_short(error)}): try again"
    if names & {"ClientConnectorError", "ConnectionRefusedError", "EndpointConnectionError", "ConnectError",
                "ConnectionError", "gaierror"}:
        return f"cannot connect ({_short(error)}): check the URL and that the server is up"
    if isinstance(error, FileNotFoundError):
        return f"not found ({_short(error)}): check the URL"
    if isinstance(error, PermissionError):
        return f"not allowed ({_short(error)}): check the credentials and that they may read it"
    if names & {"ClientError", "BotoCoreError", "NoCredentialsError", "HTTPError"}:
        return f"{_short(error)}"
    return None


def _shortened(error: BaseException, also=()) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = redact_text(text, also)
    return text[:200] + ("…" if len(text) > 200 else "")


@contextlib.contextmanager
def remote_errors(url: str, doing: str, error_class: type[ByteZooError]):
    """Inside it, a failed remote request (see :func:`describe`) becomes ``error_class("{doing} {URL}: {what}")``
    with the URL redacted; a :class:`ByteZooError` and anything that is not a failed request pass unchanged."""
    try:
        yield
    except ByteZooError:
        raise
    except Exception as error:
        what = describe(error, str(url))
        if what is None:
            raise
        message = redact_text(f"{doing} {redact_url(str(url))}: {what}", also=secrets_in(str(url)))
        raise error_class(message) from None


__all__ = ["CONNECT_TIMEOUT_ENV", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_IDLE_TIMEOUT", "IDLE_TIMEOUT_ENV", "STALL_BYTES",
           "StalledTransfer", "describe", "guarded", "open_url", "protocol_of", "remote_errors", "storage_options",
           "timeouts", "url_to_fs"]
