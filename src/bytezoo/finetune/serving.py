"""Serving a fine-tuned classifier folder (``bytezoo finetune``'s ``OUTPUT/model``) the way ``bytezoo classify``
serves a transfer pipeline: the same call, the same result per text (both are a
:class:`~bytezoo.transfer.pipeline.ClassificationPipeline`; ``bytezoo.serving.load_pipeline`` opens either folder).

``transformers.pipeline("text-classification", model=DIR)`` serves the same folder; this class adds hub URLs,
length-sorted batches and chunked reading of long texts.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from bytezoo.transfer.pipeline import ClassificationPipeline


def is_sequence_classifier(directory: str) -> bool:
    """Whether ``directory`` holds a saved ``*ForSequenceClassification`` (its config.json's ``architectures``)."""
    try:
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
            architectures = json.load(handle).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(name).endswith("ForSequenceClassification") for name in architectures)


class SequenceClassificationPipeline(ClassificationPipeline):
    """A fine-tuned zoo classifier on raw texts (their UTF-8 bytes, as the byte tokenizer reads them), called as every
    :class:`~bytezoo.transfer.pipeline.ClassificationPipeline` is: single label (softmax over the classes),
    multi-label (a sigmoid per label) or regression.
    """

    def __init__(self, model, *, batch_size: int = 64, dtype: str = "float32", progress: bool | None = False):
        self.model = model.eval()
        self.batch_size = batch_size
        self.dtype = dtype
        self.progress = progress

    @classmethod
    def from_pretrained(cls, dir_or_url: str, *, batch_size: int = 64, device: str = "cpu", dtype: str = "float32",
                        progress: bool | None = False) -> SequenceClassificationPipeline:
        import bytezoo

        model = bytezoo.from_pretrained(str(dir_or_url))  # hub URLs resolved and verified; the class from config.json
        if not hasattr(model, "classification_loss"):
            raise ValueError(f"{dir_or_url}: holds a {type(model).__name__}, not a fine-tuned sequence classifier")
        return cls(model.to(device), batch_size=batch_size, dtype=dtype, progress=progress)

    @property
    def label_names(self) -> list[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(self.model.config.num_labels)]

    @property
    def output_names(self) -> list[str]:
        return self.label_names

    @property
    def problem(self) -> str:
        return {"multi_label_classification": "multi_label", "regression": "regression"}.get(
            self.model.config.problem_type, "single_label")

    def logits(self, texts: Sequence[str]):
        """(n, num_labels) float32 logits, texts read in length-sorted batches."""
        import torch
        from tqdm.auto import tqdm

        from .data import Split, collate

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        encoded = [text.encode("utf-8", errors="surrogateescape") for text in texts]
        split = Split("predict", "", encoded, np.zeros(len(encoded), dtype=np.int64))
        order = np.argsort(-split.lengths, kind="stable")
        result = np.zeros((len(encoded), self.model.config.num_labels), dtype=np.float32)
        device = self.model.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")
        with torch.inference_mode(), autocast:
            for start in tqdm(range(0, len(order), self.batch_size), disable=not self.progress, desc="classify"):
                rows = order[start : start + self.batch_size]
                ids, mask, _ = collate(split, rows)
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                result[rows] = logits.float().cpu().numpy()
        return result

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        logits = self.logits(texts)
        if self.model.config.problem_type == "multi_label_classification":
            return 1.0 / (1.0 + np.exp(-logits))
        if self.model.config.problem_type == "regression":
            return logits
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        values = self.predict_proba(texts)
        if self.model.config.problem_type == "multi_label_classification":
            return (values > 0.5).astype(np.int64)
        if self.model.config.problem_type == "regression":
            return values[:, 0]
        return np.asarray(self.label_names, dtype=object)[values.argmax(-1)]


__all__ = ["SequenceClassificationPipeline", "is_sequence_classifier"]
