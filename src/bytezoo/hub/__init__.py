"""The bytezoo hub: share checkpoints and classifiers through any fsspec URL, safely.

A repository is a URL (``s3://team-models/mlstm-4096``, ``gs://…``, ``hf://user/repo``, ``memory://…``, a local
folder; ``http(s)://`` read-only). It holds content-addressed blobs, immutable versions (manifests listing every
file's sha256 and size) and tags such as ``latest``. Pulls verify every checksum into a local cache
(``$BYTEZOO_CACHE``, default ``~/.cache/bytezoo``) that also serves offline (``BYTEZOO_OFFLINE=1``). Only data
formats travel (safetensors, JSON, text, images): pickles are refused. Credentials come from the environment or
fsspec's configuration and are never written anywhere.

>>> import bytezoo.hub as hub
>>> version = hub.push("runs/mlstm-256", "s3://team-models/mlstm-256", tag="paper")  # doctest: +SKIP
>>> hub.ls("s3://team-models/mlstm-256")                                              # doctest: +SKIP
[VersionInfo(version='3f9c0a1d2b4e5f60', created='2026-11-23T20:15:02.000000Z', files=5, size=1081344,
             tags=('latest', 'paper'))]
>>> path = hub.pull("s3://team-models/mlstm-256@paper")     # a verified, cached, read-only directory
>>> path = hub.resolve("s3://team-models/mlstm-256")         # what from_pretrained calls; local paths pass through

On the Hugging Face Hub, ``hf://user/name`` is an ordinary model repository that ``from_pretrained("user/name")``
loads: one commit per push with the manifest beside the files, tags as git tags, pulls through ``snapshot_download``
into the Hugging Face cache, each file checked against the manifest (see :mod:`bytezoo.hub.hf`).

Each URL scheme has its backend, listed in one table (:mod:`bytezoo.hub.backends`: ``hf`` -> :mod:`bytezoo.hub.hf`;
any other URL, or a local path -> :mod:`bytezoo.hub.fsspec_backend`); a new backend is one module and one entry there.

The command line does the same: ``bytezoo hub push DIR URL [--tag T [--move-tag]]``, ``bytezoo hub pull
URL[@REF] [DIR]``, ``bytezoo hub ls URL``.
"""
import lazy_loader as _lazy

# Lazy: `bytezoo hub --help` must not import fsspec's back ends.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "api": ["ls", "pull", "push", "resolve"],
        "cache": ["Cache", "default_cache_dir"],
        "card": ["make_model_card"],
        "errors": ["HubError", "IntegrityError", "ManifestError", "NotFoundError", "OfflineError", "UnsafeFileError"],
        "manifest": ["FileEntry", "Manifest", "Tag", "VersionInfo"],
        "safety": ["ALLOWED_SUFFIXES"],
    },
)
