"""``bytezoo transfer``, ``bytezoo classify`` and ``bytezoo generate``.

    bytezoo transfer --model M --train T [--dev D] [--test E] [--text-col C] [--label-col L ...] --output DIR
    bytezoo classify --pipeline DIR --input texts.tsv [--text-col C] [--output predictions.jsonl]
    bytezoo classify --pipeline DIR "a text" "another text"
    bytezoo generate --model M --prompt "This movie" [--neuron N --value V] [--temperature T --top-k K]

``transfer`` writes ``DIR/report.json`` (schema in :mod:`bytezoo.transfer.experiment`), the plots, and the classifier
(``classifier.safetensors`` + ``classifier.json``) that ``SentimentPipeline.from_pretrained(DIR)`` and ``classify``
load.
"""
from __future__ import annotations

import argparse
import json
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _add_featurizer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("features")
    group.add_argument("--batch-size", type=_positive_int, default=128, help="texts per batch (default 128)")
    group.add_argument("--chunk-size", type=_positive_int, default=32, help="bytes read per forward call; bounds memory, and finished texts leave the batch at chunk ends (default 32)")
    group.add_argument("--device", default="cpu", help="torch device (default cpu)")
    group.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype (bfloat16: autocast)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    transfer = subparsers.add_parser(
        "transfer",
        help="features from a zoo model + L1 logistic regression on a labelled dataset; report, plots, classifier",
        description="Extract features of a labelled dataset with a zoo model, fit L1-penalised logistic regression "
        "with C swept on the dev set, find the top units (the sentiment neuron), and write report.json, plots and the "
        "classifier into --output.",
    )
    transfer.add_argument("--model", required=True, help="checkpoint directory or hub URL")
    transfer.add_argument("--train", required=True, help="training set: CSV, TSV or JSON lines, any path or fsspec URL")
    transfer.add_argument("--dev", help="dev set (chooses C); without it C is chosen on a 20%% split of train")
    transfer.add_argument("--test", help="test set (reported)")
    transfer.add_argument("--text-col", help="text column (default: guessed: text, sentence, review, tweet…)")
    transfer.add_argument("--label-col", nargs="+", dest="label_cols", metavar="COL", help="label column; several = multi-label (0/1 each)")
    transfer.add_argument("--output", required=True, help="output directory (any fsspec URL)")
    transfer.add_argument("--pooling", default="final_cell", choices=("final_cell", "final_hidden", "mean"))
    transfer.add_argument("--preprocess", default="openai", choices=("openai", "none"))
    transfer.add_argument("--C", dest="Cs", type=float, nargs="+", metavar="C", help="values of C to sweep (default 2^-8 … 2^0)")
    transfer.add_argument("--top-k", type=_positive_int, default=10, help="units to report and to fit the k-unit classifier on")
    transfer.add_argument("--baseline", choices=("tfidf", "none"), default="none", help="also measure the TF-IDF baseline")
    transfer.add_argument("--no-plots", action="store_true")
    transfer.add_argument("--curve-points", type=int, default=6, help="training-set sizes on the data-efficiency curve (0: none)")
    transfer.add_argument("--heatmap-texts", type=int, default=4, help="sample texts in the per-character heatmap")
    transfer.add_argument("--include-model", action="store_true", help="copy the model into --output (a self-contained pipeline)")
    transfer.add_argument("--cache-dir", help="feature cache directory (keyed by model and data hashes)")
    transfer.add_argument("--seed", type=int, default=0)
    _add_featurizer_options(transfer)
    transfer.set_defaults(func=_run_transfer)

    classify = subparsers.add_parser("classify", help="label texts with a saved transfer pipeline", description="Label texts with a pipeline saved by `bytezoo transfer`.")
    classify.add_argument("--pipeline", required=True, help="directory or hub URL holding classifier.json (and the model or a reference to it)")
    classify.add_argument("--model", help="use this model instead of the one the pipeline refers to")
    classify.add_argument("texts", nargs="*", help="texts to label (or use --input)")
    classify.add_argument("--input", help="CSV, TSV or JSON lines file of texts")
    classify.add_argument("--text-col", help="text column of --input")
    classify.add_argument("--output", help="write JSON lines here instead of standard output")
    _add_featurizer_options(classify)
    classify.set_defaults(func=_run_classify)

    generate = subparsers.add_parser("generate", help="sample text, optionally holding one unit (the sentiment neuron) at a value")
    generate.add_argument("--model", required=True, help="checkpoint directory or hub URL")
    generate.add_argument("--prompt", default="", help="start of the text")
    generate.add_argument("--neuron", type=int, help="unit to hold (e.g. 2388 in the OpenAI model)")
    generate.add_argument("--value", type=float, default=1.0, help="value to hold it at (default 1.0; negative for negative sentiment)")
    generate.add_argument("--hold", choices=("cell", "hidden"), default="cell", help="hold the unit in the cell state (the papers') or the hidden state")
    generate.add_argument("--max-new-bytes", type=int, default=200)
    generate.add_argument("--num-samples", type=_positive_int, default=1)
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    generate.add_argument("--top-k", type=int, help="sample among the k likeliest bytes")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--device", default="cpu")
    generate.set_defaults(func=_run_generate)


def _run_transfer(args) -> int:
    from .experiment import run_transfer

    report = run_transfer(
        args.model, args.train, args.dev, args.test,
        output=args.output, text_col=args.text_col, label_cols=args.label_cols,
        pooling=args.pooling, preprocess=args.preprocess, batch_size=args.batch_size, chunk_size=args.chunk_size,
        device=args.device, dtype=args.dtype, cache_dir=args.cache_dir, Cs=args.Cs, top_k=args.top_k,
        baseline=None if args.baseline == "none" else args.baseline, plots=not args.no_plots,
        curve_points=args.curve_points, heatmap_texts=args.heatmap_texts, include_model=args.include_model,
        seed=args.seed, progress=False if args.no_progress else None,
        log=lambda message: print(message, file=sys.stderr),
    )
    print(json.dumps({"accuracy": report["accuracy"], "top_unit": report["top_units"][0]["unit"], "output": args.output}))
    return 0


def _run_classify(args) -> int:
    import fsspec

    from .data import read_dataset
    from .pipeline import SentimentPipeline

    if bool(args.texts) == bool(args.input):
        raise SystemExit("bytezoo classify: give texts as arguments or --input FILE (one of the two)")
    texts = list(args.texts) if args.texts else read_dataset(args.input, args.text_col, require_labels=False).texts
    pipe = SentimentPipeline.from_pretrained(
        args.pipeline, model=args.model, batch_size=args.batch_size, device=args.device, dtype=args.dtype, progress=False if args.no_progress else None
    )
    results = pipe(texts)
    lines = "".join(json.dumps({"text": text, **result}, ensure_ascii=False) + "\n" for text, result in zip(texts, results))
    if args.output:
        with fsspec.open(args.output, "w", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        sys.stdout.write(lines)
    return 0


def _run_generate(args) -> int:
    from .generation import generate_steered

    result = generate_steered(
        args.model, args.prompt, neuron=args.neuron, value=args.value, hold=args.hold, max_new_bytes=args.max_new_bytes,
        num_samples=args.num_samples, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
    )
    for text in result.texts:
        print(text)
        if args.num_samples > 1:
            print("-" * 40)
    return 0
