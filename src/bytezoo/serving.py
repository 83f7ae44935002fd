"""Serving what the stages save: ``bytezoo classify``, and :func:`load_pipeline`, which opens either kind of saved
classifier behind one call.

* a transfer pipeline (``bytezoo transfer``'s folder: ``classifier.json`` + ``classifier.safetensors``, and the
  model or a reference to it): :class:`bytezoo.transfer.SentimentPipeline`;
* a fine-tuned classifier (``bytezoo finetune``'s ``OUTPUT/model``: a ``*ForSequenceClassification``):
  :class:`bytezoo.finetune.SequenceClassificationPipeline`.

Both are :class:`~bytezoo.transfer.pipeline.ClassificationPipeline`\\ s: called on a list of texts they return one
result per text, in the same format. This module sits above both stages (layers in pyproject.toml), so neither stage
imports the other to serve.

    bytezoo classify --pipeline DIR|URL "a text" "another text"
    bytezoo classify --pipeline DIR|URL --input texts.tsv [--format tsv] [--text-col C] [--output predictions.jsonl]
    cat texts.txt | bytezoo classify --pipeline DIR|URL -
"""
from __future__ import annotations

import argparse
import os
import sys


def load_pipeline(dir_or_url: str, *, model: str | None = None, batch_size: int = 512, device: str = "cpu",
                  dtype: str = "float32", progress: bool | None = False, allow_other_model: bool = False):
    """The saved classifier in ``dir_or_url`` (a folder or hub URL) as a pipeline: a transfer pipeline (with
    ``model=`` replacing the model it refers to, and ``allow_other_model`` as
    :meth:`~bytezoo.transfer.SentimentPipeline.from_pretrained` takes it) or a fine-tuned classifier (which carries its
    own model, so ``model=`` is refused)."""
    from bytezoo.finetune.serving import SequenceClassificationPipeline, is_sequence_classifier
    from bytezoo.hub import resolve
    from bytezoo.transfer.pipeline import PipelineError, SentimentPipeline

    directory = str(resolve(str(dir_or_url)))  # hub references pulled and verified; a plain folder passes through
    if not os.path.isfile(os.path.join(directory, "classifier.json")) and is_sequence_classifier(directory):
        if model is not None:
            raise PipelineError(f"{dir_or_url}: a fine-tuned classifier carries its own model; drop model= (--model "
                                "on the command line)")
        return SequenceClassificationPipeline.from_pretrained(directory, batch_size=batch_size, device=device,
                                                              dtype=dtype, progress=progress)
    return SentimentPipeline.from_pretrained(directory, model=model, batch_size=batch_size, device=device, dtype=dtype,
                                             progress=progress, allow_other_model=allow_other_model)


def register(subparsers) -> None:
    from bytezoo.transfer.cli import add_featurizer_options, add_input_options

    classify = subparsers.add_parser(
        "classify", help="label texts with a saved classifier (a transfer pipeline or a fine-tuned model)",
        description="Label texts with a classifier saved by `bytezoo transfer` or `bytezoo finetune`.")
    classify.add_argument("--pipeline", required=True,
                          help="directory or hub URL holding classifier.json (and the model or a reference to it), or "
                               "a fine-tuned classifier (bytezoo finetune's OUTPUT/model)")
    classify.add_argument("--model", help="use this model instead of the one the transfer pipeline refers to")
    classify.add_argument("texts", nargs="*", help="texts to label (or use --input); a lone - reads standard input")
    classify.add_argument("--input", help="file of texts: .txt (one text per line), CSV, TSV or JSON lines; - for "
                          "standard input (one text per line, unless --format names a record format)")
    add_input_options(classify)
    classify.add_argument("--text-col", help="text column of --input")
    classify.add_argument("--output", help="write JSON lines here instead of standard output")
    classify.add_argument("--allow-other-model", action="store_true",
                          help="use a model whose weights differ from those the classifier was fitted on (refused "
                               "otherwise: its units mean something else)")
    add_featurizer_options(classify)
    classify.set_defaults(func=_run_classify)


def _run_classify(args: argparse.Namespace) -> int:
    import fsspec

    from bytezoo.errors import InvalidArgumentError
    from bytezoo.transfer.cli import quiet_model_loading
    from bytezoo.data.labelled import read_texts
    from bytezoo.untrusted import jsonio

    if bool(args.texts) == bool(args.input):
        raise InvalidArgumentError("give the texts as arguments, - for standard input, or --input FILE (one of these)")
    source = "-" if args.texts == ["-"] else args.input
    texts = read_texts(source, args.text_col, fmt=args.format) if source else list(args.texts)
    quiet_model_loading(args.progress)
    pipe = load_pipeline(args.pipeline, model=args.model, batch_size=args.batch_size, device=args.device,
                         dtype=args.dtype, progress=args.progress, allow_other_model=args.allow_other_model)
    results = pipe(texts)
    lines = "".join(jsonio.dumps({"text": text, **result}, redact=False, ensure_ascii=False) + "\n"
                    for text, result in zip(texts, results))
    if args.output:
        with fsspec.open(args.output, "w", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        sys.stdout.write(lines)
    return 0


__all__ = ["load_pipeline"]
