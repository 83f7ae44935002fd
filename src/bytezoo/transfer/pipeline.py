"""A trained transfer classifier with its language model, ready to label texts.

>>> pipe = SentimentPipeline.from_pretrained("outputs/sst")       # doctest: +SKIP
>>> pipe(["A moving, funny film.", "Dull."])                       # doctest: +SKIP
[{'label': '1', 'score': 0.93, 'probabilities': {'0': 0.07, '1': 0.93}}, ...]

A pipeline directory holds ``classifier.safetensors`` + ``classifier.json`` (written by ``bytezoo transfer`` or
:meth:`SentimentPipeline.save_pretrained`) and either the model itself (``config.json``, ``model.safetensors``,
tokenizer files) or, in ``classifier.json``'s ``"model"`` field, a reference to it (a directory or hub URL).
``classifier.json`` also holds the fingerprint of the weights the features came from
(:func:`~bytezoo.transfer.featurizer.weights_fingerprint`): a model whose weights differ (retrained, another model
under the same name) is refused, since its units mean something else, unless ``allow_other_model``.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from bytezoo.errors import ByteZooError
from bytezoo.hub.urls import is_url

from .classifier import SparseLogisticClassifier
from .featurizer import Featurizer

FEATURIZER_OPTIONS = ("pooling", "preprocess")


class PipelineError(ByteZooError, ValueError):
    """A saved pipeline whose classifier and model do not fit together, or whose model cannot be found."""


def pipeline_model(directory: str, metadata: dict, model: str | None = None, shown: str | None = None) -> str:
    """The model of the pipeline in local ``directory`` (its classifier's ``metadata``): ``model`` when given, else
    the one saved beside the classifier, else the reference in the metadata (a relative path is taken from the
    pipeline directory). ``shown`` names the pipeline in errors."""
    if model is not None:
        return model
    if os.path.isfile(os.path.join(directory, "config.json")):
        return directory
    reference = metadata.get("model")
    if not reference:
        raise PipelineError(f"{shown or directory}: no model saved beside the classifier and no 'model' reference "
                            "in its metadata; name the model (--model, or model= in Python)")
    if not is_url(reference) and not os.path.isabs(reference):
        return os.path.join(directory, reference)
    return reference


def _resolve_directory(dir_or_url: str) -> str:
    """A local directory for ``dir_or_url``: hub references (URLs, local hub repositories, ``@TAG``) are pulled and
    verified through :func:`bytezoo.hub.resolve`; a plain directory passes through."""
    from bytezoo.hub import resolve

    return str(resolve(str(dir_or_url)))


class ClassificationPipeline:
    """What every bytezoo classifier of raw texts answers alike, written once: a call on a list of texts gives, per
    text, ``{"label", "score", "probabilities"}`` (single label: the classes' probabilities), ``{"labels",
    "probabilities"}`` (multi-label: a probability per label, those above 0.5 chosen) or ``{"value"}`` (regression).
    A single string is a list of one. Subclasses (:class:`SentimentPipeline`, the probe; ``bytezoo.finetune``'s
    ``SequenceClassificationPipeline``, a fine-tuned model) give :meth:`predict_proba`, :attr:`output_names` and
    :attr:`problem`; ``bytezoo.serving.load_pipeline`` opens either kind of saved folder."""

    @property
    def problem(self) -> str:
        """``"single_label"``, ``"multi_label"`` or ``"regression"``."""
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        """The name of each column :meth:`predict_proba` returns."""
        raise NotImplementedError

    def predict_proba(self, texts: Sequence[str] | str) -> np.ndarray:
        """(n_texts, n_outputs) probabilities (regression: the predicted values)."""
        raise NotImplementedError

    def __call__(self, texts: Sequence[str] | str) -> list[dict]:
        values, names, problem = self.predict_proba(texts), self.output_names, self.problem
        results = []
        for row in values:
            if problem == "regression":
                results.append({"value": float(row[0])})
                continue
            named = {name: float(p) for name, p in zip(names, row)}
            if problem == "multi_label":
                results.append({"labels": [name for name, p in named.items() if p > 0.5], "probabilities": named})
            else:
                best = int(np.argmax(row))
                results.append({"label": names[best], "score": float(row[best]), "probabilities": named})
        return results


class SentimentPipeline(ClassificationPipeline):
    """A :class:`Featurizer` (model + pooling + preprocessing) followed by a :class:`SparseLogisticClassifier`; called
    as every :class:`ClassificationPipeline` is (single-label or multi-label tasks).
    """

    def __init__(self, featurizer: Featurizer, classifier: SparseLogisticClassifier,
                 label_names: Sequence[str] | None = None, model_reference: str | None = None):
        self.featurizer = featurizer
        self.classifier = classifier
        self.label_names = list(label_names) if label_names is not None else None
        self.model_reference = model_reference

    @classmethod
    def from_pretrained(cls, dir_or_url: str, *, model: str | None = None, batch_size: int = 512, device: str = "cpu",
                        dtype: str = "float32", progress: bool | None = False,
                        allow_other_model: bool = False) -> "SentimentPipeline":
        """Load the classifier in ``dir_or_url`` and its model: ``model=``, else the one saved beside it, else the
        reference recorded in the classifier's metadata (relative paths are taken from the pipeline directory). A
        model whose weights are not those the classifier was fitted on (its fingerprint in ``classifier.json``) is
        refused unless ``allow_other_model``. (``bytezoo.serving.load_pipeline`` also opens a fine-tuned classifier's
        folder, which holds no ``classifier.json``.)"""
        directory = _resolve_directory(dir_or_url)
        classifier, metadata = SparseLogisticClassifier.load(directory)
        given = model is not None
        model = pipeline_model(directory, metadata, model, shown=dir_or_url)
        options = {key: value for key, value in (metadata.get("featurizer") or {}).items() if key in FEATURIZER_OPTIONS}
        featurizer = Featurizer(model, batch_size=batch_size, device=device, dtype=dtype, progress=progress,
                                **options).fit()
        if featurizer.n_features_out_ != classifier.n_features_in_:
            raise PipelineError(f"{dir_or_url}: the classifier expects {classifier.n_features_in_} features but the "
                                f"model {model!r} has {featurizer.n_features_out_} units; use the model it was trained "
                                "on")
        expected = metadata.get("weights_fingerprint")
        if expected and not allow_other_model:
            from .featurizer import weights_fingerprint

            found = weights_fingerprint(featurizer.language_model_)
            if found != expected:
                where = "the model given" if given else f"its model {model}"
                raise PipelineError(f"{dir_or_url}: the classifier was fitted on the features of weights "
                                    f"{expected[:12]}, and {where} has weights {found[:12]} (retrained, or another "
                                    "model): its units mean something else. Use the model it was fitted on, or allow "
                                    "it (--allow-other-model, allow_other_model=True in Python)")
        return cls(featurizer, classifier, label_names=metadata.get("label_names"), model_reference=str(model))

    def save_pretrained(self, directory: str, *, include_model: bool = True,
                        model_reference: str | None = None) -> None:
        """Write the classifier, and the model beside it (``include_model``) or a reference to it."""
        reference = model_reference or self.model_reference
        if include_model:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem

            fs, root = fsspec.core.url_to_fs(str(directory))
            if not isinstance(fs, LocalFileSystem):
                raise PipelineError(f"include_model=True writes a local directory, and {directory} is not one: save "
                                    "locally and push the folder with `bytezoo hub push`")
            self.featurizer.language_model_.save_pretrained(root)
            from bytezoo import ByteTokenizer

            ByteTokenizer().save_pretrained(root)
            reference = "."
        elif reference is None:
            raise PipelineError("save_pretrained(include_model=False) needs the model's reference (a directory or hub "
                                "URL): pass model_reference=")
        self.classifier.save(directory, metadata=pipeline_metadata(self.featurizer, reference, self.label_names))

    @property
    def problem(self) -> str:
        return "multi_label" if self.classifier.task_ == "multilabel" else "single_label"

    @property
    def output_names(self) -> list[str]:
        if self.classifier.task_ == "multilabel" and self.label_names:
            return list(self.label_names)
        return [str(value) for value in self.classifier.classes_]

    def predict_proba(self, texts: Sequence[str] | str) -> np.ndarray:
        return self.classifier.predict_proba(self.featurizer.transform(_as_list(texts)))

    def predict(self, texts: Sequence[str] | str) -> np.ndarray:
        return self.classifier.predict(self.featurizer.transform(_as_list(texts)))


def _as_list(texts):
    """A bare string is one text (the :class:`Featurizer` itself, a scikit-learn transformer, refuses one)."""
    return [texts] if isinstance(texts, (str, bytes)) else texts


def pipeline_metadata(featurizer: Featurizer, model_reference: str | None, label_names: Sequence[str] | None) -> dict:
    """The classifier metadata that lets :meth:`SentimentPipeline.from_pretrained` rebuild the featurizer."""
    from .featurizer import weights_fingerprint

    model = featurizer.language_model_
    body = getattr(model, "model", model)
    import bytezoo

    return {
        "model": model_reference,
        "model_config": {"model_type": body.config.model_type, "hidden_size": body.config.hidden_size,
                         "num_layers": body.config.num_layers},
        "weights_fingerprint": weights_fingerprint(model),  # sha256 of the body's weights: classify refuses others
        "featurizer": {"pooling": featurizer.pooling_, "preprocess": featurizer.preprocess},
        "label_names": list(label_names) if label_names is not None else None,
        "bytezoo_version": bytezoo.__version__,
    }


__all__ = ["ClassificationPipeline", "PipelineError", "SentimentPipeline", "pipeline_metadata", "pipeline_model"]
