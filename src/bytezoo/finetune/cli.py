"""``bytezoo finetune``: the command-line face of :func:`bytezoo.finetune.run`."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

DESCRIPTION = """\
Fine-tune a zoo model for text classification: the body of a pretrained causal LM (every weight loaded)
and a new linear head on its pooled state (*ForSequenceClassification), trained end to end.

  bytezoo finetune --model runs/lm/model --train train.csv --dev dev.csv --test test.csv \\
      --text-col sentence --label-col label --output runs/sst-ft
  accelerate launch --multi_gpu --num_processes 8 -m bytezoo.cli finetune ... --mixed-precision bf16
  torchrun --nproc_per_node 2 -m bytezoo.cli finetune ...        (2 CPU processes over gloo)

Labels: one label column = single-label (binary or multi-class; its values are the class names), several
0/1 columns = multi-label, --problem-type regression = numbers. Texts are read as their UTF-8 bytes, as the
byte tokenizer encodes them, so transformers.pipeline serves the exported model on raw text.

OUTPUT receives:
  model/               the model with the best dev score (the last one without --dev): save_pretrained +
                       tokenizer + training_summary.json, swapped in atomically. Serve it with
                       transformers.pipeline("text-classification", model="OUTPUT/model") after `import bytezoo`
                       (trust_remote_code=True where bytezoo is absent) or `bytezoo classify --pipeline OUTPUT/model`
  metrics.jsonl        per log step: loss, rates, texts/s; per dev evaluation: dev_loss, dev_accuracy, dev_macro_f1
                       (multi-label: dev_jaccard, dev_micro_f1, ...; regression: dev_rmse, dev_mae); test_* at the end
  tensorboard/         the same scalars
  summary.json         the run's summary (as training_summary.json)
  checkpoints/step-N/  with --save-every, and when a run stops early (--max-time, SIGTERM, Ctrl-C): --resume
                       continues it exactly
  run.json             the run's identity: a folder holds one run; another is refused unless --overwrite
  report.json          with --test: the fine-tuned model's test score beside the majority class and TF-IDF (and,
                       with --compare-probe, the frozen L1 probe) at the same label counts on the same rows as
                       `bytezoo transfer` draws them; printed as one table
  comparison.png       the same comparison, one curve per method against the number of labels
  label-counts/n-N/    with --label-counts: a complete run folder per count below the largest (the largest is
                       fine-tuned in OUTPUT itself), each a separate fine-tuning from the same --model

  bytezoo finetune ... --test test.csv --label-counts 100 1000 all --compare-probe
"""


def register(subparsers) -> None:
    from bytezoo.training.options import ADAPT_THREADS_HELP, duration, key_value
    from bytezoo.training.schedules import SCHEDULES

    parser = subparsers.add_parser("finetune", help="fine-tune a zoo model for text classification (Accelerate)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True,
                       help="a causal LM's checkpoint (directory or hub URL; the head starts fresh), a fine-tuned "
                            "classifier (trained further), or a zoo preset (random weights: a from-scratch baseline)")
    model.add_argument("--pooling", metavar="MODE",
                       help="the text feature the head reads, a pooling mode the model offers (default: the model's "
                            "own: final_cell where the family has a cell state, else final_hidden where it has a "
                            "hidden state, else mean); checked before any training")
    model.add_argument("--dropout", type=float, help="dropout on the pooled feature (default: 0)")
    model.add_argument("--model-config", metavar="KEY=VALUE", type=key_value, action="append", default=[],
                       help="override a config field (repeatable; values parsed as JSON)")
    model.add_argument("--chunk-size", type=int, default=256,
                       help="bytes read per forward call: bounds memory (chunks are recomputed in the backward pass), "
                            "never changes the result (default: 256)")

    data = parser.add_argument_group("data")
    data.add_argument("--train", required=True, help="training set: CSV, TSV or JSON lines (any path or fsspec URL)")
    data.add_argument("--dev", help="dev set: evaluation, early stopping, and the exported (best) model")
    data.add_argument("--test", help="test set, evaluated once with the exported model")
    data.add_argument("--text-col", help="text column (default: guessed: text, sentence, review, ...)")
    data.add_argument("--label-col", nargs="+", dest="label_cols", metavar="COL",
                      help="label column (default: guessed: label, sentiment, ...); several 0/1 columns = multi-label")
    data.add_argument("--problem-type",
                      choices=("single_label_classification", "multi_label_classification", "regression"),
                      help="default: single-label with one label column, multi-label with several")
    data.add_argument("--num-labels", type=int, help="expected number of labels: refused when the data disagree")
    data.add_argument("--max-bytes", type=int, help="keep only each text's first N bytes (default: whole texts)")

    comparison = parser.add_argument_group("comparison (needs --test)")
    comparison.add_argument("--label-counts", nargs="+", metavar="N", type=_label_count,
                            help="fine-tune once per count, each from --model on a seeded stratified draw of N "
                                 "training rows ('all' = every row), e.g. 100 1000 all (default: all only: one run)")
    comparison.add_argument("--baseline", choices=("tfidf", "none"), default="tfidf",
                            help="measure TF-IDF word 1-2grams + L2 LR at the same counts (default: tfidf)")
    comparison.add_argument("--compare-probe", action="store_true",
                            help="also the frozen L1 probe (bytezoo transfer's classifier on --model's features) at "
                                 "the same counts")

    train = parser.add_argument_group("training")
    train.add_argument("--output", required=True, metavar="DIR", help="output directory (layout above)")
    train.add_argument("--batch-size", type=int, default=32,
                       help="texts per process per forward pass (default: 32); a step reads --grad-accum such batches")
    train.add_argument("--grad-accum", "--gradient-accumulation-steps", type=int, default=1, dest="grad_accum_steps",
                       metavar="N",
                       help="batches whose gradients each optimizer step adds up: the effective batch is "
                            "--batch-size x processes x N texts; steps, rates, evaluation, checkpoints and stops count "
                            "optimizer steps (default: 1)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="passes over the training set (default: 3)")
    length.add_argument("--max-steps", type=int, help="optimizer steps")
    train.add_argument("--max-time", type=duration, metavar="DURATION",
                       help="wall-clock budget of this invocation (3600, 45m, 4h): then stop at the next step with a "
                            "checkpoint and an export; --resume continues. SIGTERM and Ctrl-C stop the same way")
    train.add_argument("--lr", type=float, default=5e-4, help="peak AdamW rate of the head (default: 5e-4)")
    train.add_argument("--body-lr", type=float,
                       help="peak rate of the body: discriminative rates, e.g. --lr 1e-3 --body-lr 1e-4 "
                            "(default: --lr)")
    train.add_argument("--freeze-body", type=float, default=0.0, metavar="STEPS",
                       help="train only the head for the first STEPS steps (a fraction of the run if < 1), then all")
    train.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    train.add_argument("--schedule", choices=SCHEDULES, default="linear",
                       help="decay of both rates after warmup (default: linear to zero)")
    train.add_argument("--warmup", type=float, default=0.0,
                       help="linear warmup: steps, or a fraction of the run if < 1")
    train.add_argument("--clip-grad-norm", type=float, default=1.0,
                       help="clip the gradient norm (default: 1.0; 0 = off)")
    train.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no",
                       help="fp16: loss scaling (GPU); bf16: autocast. The loss is always fp32 (default: no)")
    train.add_argument("--seed", type=int, default=0, help="initialisation, data order, dropout (default: 0)")

    run = parser.add_argument_group("evaluation, checkpoints, logging")
    run.add_argument("--eval-every", type=int, default=0,
                     help="steps between dev evaluations (default: once per epoch)")
    run.add_argument("--patience", type=int, default=3,
                     help="stop after this many dev evaluations without improvement (default: 3; 0 = never)")
    run.add_argument("--eval-batch-size", type=int, help="texts per evaluation batch (default: 2 x --batch-size)")
    run.add_argument("--save-every", type=int, default=0,
                     help="checkpoint every N steps (default: 0 = only when stopped)")
    run.add_argument("--keep-checkpoints", type=int, default=2, help="how many recent checkpoints to keep (default: 2)")
    run.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                     help="continue the run in OUTPUT from its newest checkpoint (or the given one), with the settings "
                          "it started with (OUTPUT/run.json)")
    run.add_argument("--overwrite", action="store_true",
                     help="OUTPUT holds another run: replace it (removes only what bytezoo wrote there)")
    run.add_argument("--log-every", type=int, default=10, help="steps per metrics record (default: 10)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run.add_argument("--adapt-threads", action="store_true", help=ADAPT_THREADS_HELP)
    parser.set_defaults(func=_main)


def _label_count(text: str):
    from .compare import parse_label_count
    from .data import FinetuneError

    try:
        return parse_label_count(text)
    except FinetuneError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[-1]) from None


def _main(args: argparse.Namespace) -> int:
    from bytezoo.training.options import ending_lines

    from .compare import run_comparison
    from .trainer import FinetuneConfig

    # Only FinetuneConfig's fields: bytezoo.cli adds its own (command, debug, func), the comparison options go apart.
    fields = {field.name for field in dataclasses.fields(FinetuneConfig)}
    options = {key: value for key, value in vars(args).items() if key in fields}  # train_rows: not an option
    options["model_config"] = dict(options["model_config"])
    if args.pooling is not None:
        options["model_config"]["classifier_pooling"] = args.pooling
    if args.dropout is not None:
        options["model_config"]["classifier_dropout"] = args.dropout
    try:  # a user's mistake (a ByteZooError) is printed as one line by bytezoo.cli.main
        report = run_comparison(FinetuneConfig(**options), args.label_counts, baseline=args.baseline,
                                compare_probe=args.compare_probe)
    except KeyboardInterrupt:  # the second Ctrl-C: no checkpoint, on purpose
        print("bytezoo finetune: aborted (Ctrl-C twice); the newest checkpoint is as it was", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return report["exit_code"]
    metric = report["metric"]
    for entry in report["runs"]:  # ascending counts: the last is the run in OUTPUT
        figures = [f"dev {metric} {entry['dev']:.4f} (step {entry['best_step']})" if entry["dev"] is not None else None,
                   f"test {metric} {entry['test']:.4f}" if entry["test"] is not None else None]
        where = os.path.normpath(os.path.join(args.output, entry["output"], "model"))
        parts = [f"{entry['steps']} steps ({entry['epochs']:.2f} epochs, {entry['seconds_per_epoch']:.1f} s/epoch, "
                 f"stopped by {entry['stopped_by']})", *(f for f in figures if f), f"model in {where}"]
        print(("" if len(report["runs"]) == 1 else f"{entry['n_train']:,} labels: ") + "; ".join(parts))
    # How the command ended: the run a signal stopped (the last one run), else the run in OUTPUT.
    last = next((e for e in report["runs"] if e["exit_code"]), report["runs"][-1])
    print("\n".join(ending_lines(last)))
    return report["exit_code"]  # 0, or 130 / 143 after a stop by Ctrl-C / SIGTERM (its checkpoint written)
