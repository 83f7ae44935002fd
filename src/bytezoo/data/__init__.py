"""Every byte of data bytezoo reads, read one way everywhere:

- ``formats``: format and compression from a name, records with their row, :data:`RECORD_FORMATS` (the one list);
- ``text``: the preprocessing both stages share (``model_text``);
- ``packed``: corpora packed once into byte shards plus an index, read by each process in its own slices;
- ``labelled``: labelled sets (CSV, TSV, JSON lines) for transfer and fine-tuning, and texts to classify;
- ``errors``: :class:`DatasetError`, the one error of data sets;
- ``layout``: the one folder layout prepared data sets are written in, written safely;
- ``embedded``: the embedded default (drug reviews, offline); ``datasets``: one module per downloadable set;
- ``fetch`` and ``archives``: pinned downloads, safe extraction; ``cli``: ``bytezoo data``.

>>> from bytezoo.data import pack, PackedCorpus, read_dataset
>>> index = pack(["reviews/*.jsonl.gz"], "s3://corpora/reviews")                   # doctest: +SKIP
>>> corpus = PackedCorpus.open("s3://corpora/reviews")                              # doctest: +SKIP
>>> train = read_dataset("s3://corpora/sst/train.csv")                              # doctest: +SKIP
"""
import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "datasets": ["DATASETS", "download"],
        "embedded": ["EmbeddedDefault", "prepare_embedded_default"],
        "errors": ["DatasetError"],
        "formats": ["RECORD_FORMATS", "SourceError", "SourceKind", "expand_sources", "iter_records",
                    "iter_source_bytes", "open_source"],
        "labelled": ["LabeledTexts", "read_dataset", "read_texts"],
        "packed": ["PackedCorpus", "PackError", "pack"],
        "text": ["model_text", "openai_bytes"],
    },
)
