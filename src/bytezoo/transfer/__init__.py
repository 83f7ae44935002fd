"""Transfer: features of a pretrained byte-level LM, sparse logistic-regression classifiers, the sentiment neuron.

>>> from bytezoo.transfer import Featurizer, SparseLogisticClassifier, SentimentPipeline
>>> from sklearn.pipeline import make_pipeline
>>> clf = make_pipeline(Featurizer("outputs/demo/model"), SparseLogisticClassifier())  # doctest: +SKIP
>>> pipe = SentimentPipeline.from_pretrained("outputs/sst")                             # doctest: +SKIP
>>> report = run_transfer(TransferConfig(model="m", train="t.csv", output="out"))       # doctest: +SKIP

The command line: ``bytezoo transfer`` (report, plots, classifier), ``bytezoo classify``, ``bytezoo generate``.
"""
import lazy_loader as _lazy

# Lazy: `bytezoo transfer --help` must not import scikit-learn, matplotlib and torch.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "classifier": ["ClassifierFormatError", "ClassifierNotFoundError", "DEFAULT_CS", "SparseLogisticClassifier"],
        "config": ["TransferConfig"],
        "experiment": ["run_transfer"],
        "featurizer": ["Featurizer", "preprocess_openai"],
        "generation": ["Generation", "generate_steered"],
        "metrics": ["SingleClassError"],
        "neuron": ["UnitTrace", "unit_trace"],
        "pipeline": ["SentimentPipeline"],
    },
)
