"""transformers' own common tests against every zoo family, set up the way transformers' RWKV and Mamba test files do:
``ModelTesterMixin`` (from the installed transformers' sdist, :mod:`hf_common_tests`), a ``GenerationTesterMixin`` (ours,
:mod:`hf_generation_mixin`: the sdist does not ship transformers'), and ``ConfigTester``.

One ``unittest.TestCase`` per family (one preset per config class), built from the preset's tiny test size. Each skip
says, beside it, why bytezoo differs on purpose. The families' classes are entered into transformers' own name tables
(``MODEL_MAPPING_NAMES``, ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``, ...) while the tests run: the mixin decides by those
tables whether a class gets labels, is a base model or a head, and without them about 49 tests per family would pass
without checking anything.

How many passes check something: ``BYTEZOO_COUNT_ASSERTIONS=counts.jsonl pytest tests/test_zoo_transformers_common.py
-n 0 --junitxml=results.xml`` writes, per test, the assertions it ran (unittest's ``assert*`` methods,
``torch.testing.assert_close``, numpy's ``assert_*`` and every plain ``assert`` statement executed in the mixins' files).
"""
from __future__ import annotations

import ast
import json
import os
import sys
import unittest
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

import bytezoo
from hf_common_tests import common_tests
from hf_generation_mixin import GenerationTesterMixin
from zoo_presets import one_preset_per_family

modeling_common, configuration_common = common_tests()
ModelTesterMixin, ConfigTester = modeling_common.ModelTesterMixin, configuration_common.ConfigTester
ids_tensor, random_attention_mask = modeling_common.ids_tensor, modeling_common.random_attention_mask


def family_classes(config_class) -> dict[str, type]:
    """``{Auto class name: model class}`` of the family whose config is ``config_class``."""
    from bytezoo.zoo.auto import model_classes

    return {c._auto_class: c for c in model_classes() if c.config_class is config_class}


class FamilyModelTester:
    """What transformers' mixins ask of a model tester, for one family at its tiny size."""

    def __init__(self, parent, preset: str, batch_size: int = 3, seq_length: int = 7, is_training: bool = True):
        self.parent, self.preset = parent, preset
        self.batch_size, self.seq_length, self.is_training = batch_size, seq_length, is_training
        overrides = {**bytezoo.get_model_info(preset).test_overrides, "num_layers": 2}
        self.config_class = bytezoo.get_model_info(preset).resolved_config_class()
        self.config_kwargs = {**overrides, "hidden_size": 16}
        if "embedding_size" in self.config_kwargs:
            self.config_kwargs["embedding_size"] = 8
        config = self.get_config()
        self.vocab_size, self.hidden_size, self.num_hidden_layers = config.vocab_size, config.hidden_size, config.num_layers
        self.expected_num_hidden_layers = config.num_layers  # one output per layer; no embedding output in the tuple
        self.num_attention_heads = getattr(config, "num_heads", 1)
        self.num_labels = 2

    def get_config(self):
        return self.config_class(**self.config_kwargs)

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])  # padding anywhere: held positions
        return self.get_config(), input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


class _NameTables:
    """Enters a family's classes into transformers' name tables for the duration of a test class."""

    TABLES = {
        "AutoModel": "MODEL_MAPPING_NAMES",
        "AutoModelForCausalLM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    }

    @classmethod
    def patches(cls, config_class) -> list:
        from transformers.models.auto import modeling_auto

        return [mock.patch.dict(getattr(modeling_auto, cls.TABLES[auto]), {config_class.model_type: model.__name__})
                for auto, model in family_classes(config_class).items() if auto in cls.TABLES]


class CommonTests(ModelTesterMixin, GenerationTesterMixin):
    """The mixins' settings shared by every family (RWKV's and Mamba's, where they apply)."""

    preset: str
    has_attentions = False  # no attention weights to return: the state is recurrent (the Transformer's window too)
    test_missing_keys = False  # bytezoo refuses a checkpoint with missing weights (CheckpointError) on purpose
    test_resize_embeddings = False  # the vocabulary is the 256 byte values; a resized byte table has no meaning
    is_encoder_decoder = False

    @classmethod
    def setUpClass(cls):
        cls._patches = _NameTables.patches(bytezoo.get_model_info(cls.preset).resolved_config_class())
        for patch in cls._patches:
            patch.start()

    @classmethod
    def tearDownClass(cls):
        for patch in reversed(cls._patches):
            patch.stop()

    def setUp(self):
        self.model_tester = FamilyModelTester(self, self.preset)
        self.config_tester = ConfigTester(self, config_class=self.model_tester.config_class,
                                          common_properties=["hidden_size", "num_layers", "vocab_size"],
                                          **self.model_tester.config_kwargs)

    def test_config(self):
        self.config_tester.run_common_tests()

    # --- bytezoo's conventions, different on purpose ------------------------------------------------------------------
    @unittest.skip("a checkpoint that lacks weights the model needs is refused (CheckpointError), never completed with "
                   "random ones: a body's checkpoint cannot become a causal LM without its lm_head (only a classifier's "
                   "fresh `score` head is allowed)")
    def test_base_model_prefix_loads_base_weights(self):
        pass

    @unittest.skip("a checkpoint whose weights are all missing is refused (CheckpointError naming them), where "
                   "transformers loads it with every weight random and lists them in missing_keys")
    def test_model_weights_reload_no_missing_tied_weights(self):
        pass

    # --- what does not apply to a byte-level recurrent LM (these would pass having checked nothing) -----------------
    _NO_GRADIENT_CHECKPOINTING = ("supports_gradient_checkpointing = False: a recurrence over time is not a stack of "
                                  "GradientCheckpointingLayer; the sequence classifier recomputes its chunks itself")
    _NO_TIED_WEIGHTS = "no tied weights: the byte embedding (V x E) and the head (H x V) differ in shape"

    @unittest.skip(_NO_GRADIENT_CHECKPOINTING)
    def test_gradient_checkpointing_backward_compatibility(self):
        pass

    @unittest.skip(_NO_GRADIENT_CHECKPOINTING)
    def test_gradient_checkpointing_enable_disable(self):
        pass

    @unittest.skip(_NO_GRADIENT_CHECKPOINTING)
    def test_peft_gradient_checkpointing_enable_disable(self):
        pass

    @unittest.skip(_NO_GRADIENT_CHECKPOINTING)
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(_NO_GRADIENT_CHECKPOINTING)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(_NO_GRADIENT_CHECKPOINTING)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip(_NO_TIED_WEIGHTS)
    def test_tied_weights_keys(self):
        pass

    @unittest.skip(_NO_TIED_WEIGHTS)
    def test_tied_weights_are_sharded_together(self):
        pass

    @unittest.skip("no _keys_to_ignore_on_save: every weight is saved")
    def test_save_load_keys_to_ignore_on_save(self):
        pass

    @unittest.skip("no _can_record_outputs: the forward returns its hidden states itself, no hooks record them")
    def test_format_of_can_record_outputs(self):
        pass


def _skip_multimodal_feature_tests(cls) -> None:
    """The get_{text,image,audio,video}_features tests (several per modality, expanded by parameterized) are for
    multimodal models; a byte LM has none of these methods."""
    import re

    for name in dir(cls):
        if re.match(r"test_get_(text|image|audio|video)_features", name):
            setattr(cls, name, unittest.skip("a text-only byte LM: no get_{text,image,audio,video}_features of a "
                                             "multimodal model")(lambda self: None))


_skip_multimodal_feature_tests(CommonTests)


def _family_test_case(preset: str) -> type:
    classes = family_classes(bytezoo.get_model_info(preset).resolved_config_class())
    name = "Test" + classes["AutoModelForCausalLM"].__name__.replace("ForCausalLM", "") + "Common"
    return type(name, (CommonTests, unittest.TestCase), {
        "preset": preset,
        "all_model_classes": tuple(classes[a] for a in ("AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification") if a in classes),
        "all_generative_model_classes": (classes["AutoModelForCausalLM"],),
        "pipeline_model_mapping": {},
    })


for _preset in one_preset_per_family():
    _case = _family_test_case(_preset)
    globals()[_case.__name__] = _case
del _preset, _case


# --- measuring how many passes assert something (opt-in: BYTEZOO_COUNT_ASSERTIONS=FILE) -------------------------------
def _assert_lines(module_files) -> dict[str, set[int]]:
    """``{file: line numbers of its assert statements}``."""
    lines = {}
    for path in module_files:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        lines[path] = {node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)}
    return lines


@pytest.fixture(autouse=True)
def _count_assertions(request):
    target = os.environ.get("BYTEZOO_COUNT_ASSERTIONS")
    if not target:
        yield
        return
    import hf_export_mixin
    import hf_generation_mixin

    count = [0]
    watched = _assert_lines([modeling_common.__file__, configuration_common.__file__, hf_generation_mixin.__file__,
                             hf_export_mixin.__file__, __file__])

    def counting(function):
        def wrapper(*args, **kwargs):
            count[0] += 1
            return function(*args, **kwargs)
        return wrapper

    patches = [mock.patch.object(unittest.TestCase, name, counting(getattr(unittest.TestCase, name)))
               for name in dir(unittest.TestCase) if name.startswith("assert") and callable(getattr(unittest.TestCase, name))]
    patches.append(mock.patch.object(torch.testing, "assert_close", counting(torch.testing.assert_close)))
    patches += [mock.patch.object(np.testing, name, counting(getattr(np.testing, name)))
                for name in ("assert_allclose", "assert_array_equal", "assert_equal", "assert_array_almost_equal")]

    def local_trace(frame, event, arg):
        if event == "line" and frame.f_lineno in watched[frame.f_code.co_filename]:
            count[0] += 1
        return local_trace

    def global_trace(frame, event, arg):
        return local_trace if frame.f_code.co_filename in watched else None

    for patch in patches:
        patch.start()
    sys.settrace(global_trace)
    try:
        yield
    finally:
        sys.settrace(None)
        for patch in reversed(patches):
            patch.stop()
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"test": request.node.nodeid, "assertions": count[0]}) + "\n")
