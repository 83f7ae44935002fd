"""Text data, read one way everywhere: sources (format, compression, records), the shared preprocessing, and packed
corpora (flat byte shards plus an index, packed once, read by each process in its own slices).

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
        "text": ["model_text", "openai_bytes"],
    },
)
