"""``bytezoo transfer`` and ``bytezoo generate`` (``bytezoo classify``, which serves a transfer folder and a fine-tuned
model alike, is :mod:`bytezoo.serving`; it shares the option groups below).

    bytezoo transfer --model M --train T [--dev D] [--test E] [--text-col C] [--label-col L ...] --output DIR
                     [--overwrite]
    bytezoo generate --model M --prompt "This movie" [--neuron N --value V --hold STATE] [--temperature T --top-k K]
    bytezoo generate --pipeline DIR --prompt "This movie" [--toward CLASS]   (the unit and value a transfer run found)

``transfer`` writes ``DIR/report.json`` (schema in :mod:`bytezoo.transfer.experiment`), the plots, and the classifier
(``classifier.safetensors`` + ``classifier.json``) that ``SentimentPipeline.from_pretrained(DIR)`` and
``bytezoo classify`` load. Every option's default and allowed values come from :mod:`bytezoo.transfer.config` (:class:`TransferConfig`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from bytezoo.data.formats import RECORD_FORMATS
from bytezoo.untrusted import jsonio

from .config import BASELINES, DTYPES, PREPROCESSORS, TransferConfig, option_default


def _integer_from(minimum: int, meaning: str):
    """An argparse type: a whole number >= ``minimum``, refused in one line naming ``meaning``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {meaning}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {meaning}; got {text}")
        return value

    return parse


_positive_int = _integer_from(1, "a positive integer")
_count = _integer_from(0, "an integer >= 0")


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=RECORD_FORMATS, help="format of the data files (default: from each file's "
                        "extension: .csv, .tsv, .jsonl, optionally compressed)")


def add_featurizer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--batch-size", type=_positive_int, default=option_default("batch_size"),
                       help="rows of texts read in parallel (default %(default)s; bigger runs faster per text, memory "
                            "grows with it)")
    group.add_argument("--chunk-size", type=_positive_int, default=option_default("chunk_size"),
                       help="bytes read per forward call; bounds memory, and finished texts leave the batch at chunk "
                            "ends (default %(default)s)")
    group.add_argument("--device", default=option_default("device"), help="torch device (default %(default)s)")
    group.add_argument("--dtype", default=option_default("dtype"), choices=DTYPES,
                       help="compute dtype (bfloat16: autocast; default %(default)s)")
    group.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                       help="no progress bar")


def register(subparsers) -> None:
    _register_transfer(subparsers)


def _register_transfer(subparsers) -> None:
    transfer = subparsers.add_parser(
        "transfer",
        help="features from a zoo model + L1 logistic regression on a labelled dataset; report, plots, classifier",
        description="Extract features of a labelled dataset with a zoo model, fit L1-penalised logistic regression "
        "with C swept on the dev set, find the top units (the sentiment neuron), measure the TF-IDF baseline on the "
        "same splits, and write report.json, plots and the classifier into --output. A folder holding an earlier run's "
        "output is refused unless --overwrite.",
    )
    transfer.add_argument("--model", required=True, help="checkpoint directory or hub URL")
    transfer.add_argument("--train", required=True, help="training set: CSV, TSV or JSON lines, any path or fsspec URL")
    transfer.add_argument("--dev", help="dev set (chooses C); without it C is chosen on a 20%% split of train")
    transfer.add_argument("--test", help="test set (reported)")
    add_input_options(transfer)
    transfer.add_argument("--text-col", help="text column (default: guessed: text, sentence, review, tweet…)")
    transfer.add_argument("--label-col", nargs="+", dest="label_cols", metavar="COL",
                          help="label column; several = multi-label (0/1 each)")
    transfer.add_argument("--output", required=True, help="output directory (any fsspec URL)")
    transfer.add_argument("--overwrite", action="store_true", help="--output holds an earlier run's output: replace it "
                          "(removes only the files that run wrote). Without it, such a folder is refused")
    transfer.add_argument("--pooling", default=option_default("pooling"), metavar="MODE",
                          help="the text feature, a pooling mode the model offers (final_cell: the papers'; "
                               "default: the model's own, final_cell where its family has a cell state); checked "
                               "before any work")
    transfer.add_argument("--preprocess", default=option_default("preprocess"), choices=PREPROCESSORS,
                          help="openai: the original encoder's preprocessing (default %(default)s)")
    transfer.add_argument("--C", dest="Cs", type=float, nargs="+", metavar="C",
                          help="values of C to sweep (default 2^-8 … 2^0)")
    transfer.add_argument("--top-k", type=_positive_int, default=option_default("top_k"),
                          help="units to report and to fit the k-unit classifier on (default %(default)s)")
    transfer.add_argument("--baseline", choices=BASELINES, default=option_default("baseline"),
                          help="the TF-IDF baseline, measured in the same run on the same splits (default %(default)s; "
                               "none: skip it)")
    transfer.add_argument("--no-plots", dest="plots", action="store_false")
    transfer.add_argument("--curve-points", type=_count, default=option_default("curve_points"),
                          help="training-set sizes on the data-efficiency curve, where the probe, TF-IDF and the "
                               "majority class are each fitted on the same rows (0: all of train only; default "
                               "%(default)s)")
    transfer.add_argument("--heatmap-texts", type=_count, default=option_default("heatmap_texts"),
                          help="sample texts in the per-character heatmap (default %(default)s)")
    transfer.add_argument("--include-model", action="store_true",
                          help="copy the model into --output (a self-contained pipeline)")
    transfer.add_argument("--cache-dir", help="feature cache directory (keyed by model and data hashes)")
    transfer.add_argument("--seed", type=int, default=option_default("seed"))
    add_featurizer_options(transfer)
    transfer.set_defaults(func=_run_transfer)

    generate = subparsers.add_parser(
        "generate", help="sample text, optionally holding one unit (the sentiment neuron) at a value",
        description="Sample text from a zoo model, optionally holding one unit of a per-unit state at a value "
        "(steering; families with per-unit states only: the mLSTM, LSTM and GRU, not the Transformer). --pipeline "
        "takes the model, the top unit and a value toward a class from a `bytezoo transfer` folder.")
    generate.add_argument("--model", help="checkpoint directory or hub URL (default with --pipeline: the pipeline's)")
    generate.add_argument("--pipeline", help="a `bytezoo transfer` output folder or hub URL: its model, its top unit, "
                          "the state its feature reads, and a value toward a class (its report's 'steering')")
    generate.add_argument("--toward", metavar="CLASS", help="with --pipeline: steer toward this class (default: the "
                          "class the unit's high values favour)")
    generate.add_argument("--prompt", default="", help="start of the text")
    generate.add_argument("--neuron", type=int, help="unit to hold (e.g. 2388 in the OpenAI model; default with "
                          "--pipeline: its top unit)")
    generate.add_argument("--value", type=float,
                          help="value to hold it at (default 1.0, or the pipeline's value toward the class). Which "
                               "sign pushes toward which class depends on the sign of the unit's weight: `bytezoo "
                               "transfer` prints each top unit's weights and its range per class")
    generate.add_argument("--hold", metavar="STATE", help="the per-unit state to hold the unit in: cell (the papers') "
                          "or hidden (the GRU's only one); default: the state the pipeline's feature reads, else cell "
                          "where the family has one, else hidden")
    generate.add_argument("--max-new-bytes", type=_count, default=200)
    generate.add_argument("--num-samples", type=_positive_int, default=1)
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    generate.add_argument("--top-k", type=int, help="sample among the k likeliest bytes")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--device", default=option_default("device"),
                          help="torch device to run the model on (default %(default)s; e.g. cuda, cuda:1)")
    generate.set_defaults(func=_run_generate)


def quiet_model_loading(progress: bool | None) -> None:
    """No progress bar for loading weights unless one was asked for or stderr is a terminal (as for the features)."""
    if progress is None and sys.stderr.isatty() or progress:
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _run_transfer(args) -> int:
    from .experiment import run_transfer

    quiet_model_loading(args.progress)
    config = TransferConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TransferConfig)})
    report = run_transfer(config, log=lambda message: print(message, file=sys.stderr))
    print(jsonio.dumps({"accuracy": report["accuracy"], "top_unit": report["top_units"][0]["unit"],
                        "output": args.output}))
    return 0


def _run_generate(args) -> int:
    from bytezoo.errors import InvalidArgumentError

    from .generation import generate_steered, steering_from_pipeline

    model, neuron, value, hold = args.model, args.neuron, args.value, args.hold
    if args.pipeline:
        steering = steering_from_pipeline(args.pipeline, toward=args.toward)
        model = model or steering["model"]
        neuron = steering["unit"] if neuron is None else neuron
        value = steering["value"] if value is None else value
        hold = hold or steering["state"]
        if hold is not None:  # else the model has no per-unit state: generate_steered says so
            print(f"holding unit {neuron} of the {hold} state at {value:.4g} ({steering['why']})", file=sys.stderr)
    elif args.toward:
        raise InvalidArgumentError("--toward picks a class of a --pipeline; without one, give --neuron and --value")
    if model is None:
        raise InvalidArgumentError("name the model (--model) or a transfer folder (--pipeline)")
    quiet_model_loading(None)
    result = generate_steered(
        model, args.prompt, neuron=neuron, value=1.0 if value is None else value, hold=hold,
        max_new_bytes=args.max_new_bytes, num_samples=args.num_samples, temperature=args.temperature, top_k=args.top_k,
        seed=args.seed, device=args.device,
    )
    for text in result.texts:
        print(text)
        if args.num_samples > 1:
            print("-" * 40)
    return 0
