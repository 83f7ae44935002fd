"""Each model file stands alone (transformers' one-file-per-model rule, needed for ``trust_remote_code``), so the
causal-LM plumbing is copied between the mLSTM and the LSTM. These copies must not drift apart."""
from __future__ import annotations

import ast
import inspect
import re
import textwrap

import pytest

from bytezoo.zoo.lstm.modeling_lstm import ByteLSTMForCausalLM
from bytezoo.zoo.mlstm.modeling_mlstm import MLSTMForCausalLM

COPIED_METHODS = [
    "__init__",
    "get_output_embeddings",
    "set_output_embeddings",
    "forward",
    "_supports_default_dynamic_cache",
    "prepare_inputs_for_generation",
    "_update_model_kwargs_for_generation",
    "_expand_inputs_for_generation",
    "_reorder_cache",
]


def normalised_body(cls: type, name: str) -> str:
    """The method's code as an AST dump: formatting, comments and docstrings ignored, model names unified."""
    source = textwrap.dedent(inspect.getsource(getattr(cls, name)))
    source = re.sub(r"\b(?:ByteLSTM|MLSTM|LSTM)(?=State|CausalLMOutput|Model|Config)", "Recurrent", source)
    function = ast.parse(source).body[0]
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring
    function.body = body
    return ast.dump(function, include_attributes=False)


@pytest.mark.parametrize("name", COPIED_METHODS)
def test_causal_lm_plumbing_is_identical_in_both_model_files(name):
    assert normalised_body(MLSTMForCausalLM, name) == normalised_body(ByteLSTMForCausalLM, name), (
        f"{name} differs between modeling_mlstm.py and modeling_lstm.py: change both"
    )
