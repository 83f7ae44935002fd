"""SST (binary) test accuracy of the full transfer pipeline, next to the TF-IDF baseline measured in the same run and
the paper's figure.

    .venv/bin/python benchmarks/bench_transfer_sst.py --model runs/sst-lm/model [--output-dir /tmp/sst-transfer]

``--model`` is any checkpoint directory or hub URL (e.g. ``bytezoo pretrain``'s ``OUTPUT/model``). The script runs
``bytezoo transfer`` on ../shared/data/sst/{train,dev,test}.csv with ``--baseline tfidf`` and writes
``benchmarks/results/transfer-sst.json``: the report's accuracies, C, non-zero count, top unit, featurization speed,
the model's ``training_summary.json`` (how it was pretrained) when present, and Radford et al.'s 91.8% for reference.
How the model was pretrained is recorded from ``--pretrain-note`` (say what text it saw, e.g. whether it included the
test sentences).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import SHARED_DATA, machine  # noqa: E402  (benchmarks/ is the script's folder)

PAPER_SST_TEST_ACCURACY = 0.918  # Radford et al. 2017, 4096-d mLSTM on 82M Amazon reviews, L1 logistic regression
SST = SHARED_DATA / "sst"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint directory or hub URL")
    parser.add_argument("--output-dir", help="where bytezoo transfer writes (default: a temporary directory)")
    parser.add_argument("--pretrain-note", default="", help="how the model was pretrained, for the record")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pooling", help="a pooling mode the model offers (bytezoo.zoo.recurrent_lm.POOLINGS; default: "
                        "the model's own)")
    parser.add_argument("--result", default=str(Path(__file__).parent / "results" / "transfer-sst.json"))
    args = parser.parse_args()
    if not (SST / "train.csv").is_file():
        raise SystemExit(f"SST not found at {SST}; nothing to measure")

    from bytezoo.transfer import TransferConfig, run_transfer

    output = args.output_dir or tempfile.mkdtemp(prefix="bytezoo-sst-transfer-")
    started = time.perf_counter()
    report = run_transfer(TransferConfig(
        model=args.model, train=str(SST / "train.csv"), dev=str(SST / "dev.csv"), test=str(SST / "test.csv"),
        output=output, text_col="sentence", label_cols=["label"], baseline="tfidf", batch_size=args.batch_size,
        pooling=args.pooling, progress=False, overwrite=True,
    ))
    summary = None
    summary_path = Path(str(args.model)) / "training_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
    result = {
        "benchmark": "SST binary sentiment: transfer pipeline vs TF-IDF baseline vs paper",
        "command": f"python benchmarks/bench_transfer_sst.py --model {args.model} --pooling {report['featurizer']['pooling']}",
        "pooling": report["featurizer"]["pooling"],
        "test_accuracy": report["accuracy"]["test"],
        "dev_accuracy": report["accuracy"]["dev"],
        "tfidf_test_accuracy": report["baselines"]["tfidf"]["test_accuracy"],
        "paper_test_accuracy": PAPER_SST_TEST_ACCURACY,
        "top_unit": report["top_units"][0]["unit"],
        "top_unit_test_accuracy": report["top_unit_classifier"]["test_accuracy"],
        "top_k_test_accuracy": report["top_k_classifier"]["test_accuracy"],
        "C": report["classifier"]["C"],
        "n_nonzero": report["classifier"]["n_nonzero"],
        "data_efficiency": report["data_efficiency"],
        "featurization": report["featurization"],
        "model": report["model"],
        "pretraining": {"note": args.pretrain_note, "training_summary": summary},
        "timings": report["timings"],
        "seconds": time.perf_counter() - started,
        "output_dir": output,
        "machine": machine(),
        "device": {"cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("test_accuracy", "tfidf_test_accuracy", "paper_test_accuracy", "top_unit", "top_unit_test_accuracy")}))
    print(f"wrote {args.result}; plots and report in {output}")


if __name__ == "__main__":
    main()
