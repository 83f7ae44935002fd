"""Text data, read one way everywhere: ``formats`` (format, compression, records), ``text`` (the preprocessing both
stages share), ``packed`` (corpora packed once into byte shards plus an index, read by each process in its own
slices), ``sources`` (the embedded default and the standard sentiment sets), ``fetch`` and ``archives`` (pinned
downloads, safe extraction), ``cli`` (``bytezoo data``).

>>> from bytezoo.data import pack, PackedCorpus
>>> index = pack(["reviews/*.jsonl.gz"], "s3://corpora/reviews")                   # doctest: +SKIP
>>> corpus = PackedCorpus.open("s3://corpora/reviews")                              # doctest: +SKIP
"""
import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "formats": ["SourceError", "SourceKind", "expand_sources", "iter_records", "iter_source_bytes", "open_source"],
        "packed": ["PackedCorpus", "PackError", "pack"],
        "sources": ["DATASETS", "DatasetError", "EmbeddedDefault", "download", "prepare_embedded_default",
                    "read_labelled_tsv"],
        "text": ["model_text", "openai_bytes"],
    },
)
