"""L1-penalised logistic regression on model features, with C swept on a dev set, as in Radford et al. 2017.

>>> clf = SparseLogisticClassifier().fit(train_features, train_labels, dev_features, dev_labels)  # doctest: +SKIP
>>> clf.score(test_features, test_labels), clf.n_nonzero_, clf.top_units_[0]                    # doctest: +SKIP

Tasks (found from the labels): ``"binary"`` (one weight vector; the unit with the largest weight is the sentiment
neuron), ``"multiclass"`` (one-vs-rest, probabilities normalised over classes, as scikit-learn's liblinear did),
``"multilabel"`` (a 0/1 matrix, one independent classifier per column). Every problem is solved by liblinear's L1
solver one binary column at a time, so the coefficients are plain arrays, saved as safetensors (never pickle).

The score is the task's (:func:`bytezoo.transfer.metrics.task_score`): accuracy for binary and multi-class tasks, and
for multi-label tasks the mean per-example Jaccard similarity of predicted and true label sets (the SemEval-2018 E-c
"accuracy").
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from bytezoo.errors import ByteZooError, InvalidArgumentError
from bytezoo.untrusted import jsonio

from .comparison import held_out_rows
from .metrics import TASKS, task_of, task_score

DEFAULT_CS = tuple(float(2.0**exponent) for exponent in range(-8, 1))  # the original sweep: 2^-8 … 2^0
CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_METADATA = "classifier.json"
CLASSIFIER_FORMAT = "bytezoo-transfer-classifier"
CLASSIFIER_FORMAT_VERSION = 1


class ClassifierFormatError(ByteZooError, ValueError):
    """A saved classifier (classifier.json + classifier.safetensors) that cannot be loaded: names the file."""


class ClassifierNotFoundError(ByteZooError, FileNotFoundError):
    """A folder that holds no saved classifier (no classifier.json)."""


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def _fit_binary_column(X: np.ndarray, target: np.ndarray, C: float, max_iter: int, tol: float,
                       random_state) -> tuple[np.ndarray, float]:
    """(weights (H,), intercept) of one L1 logistic regression. Where every weight is zero (a constant column, or a C
    too small for the features) the intercept is the column's log-odds, so it predicts the column's majority value:
    liblinear penalises the intercept too, and would otherwise leave it near 0, a coin toss."""
    positives = int(target.sum())
    prior = np.clip(positives / len(target), 1e-6, 1 - 1e-6)
    if positives in (0, len(target)):
        return np.zeros(X.shape[1]), float(np.log(prior / (1 - prior)))
    model = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=max_iter, tol=tol,
                               random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tiny C: liblinear stops at max_iter with all-zero weights
        model.fit(X, target)
    weights = model.coef_[0].astype(np.float64)
    if not weights.any():
        return weights, float(np.log(prior / (1 - prior)))
    return weights, float(model.intercept_[0])


class SparseLogisticClassifier(ClassifierMixin, BaseEstimator):
    """L1 logistic regression with C chosen on a dev set; finds the units that carry the label.

    Args:
        Cs: inverse regularisation strengths to sweep (default 2^-8 … 2^0, the original's).
        top_k: how many units to report in ``top_units_``.
        max_iter, tol: liblinear's.
        random_state: liblinear's seed, and the dev split's when no dev set is given.
        dev_fraction: share of the training set held out to choose C when :meth:`fit` gets no dev set (C is then
            refitted on the whole training set).

    Learned attributes: ``task_``, ``classes_`` ((n_classes,) for binary/multi-class; column indices for
    multi-label), ``coef_`` (n_outputs, H) with n_outputs = 1 for binary, ``intercept_`` (n_outputs,), ``C_``,
    ``dev_scores_`` ({C: dev score}), ``n_nonzero_``, ``top_units_`` (top_k unit indices, most important first, by
    the L2 norm of each unit's weights across outputs), ``top_weights_`` (n_outputs, top_k), ``n_features_in_``.
    """

    def __init__(self, Cs=None, *, top_k: int = 10, max_iter: int = 1000, tol: float = 1e-4, random_state=0,
                 dev_fraction: float = 0.2):
        self.Cs = Cs
        self.top_k = top_k
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.dev_fraction = dev_fraction

    # --- fitting ----------------------------------------------------------------------------------------------------
    def fit(self, X, y, X_dev=None, y_dev=None):
        X = self._check_features(X, fitting=True)
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self.task_ = task_of(y)
        Cs = tuple(float(c) for c in (DEFAULT_CS if self.Cs is None else self.Cs))
        if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
            raise InvalidArgumentError(f"Cs must be positive finite numbers; got {self.Cs!r}")
        self.classes_ = np.arange(y.shape[1]) if self.task_ == "multilabel" else np.unique(y)

        refit_on_all = False
        if X_dev is None or y_dev is None:
            fit_rows, dev_rows = held_out_rows(y, self.task_, self.dev_fraction, self.random_state)
            X, X_dev, y, y_dev = X[fit_rows], X[dev_rows], y[fit_rows], y[dev_rows]
            refit_on_all = True
            X_all, y_all = np.concatenate([X, X_dev]), np.concatenate([y, y_dev])
        X_dev = self._check_features(X_dev)
        y_dev = np.asarray(y_dev)

        self.dev_scores_ = {}
        best = None
        for C in Cs:
            coef, intercept = self._fit_coefficients(X, y, C)
            score = task_score(self.task_, y_dev, self._predict_with(coef, intercept, X_dev))
            self.dev_scores_[C] = score
            if best is None or score > best[0]:  # ties keep the smaller C: the sparser model
                best = (score, C, coef, intercept)
        _, self.C_, self.coef_, self.intercept_ = best
        if refit_on_all:
            self.coef_, self.intercept_ = self._fit_coefficients(X_all, y_all, self.C_)
        self._set_units()
        return self

    def _fit_coefficients(self, X, y, C) -> tuple[np.ndarray, np.ndarray]:
        if self.task_ == "binary":
            columns = [(y == self.classes_[1]).astype(np.int64)]
        elif self.task_ == "multiclass":
            columns = [(y == cls).astype(np.int64) for cls in self.classes_]
        else:
            columns = [y[:, index].astype(np.int64) for index in range(y.shape[1])]
        fitted = [_fit_binary_column(X, column, C, self.max_iter, self.tol, self.random_state) for column in columns]
        return np.stack([weights for weights, _ in fitted]), np.asarray([intercept for _, intercept in fitted])

    def _set_units(self) -> None:
        importance = np.linalg.norm(self.coef_, axis=0)  # (H,)
        k = min(int(self.top_k), importance.size)
        self.top_units_ = np.argsort(-importance, kind="stable")[:k]
        self.top_weights_ = self.coef_[:, self.top_units_]
        self.n_nonzero_ = int(np.count_nonzero(self.coef_))

    # --- prediction -------------------------------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = self._check_features(X)
        scores = X @ self.coef_.T + self.intercept_  # (N, n_outputs)
        return scores[:, 0] if self.task_ == "binary" else scores

    def predict_proba(self, X) -> np.ndarray:
        """(N, n_classes) class probabilities; multi-label: (N, n_labels) independent per-label probabilities."""
        scores = self.decision_function(X)
        if self.task_ == "binary":
            positive = _sigmoid(scores)
            return np.stack([1.0 - positive, positive], axis=1)
        probabilities = _sigmoid(scores)
        if self.task_ == "multiclass":
            probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities

    def predict(self, X) -> np.ndarray:
        probabilities = self.predict_proba(X)
        if self.task_ == "multilabel":
            return (probabilities > 0.5).astype(np.int64)
        return self.classes_[np.argmax(probabilities, axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        return task_score(self.task_, np.asarray(y), self.predict(X))

    def _predict_with(self, coef, intercept, X) -> np.ndarray:
        scores = X @ coef.T + intercept
        if self.task_ == "multilabel":
            return (scores > 0).astype(np.int64)
        if self.task_ == "binary":
            return self.classes_[(scores[:, 0] > 0).astype(np.int64)]
        return self.classes_[np.argmax(_sigmoid(scores) / _sigmoid(scores).sum(1, keepdims=True), axis=1)]

    def _check_features(self, X, fitting: bool = False) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"features must be a 2-d array (n_texts, n_features); got shape {X.shape}")
        if not np.isfinite(X).all():
            row, column = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"features hold a non-finite value at row {row}, column {column}")
        if fitting:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"features have {X.shape[1]} columns; the classifier was fitted on {self.n_features_in_}")
        return X

    # --- persistence (safetensors + JSON, never pickle) -------------------------------------------------------------
    def save(self, directory: str, metadata: dict | None = None) -> None:
        """Write ``classifier.safetensors`` (coef, intercept) and ``classifier.json`` (everything else, plus
        ``metadata`` such as the model reference and featurizer options) into ``directory`` (any fsspec URL)."""
        import fsspec
        from safetensors.numpy import save

        check_is_fitted(self, "coef_")
        fs, root = fsspec.core.url_to_fs(str(directory))
        fs.makedirs(root, exist_ok=True)
        with fs.open(f"{root}/{CLASSIFIER_WEIGHTS}", "wb") as handle:
            handle.write(save({"coef": np.ascontiguousarray(self.coef_),
                               "intercept": np.ascontiguousarray(self.intercept_)}))
        described = {
            "format": CLASSIFIER_FORMAT,
            "format_version": CLASSIFIER_FORMAT_VERSION,
            "task": self.task_,
            "classes": [_jsonable(value) for value in self.classes_],
            "C": self.C_,
            "dev_scores": {repr(c): score for c, score in self.dev_scores_.items()},
            "n_features": int(self.n_features_in_),
            "n_nonzero": self.n_nonzero_,
            "top_units": [int(unit) for unit in self.top_units_],
            "params": self.get_params(),
            **(metadata or {}),
        }
        with fs.open(f"{root}/{CLASSIFIER_METADATA}", "w") as handle:
            handle.write(jsonio.dumps(described, indent=2, default=_jsonable))

    @classmethod
    def load(cls, directory: str) -> tuple["SparseLogisticClassifier", dict]:
        """The classifier saved in ``directory`` (local or fsspec URL), and its full metadata. Anything malformed in
        either file raises :class:`ClassifierFormatError` naming it."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        from bytezoo.untrusted import network

        fs, root = network.url_to_fs(str(directory))  # with connect and idle timeouts
        metadata_path = f"{root}/{CLASSIFIER_METADATA}"
        weights_path = f"{root}/{CLASSIFIER_WEIGHTS}"
        try:
            with fs.open(metadata_path, "rb") as handle:
                metadata = jsonio.loads(handle.read())  # strict: deep nesting, duplicate keys, NaN: one line
        except FileNotFoundError:
            raise ClassifierNotFoundError(f"{directory}: no {CLASSIFIER_METADATA}; not a saved bytezoo classifier "
                                          "(a folder written by `bytezoo transfer` or "
                                          "SentimentPipeline.save_pretrained; a fine-tuned model's folder opens with "
                                          "bytezoo.serving.load_pipeline)") from None
        except ValueError as error:
            raise ClassifierFormatError(f"{metadata_path}: not valid JSON ({error})") from None
        if (not isinstance(metadata, dict) or metadata.get("format") != CLASSIFIER_FORMAT
                or not isinstance(metadata.get("format_version"), int)
                or metadata["format_version"] > CLASSIFIER_FORMAT_VERSION):
            found = (metadata.get("format"), metadata.get("format_version")) if isinstance(metadata, dict) else None
            raise ClassifierFormatError(f"{metadata_path}: not a {CLASSIFIER_FORMAT} v{CLASSIFIER_FORMAT_VERSION} file "
                                        f"(format and version: {found!r})")
        try:
            with fs.open(weights_path, "rb") as handle:
                tensors = load(handle.read())
        except FileNotFoundError:
            raise ClassifierFormatError(f"{directory}: no {CLASSIFIER_WEIGHTS} beside {CLASSIFIER_METADATA}") from None
        except (SafetensorError, ValueError) as error:
            raise ClassifierFormatError(f"{weights_path}: not a valid safetensors file ({error})") from None
        _check_metadata(metadata, metadata_path)
        try:
            params = {key: value for key, value in metadata.get("params", {}).items() if key in cls().get_params()}
            classifier = cls(**params)
            classifier.task_ = metadata["task"]
            if classifier.task_ not in TASKS:
                raise ValueError(f"unknown task {classifier.task_!r}")
            classifier.classes_ = np.asarray(metadata["classes"],
                                             dtype=object if classifier.task_ != "multilabel" else np.int64)
            classifier.coef_ = np.asarray(tensors["coef"], dtype=np.float64)
            classifier.intercept_ = np.asarray(tensors["intercept"], dtype=np.float64)
            n_features = int(metadata["n_features"])
            expected_outputs = 1 if classifier.task_ == "binary" else len(classifier.classes_)
            if (classifier.coef_.shape != (expected_outputs, n_features)
                    or classifier.intercept_.shape != (expected_outputs,)):
                raise ValueError(f"weights of shape {classifier.coef_.shape} do not match the metadata "
                                 f"({expected_outputs} outputs, {n_features} features)")
            if not (np.isfinite(classifier.coef_).all() and np.isfinite(classifier.intercept_).all()):
                raise ValueError("its weights hold NaN or infinite values")
            classifier.C_ = float(metadata["C"])
            classifier.dev_scores_ = {float(c): float(score) for c, score in metadata.get("dev_scores", {}).items()}
            classifier.n_features_in_ = n_features
            classifier._set_units()
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise ClassifierFormatError(f"{directory}: a malformed saved classifier ({type(error).__name__}: "
                                        f"{error})") from None
        return classifier, metadata


# classifier.json's fields and the JSON types they may hold (None: may be absent or null); checked before use, so a
# file written by anyone else is refused in one line naming the field instead of failing deep inside.
_METADATA_TYPES = {
    "task": (str,), "classes": (list,), "n_features": (int,), "C": (int, float), "params": (dict, None),
    "dev_scores": (dict, None), "model": (str, None), "featurizer": (dict, None), "label_names": (list, None),
    "model_config": (dict, None),
}


def _check_metadata(metadata: dict, path: str) -> None:
    for key, kinds in _METADATA_TYPES.items():
        value = metadata.get(key)
        if value is None and None in kinds:
            continue
        if isinstance(value, bool) or not isinstance(value, tuple(kind for kind in kinds if kind is not None)):
            wanted = " or ".join({str: "a string", list: "a list", int: "an integer", float: "a number",
                                  dict: "an object", None: "null"}[kind] for kind in kinds)
            raise ClassifierFormatError(f"{path}: {key!r} must be {wanted}; got {type(value).__name__} "
                                        f"{value!r:.60}")
    for key in ("classes", "label_names"):
        values = metadata.get(key) or []
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            raise ClassifierFormatError(f"{path}: {key!r} must list strings or numbers")
        if len(set(map(str, values))) != len(values):
            raise ClassifierFormatError(f"{path}: {key!r} lists a name twice")
    if metadata["n_features"] < 1:
        raise ClassifierFormatError(f"{path}: 'n_features' must be at least 1; got {metadata['n_features']}")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def fit_on_units(X_train, y_train, X_dev, y_dev, units, **params) -> SparseLogisticClassifier:
    """A classifier restricted to ``units`` (columns), C swept on dev as for the full one."""
    units = np.asarray(units)
    X_dev = None if X_dev is None else np.asarray(X_dev)[:, units]
    return SparseLogisticClassifier(**params).fit(np.asarray(X_train)[:, units], y_train, X_dev, y_dev)


__all__ = ["ClassifierFormatError", "ClassifierNotFoundError", "DEFAULT_CS", "SparseLogisticClassifier", "fit_on_units"]
