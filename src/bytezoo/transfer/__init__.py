"""Transfer: features of a pretrained byte-level LM, sparse logistic-regression classifiers, the sentiment neuron.

>>> from bytezoo.transfer import Featurizer, SparseLogisticClassifier, SentimentPipeline
>>> from sklearn.pipeline import make_pipeline
>>> clf = make_pipeline(Featurizer("outputs/demo/model"), SparseLogisticClassifier())  # doctest: +SKIP
>>> pipe = SentimentPipeline.from_pretrained("outputs/sst")                             # doctest: +SKIP

The command line: ``bytezoo transfer`` (report, plots, classifier), ``bytezoo classify``, ``bytezoo generate``.
"""
from .classifier import DEFAULT_CS, SingleClassError, SparseLogisticClassifier
from .data import DatasetError, LabeledTexts, read_dataset
from .featurizer import Featurizer, preprocess_openai
from .generation import Generation, generate_steered
from .neuron import UnitTrace, unit_trace
from .pipeline import SentimentPipeline

__all__ = [
    "DEFAULT_CS",
    "DatasetError",
    "Featurizer",
    "Generation",
    "LabeledTexts",
    "SentimentPipeline",
    "SingleClassError",
    "SparseLogisticClassifier",
    "UnitTrace",
    "generate_steered",
    "preprocess_openai",
    "read_dataset",
    "unit_trace",
]
