"""What bytezoo does with anything that comes from outside (a hub, a URL, a file someone sent): each guard once, at
the bottom of the package (beside :mod:`bytezoo.errors`, below ``data``, ``hub`` and ``zoo``), so that the data layer,
the hub, the zoo and the commands all use the same one.

- :mod:`bytezoo.redaction` (one floor lower, beside ``errors``, which uses it): URLs and text with credentials and
  query strings replaced, before anything is written (run.json, summaries, reports, indexes, model cards) or printed
  (every :class:`~bytezoo.errors.ByteZooError` redacts its own message).
- :mod:`~bytezoo.untrusted.names`: the check of a name that came from outside (tags, versions, manifest paths,
  shard names, weight maps) before any file-system call.
- :mod:`~bytezoo.untrusted.limits`: the size caps on what is read from outside (blobs, JSON documents, records,
  archive members).
- :mod:`~bytezoo.untrusted.jsonio`: JSON in (deep nesting and duplicate keys refused in one line) and out (redacted,
  never ``NaN``).
- :mod:`~bytezoo.untrusted.network`: connect and idle timeouts on every remote read, and a failed request as one
  line (the redacted URL, the status, what to do).

None of them imports torch, fsspec or aiohttp at import time.
"""
