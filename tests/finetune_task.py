"""Test helpers shared by test_finetune.py and test_finetune_compare.py: word-level sentiment CSVs, the tiny
fine-tuning task built from them (the ``finetune_task`` fixture in conftest.py), and the common command line."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

POSITIVE, NEGATIVE, FILLER = ["good", "great", "fine", "lovely"], ["bad", "awful", "dull", "poor"], ["the", "film", "a", "plot", "was"]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sentiment_rows(count: int, rng, classes: int = 2) -> list[dict]:
    rows = []
    for _ in range(count):
        label = int(rng.integers(0, classes))
        words = [str(rng.choice(POSITIVE if label == 1 else NEGATIVE if label == 0 else ["so-so", "meh"]))]
        words += [str(w) for w in rng.choice(FILLER, int(rng.integers(0, 12)))]
        rng.shuffle(words)
        rows.append({"label": ["neg", "pos", "mixed"][label], "sentence": " ".join(words)})
    return rows


def make_task(root: Path) -> dict:
    """A tiny mLSTM LM checkpoint and train/dev/test CSVs of word-level sentiment (labels 'neg'/'pos') under ``root``."""
    import bytezoo

    rng = np.random.default_rng(0)
    language_model = bytezoo.create_model("mlstm-256", hidden_size=16, embedding_size=8)
    language_model.save_pretrained(root / "lm")
    bytezoo.ByteTokenizer().save_pretrained(root / "lm")
    files = {split: write_csv(root / f"{split}.csv", sentiment_rows(n, rng)) for split, n in
             (("train", 96), ("dev", 40), ("test", 40))}
    return {"lm": root / "lm", **files, "root": root}


def common(task: dict, output: Path, *extra: str) -> list[str]:
    """``bytezoo finetune`` on ``task`` into ``output``, small and fast, plus ``extra``."""
    return ["finetune", "--model", str(task["lm"]), "--train", str(task["train"]), "--dev", str(task["dev"]),
            "--output", str(output), "--batch-size", "8", "--lr", "1e-2", "--no-progress", "--log-every", "1", *extra]
