"""``bytezoo pretrain``: the command-line face of :func:`bytezoo.pretrain.run`."""
from __future__ import annotations

import argparse
import sys

from bytezoo.training.options import ADAPT_THREADS_HELP
from bytezoo.training.options import duration as _duration
from bytezoo.training.options import key_value as _key_value

from .schedules import RECIPES, SCALING_RULES, SCHEDULES

DESCRIPTION = """\
Pretrain a byte-level language model with truncated backprop through time: the corpus is cut into
batch-size parallel byte streams per process, each window of --seq-len bytes continues the previous
window's recurrent state, and the state resets where a shard or file begins.

The same command runs as one process, under `accelerate launch` and under `torchrun`:
  bytezoo pretrain --model mlstm-256 --data reviews.csv --text-field sentence --output runs/a --max-steps 500
  accelerate launch --multi_gpu --num_processes 8 -m bytezoo.cli pretrain ... --mixed-precision fp16
  torchrun --nnodes 16 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m bytezoo.cli pretrain ...

OUTPUT (a local directory) receives:
  model/               the final model: save_pretrained (safetensors, config, tokenizer) + training_summary.json;
                       load with `import bytezoo; AutoModelForCausalLM.from_pretrained("OUTPUT/model")`
  metrics.jsonl        one JSON object per log step (loss, bpc, lr, chars_per_second) and per evaluation (val_bpc)
  tensorboard/         the same scalars for TensorBoard
  curves.png           BPC and learning rate against characters seen
  summary.json         the run's summary (as training_summary.json), with val_compression: gzip -9, bz2 -9, xz -9
                       and zstd -19 on exactly the bytes validation BPC is measured on (sizes and bits per byte)
  checkpoints/step-N/  periodic checkpoints (with --save-every), and one when a run stops early (--max-time,
                       SIGTERM, Ctrl-C); --resume continues from the newest sound one
  run.json             the run's identity (settings, each source's sha256, CPU threads): a folder holds one run;
                       another is refused unless --overwrite; --resume on changed data is refused

Exit codes: 0 when the run finished or spent its --max-time; 130 after Ctrl-C and 143 after SIGTERM (each once the
clean checkpoint is written); 2 for a user's mistake (one line). The last line says how the run ended.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("pretrain", help="pretrain a byte-level LM (Accelerate; 1 CPU to many GPUs)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="mlstm-256",
                       help="a zoo preset (`bytezoo models`) or a checkpoint directory to continue from "
                            "(default: mlstm-256)")
    model.add_argument("--model-config", metavar="KEY=VALUE", type=_key_value, action="append", default=[],
                       help="override a config field of a preset, e.g. hidden_size=512 "
                            "(repeatable; values parsed as JSON)")

    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", required=True, metavar="PATH_OR_URL",
                      help="training text: a packed corpus (`bytezoo data pack`; each process then reads only its own "
                           "bytes), or raw sources, which the main process packs into OUTPUT/corpus first (fine for "
                           "corpora packed in minutes; pack large ones ahead of time): a path, a glob, or any fsspec "
                           "URL (s3://, gs://, https://, memory://), repeatable; .txt (raw bytes), .jsonl/.json, "
                           ".csv/.tsv, each optionally compressed (.gz, .bz2, .xz, .zst)")
    data.add_argument("--val-data", action="append", default=[], metavar="PATH_OR_URL",
                      help="held-out text for validation BPC (same forms as --data; raw sources are packed into "
                           "OUTPUT/corpus-val)")
    data.add_argument("--text-field",
                      help="the text column (CSV) or key (JSON lines); default: the first of text, sentence, review, "
                           "content, body")
    data.add_argument("--seq-len", type=int, default=256, help="bytes per truncated-backprop window (default: 256)")
    data.add_argument("--shard-bytes", type=int, default=1 << 20,
                      help="at most this many contiguous bytes per stream between state resets (default: 1 MiB)")

    train = parser.add_argument_group("training")
    train.add_argument("--output", required=True, metavar="DIR", help="output directory (layout above)")
    train.add_argument("--batch-size", type=int, default=32,
                       help="parallel streams per process (default: 32); the global batch is x processes x "
                            "--grad-accum")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, help="optimizer steps to run")
    length.add_argument("--epochs", type=float,
                        help="passes over the corpus (default: 1 when --max-steps is not given)")
    train.add_argument("--max-time", type=_duration, metavar="DURATION",
                       help="wall-clock budget of this invocation (3600, 45m, 4h): once spent, stop at the next step, "
                            "then evaluate, checkpoint and export as at the end; --resume continues. SIGTERM (a "
                            "scheduler's preemption notice) stops the same way. The schedule still spans "
                            "--max-steps/--epochs")
    train.add_argument("--recipe", choices=sorted(RECIPES),
                       help="a named preset; puri2018 = Puri et al. 2018's large-batch recipe: lr 5e-4 per 128 "
                            "sequences scaled linearly and capped at 3e-3, 2%% warmup, linear decay to zero. Explicit "
                            "options override it")
    train.add_argument("--lr", type=float, help="Adam learning rate for --base-batch-size sequences (default: 5e-4)")
    train.add_argument("--lr-scaling", choices=SCALING_RULES,
                       help="scale --lr by global batch / --base-batch-size (default: none)")
    train.add_argument("--base-batch-size", type=int, help="the global batch --lr is meant for (default: 128)")
    train.add_argument("--lr-cap", type=float, help="upper bound on the scaled rate (Puri et al.: 3e-3)")
    train.add_argument("--schedule", choices=SCHEDULES,
                       help="decay after warmup: constant, linear to zero, cosine to zero, exponential to 1%% "
                            "(default: linear)")
    train.add_argument("--warmup", type=float,
                       help="linear warmup: a number of steps, or a fraction of the run if < 1 (default: 0)")
    train.add_argument("--clip-grad-norm", type=float, default=1.0,
                       help="clip the global gradient norm (default: 1.0; 0 = off)")
    train.add_argument("--grad-accum", type=int, default=1, dest="grad_accum_steps",
                       help="consecutive windows per optimizer step (default: 1)")
    train.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no",
                       help="fp16: dynamic loss scaling and fp32 master weights (GPU); bf16: autocast. Loss always in "
                            "fp32 (default: no)")
    train.add_argument("--seed", type=int, default=0, help="initialisation and data order (default: 0)")

    run = parser.add_argument_group("checkpoints and logging")
    run.add_argument("--save-every", type=int, default=0,
                     help="checkpoint every N steps, and at the end (default: 0 = no checkpoints)")
    run.add_argument("--keep-checkpoints", type=int, default=2, help="how many recent checkpoints to keep (default: 2)")
    run.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                     help="continue the run in OUTPUT from its newest checkpoint (or the given one); the run's "
                          "settings must match those it started with (OUTPUT/run.json), except --max-steps, "
                          "--epochs, --max-time, --val-data and the logging, evaluation and checkpoint intervals")
    run.add_argument("--overwrite", action="store_true",
                     help="OUTPUT holds another run: replace it (removes only what bytezoo pretrain wrote there). "
                          "Without --overwrite or --resume, a folder holding a run is refused")
    run.add_argument("--eval-every", type=int, default=0,
                     help="validation BPC every N steps (always at the end with --val-data)")
    run.add_argument("--log-every", type=int, default=10, help="steps per metrics record (default: 10)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run.add_argument("--adapt-threads", action="store_true", help=ADAPT_THREADS_HELP)
    parser.set_defaults(func=_main)
    register_evaluate(subparsers)


def _main(args: argparse.Namespace) -> int:
    import os

    import dataclasses

    from bytezoo.training.options import ending_lines

    from .trainer import PretrainConfig, run

    # A user's mistake (bad data, option, folder, a diverged loss) raises a ByteZooError, which `bytezoo` prints on one
    # line (bytezoo.cli.main); anything else is a bug and keeps its traceback.
    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(PretrainConfig)}
    options["model_config"] = dict(options["model_config"])
    try:
        summary = run(PretrainConfig(**options))
    except KeyboardInterrupt:  # the second Ctrl-C: no checkpoint, on purpose
        print("bytezoo pretrain: aborted (Ctrl-C twice); the newest checkpoint is as it was", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return summary["exit_code"]  # one summary line per run, from the main process
    if summary.get("val_compression"):
        from .compression import describe

        print(f"  beside val BPC: {describe(summary['val_compression'])}")
    val = f"{summary['val_bpc']:.4f}" if summary["val_bpc"] is not None else "n/a"
    print(f"{summary['steps']} steps, {summary['characters_seen']:,} characters, "
          f"{summary['chars_per_second']:,.0f} char/s, val BPC {val}; model in {args.output}/model")
    print("\n".join(ending_lines(summary)))
    return summary["exit_code"]  # 0, or 130 / 143 after a stop by Ctrl-C / SIGTERM (its checkpoint written)


EVALUATE_DESCRIPTION = """\
Bits per byte of a byte-level language model on any text bytezoo reads, measured exactly as pretraining measures its
validation BPC: the text is cut into --batch-size parallel streams of chunks (at most --shard-bytes each), read in
--seq-len windows with the state carried from window to window and reset where a chunk or a document (a source file)
begins. With the same --batch-size, --seq-len and --shard-bytes as a one-process `bytezoo pretrain --val-data`, the
total is the validation BPC that run reports for the same model and bytes. gzip -9, bz2 -9, xz -9 and zstd -19 run on
exactly the bytes the windows read.

  bytezoo evaluate runs/a/model heldout.txt
  bytezoo evaluate s3://bucket/models/mlstm@v3 corpus/packed --max-bytes 100000000 --json
"""


def register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="bits per byte of a model on held-out text (no training)",
                                   description=EVALUATE_DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL",
                        help="a checkpoint folder (a pretraining export, `bytezoo convert` output) or a hub URL "
                             "(…@version)")
    parser.add_argument("data", metavar="DATA", nargs="+",
                        help="held-out text: a packed corpus, or raw sources (paths, globs, fsspec URLs; .txt, .jsonl, "
                             ".csv, .tsv, optionally compressed), each one source in the per-source figures")
    parser.add_argument("--text-field",
                        help="the text column (CSV) or key (JSON lines); default: the first of text, sentence, review, "
                             "content, body")
    parser.add_argument("--max-bytes", type=int, metavar="N", help="evaluate only the first N bytes of the data")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="parallel streams, as pretraining's --batch-size (default: 32; fewer on short text)")
    parser.add_argument("--seq-len", type=int, default=256,
                        help="bytes per window, as pretraining's --seq-len (default: 256)")
    parser.add_argument("--shard-bytes", type=int, default=1 << 20,
                        help="at most this many contiguous bytes per stream between state resets (default: 1 MiB)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="bfloat16: autocast, as pretraining's --mixed-precision bf16 (default: float32)")
    parser.add_argument("--no-compressors", dest="compressors", action="store_false", help="skip gzip/bz2/xz/zstd")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile

    import torch

    from bytezoo.errors import InvalidArgumentError
    from bytezoo.untrusted import jsonio

    from .evaluation import describe_result, evaluate_corpus, open_held_out

    for name in ("batch_size", "seq_len", "shard_bytes", "max_bytes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = _load_for_evaluation(args.model).to(device)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bfloat16"
                else contextlib.nullcontext)
    with tempfile.TemporaryDirectory(prefix="bytezoo-evaluate-") as workdir:
        corpus = open_held_out(args.data, args.text_field, workdir)
        result = evaluate_corpus(model, corpus, batch_size=args.batch_size, seq_len=args.seq_len,
                                 shard_bytes=args.shard_bytes, max_bytes=args.max_bytes, device=device,
                                 autocast=autocast, compressors=args.compressors, progress=args.progress)
    result.update(model=args.model, data=args.data, dtype=args.dtype, device=str(device))
    print(jsonio.dumps(result, indent=2) if args.json else describe_result(result))
    return 0


def _load_for_evaluation(reference: str):
    """A zoo causal LM from a checkpoint folder or hub URL; a reference that is neither is one clear error."""
    import os

    import bytezoo
    from bytezoo.errors import ByteZooError, InvalidArgumentError

    if "://" not in reference and "@" not in reference and not os.path.isdir(reference):
        raise InvalidArgumentError(f"MODEL {reference!r}: no such checkpoint folder (give a folder holding config.json "
                                   "and weights, or a hub URL such as s3://bucket/models/name@latest)")
    try:
        return bytezoo.from_pretrained(reference)
    except ByteZooError:
        raise
    except (OSError, ValueError) as error:
        raise InvalidArgumentError(f"MODEL {reference!r} cannot be loaded: {error}") from error
