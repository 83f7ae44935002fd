"""One-byte steps (generation / streaming features): the mLSTM before and after the inference cache, against the
nn.LSTM byte model, one thread, CPU time per step, interleaved (median of rounds).

    python benchmarks/bench_generation_step.py
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _machine.py
from _machine import machine  # noqa: E402  (benchmarks/ is the script's folder)

import bytezoo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def per_step(model, ids, clear_cache: bool, n: int = 100) -> float:
    with torch.inference_mode():
        state = model.model(ids, use_cache=True).state
        start = time.process_time()
        for _ in range(n):
            if clear_cache:  # the code before issue 16: weights and tables rebuilt at every call
                for layer in model.model.layers:
                    layer.__dict__.pop("_inference_cache", None)
            state = model.model(ids, state=state, use_cache=True).state
        return (time.process_time() - start) / n


def main() -> int:
    torch.set_num_threads(1)
    rows = []
    for hidden, batch in ((256, 1), (256, 32), (1024, 1), (4096, 1)):
        torch.manual_seed(0)
        mlstm = bytezoo.create_model("mlstm-256", hidden_size=hidden, embedding_size=64, num_layers=1).eval()
        lstm = bytezoo.create_model("lstm-256", hidden_size=hidden, embedding_size=64, num_layers=1).eval()
        ids = torch.randint(0, 256, (batch, 1))
        n = 100 if hidden < 4096 else 10
        times = {"mlstm (cached)": [], "mlstm (old: rebuilt per call)": [], "nn.LSTM": []}
        for _ in range(5):
            times["mlstm (cached)"].append(per_step(mlstm, ids, False, n))
            times["mlstm (old: rebuilt per call)"].append(per_step(mlstm, ids, True, n))
            times["nn.LSTM"].append(per_step(lstm, ids, False, n))
        medians = {k: statistics.median(v) for k, v in times.items()}
        row = {"hidden": hidden, "batch": batch, "median_seconds_per_step": medians, "all_seconds": times,
               "lstm_over_mlstm": medians["nn.LSTM"] / medians["mlstm (cached)"],
               "old_over_new": medians["mlstm (old: rebuilt per call)"] / medians["mlstm (cached)"]}
        rows.append(row)
        print(f"H={hidden} B={batch}: " + ", ".join(f"{k} {v * 1e6:,.0f} us" for k, v in medians.items())
              + f"; nn.LSTM/mLSTM {row['lstm_over_mlstm']:.2f}x, old/new {row['old_over_new']:.2f}x", flush=True)
    result = {"benchmark": "generation-step", "machine": machine(), "clock": "process CPU time, 1 thread", "rows": rows}
    (RESULTS / "generation-step.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
