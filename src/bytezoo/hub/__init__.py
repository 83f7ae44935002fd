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

The command line does the same: ``bytezoo hub push DIR URL [--tag T]``, ``bytezoo hub pull URL[@REF] [DIR]``,
``bytezoo hub ls URL``.
"""
from .api import VersionInfo, ls, pull, push, resolve
from .cache import Cache, default_cache_dir
from .card import make_model_card
from .errors import HubError, IntegrityError, ManifestError, NotFoundError, OfflineError, UnsafeFileError
from .manifest import FileEntry, Manifest, Tag
from .safety import ALLOWED_SUFFIXES

__all__ = [
    "push",
    "pull",
    "ls",
    "resolve",
    "VersionInfo",
    "Cache",
    "default_cache_dir",
    "make_model_card",
    "Manifest",
    "FileEntry",
    "Tag",
    "ALLOWED_SUFFIXES",
    "HubError",
    "IntegrityError",
    "ManifestError",
    "NotFoundError",
    "OfflineError",
    "UnsafeFileError",
]
