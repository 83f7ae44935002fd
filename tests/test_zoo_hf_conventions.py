"""What Hugging Face users do with a model and bytezoo once got wrong (found by transformers' common tests,
tests/test_zoo_transformers_common.py): kept here as plain tests that need no download, every family."""
from __future__ import annotations

import importlib.util
import tempfile
import warnings

import pytest
import torch

import bytezoo
from bytezoo.zoo.auto import model_classes
from zoo_presets import one_preset_per_family

FAMILIES = one_preset_per_family()


def classes_of(model) -> dict[str, type]:
    return {c._auto_class: c for c in model_classes() if c.config_class is type(model.config)}


@pytest.fixture
def tiny(tiny_model):
    def build(name):
        return tiny_model(name, hidden_size=16, num_layers=2)
    return build


@pytest.mark.parametrize("name", FAMILIES)
def test_from_pretrained_takes_dtype_auto_and_torch_dtype(name, tiny, tmp_path):
    model = tiny(name).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, dtype="auto")  # the checkpoint's own dtype
    assert loaded.dtype == torch.bfloat16
    assert type(model).from_pretrained(tmp_path, torch_dtype="float32").dtype == torch.float32
    assert loaded.config.hidden_size == 16


@pytest.mark.parametrize("name", FAMILIES)
def test_from_pretrained_without_a_path_takes_config_and_state_dict(name, tiny):
    model = tiny(name)
    loaded = type(model).from_pretrained(None, config=model.config, state_dict=model.state_dict())
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_classifier_is_reheaded_with_another_label_count(name, tiny, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from bytezoo.zoo.modeling_utils import CheckpointError

    classifier_class = classes_of(tiny(name))["AutoModelForSequenceClassification"]
    classifier = classifier_class(tiny(name).config.__class__(**{**tiny(name).config.to_dict(), "num_labels": 2}))
    classifier.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError) as refused:  # what transformers raises, and code written for it catches
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert isinstance(refused.value, CheckpointError) and "ignore_mismatched_sizes=True" in str(refused.value)
    reheaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    ids = torch.randint(0, 256, (3, 9))
    assert reheaded(ids).logits.shape == (3, 5)
    for key, tensor in classifier.state_dict().items():  # the body is the fine-tuned one; only the head is new
        if not key.startswith("score."):
            torch.testing.assert_close(reheaded.state_dict()[key], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_hidden_states_with_padding_are_on_the_path_to_the_loss(name, tiny):
    model = tiny(name).train()
    ids = torch.randint(0, 256, (3, 10))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, 7:] = 0  # right padding
    out = model(ids, attention_mask=mask, labels=ids, output_hidden_states=True)
    assert len(out.hidden_states) == 2
    for hidden in out.hidden_states:
        hidden.retain_grad()
    out.loss.backward()
    assert out.hidden_states[0].grad is not None and out.hidden_states[0].grad.abs().sum() > 0
    assert out.hidden_states[-1].grad is not None  # the last layer's outputs feed the head
    with torch.no_grad():  # and they are the same numbers as without asking for them
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, out.logits)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_classifier_returns_hidden_states(name, tiny):
    lm = tiny(name)
    classifier = classes_of(lm)["AutoModelForSequenceClassification"](lm.config)
    ids = torch.randint(0, 256, (2, 12))
    out = classifier(ids, output_hidden_states=True, chunk_size=5)  # three chunks, joined in time
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 12, 16)] * 2
    torch.testing.assert_close(out.hidden_states[-1], classifier.model(ids, output_hidden_states=True).hidden_states[-1])
    assert classifier(ids).hidden_states is None


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_honours_reset_mask(name, use_cache, tiny):
    """A reset in the prompt starts a document there: generation then equals generating from that document alone."""
    model = tiny(name)
    prompt = torch.randint(0, 256, (2, 9))
    reset = torch.zeros_like(prompt, dtype=torch.bool)
    reset[:, 5] = True
    options = {"max_new_tokens": 6, "do_sample": False, "use_cache": use_cache, "pad_token_id": 0,
               "output_scores": True, "return_dict_in_generate": True}
    with_reset = model.generate(prompt, reset_mask=reset, **options)
    alone = model.generate(prompt[:, 5:], **options)
    torch.testing.assert_close(with_reset.sequences[:, 5:], alone.sequences, rtol=0, atol=0)
    torch.testing.assert_close(torch.stack(with_reset.scores), torch.stack(alone.scores))
    unreset = model.generate(prompt, **options)  # the reset did change what the model read
    assert not torch.allclose(unreset.scores[0], with_reset.scores[0])


@pytest.mark.parametrize("name", FAMILIES)
def test_export_for_inference_with_torch_export_and_onnx(name, tiny):
    """The causal LM (the body inside it) and the sequence classifier through torch.export as for inference (no grad,
    padding in the batch), then the causal LM's program through ONNX and onnxruntime where those packages are
    installed (the test extra). An exported graph has fixed shapes: the recurrence over T steps is unrolled."""
    model = tiny(name)
    ids, other = torch.randint(0, 256, (3, 7)), torch.randint(0, 256, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding: the held positions are part of the graph
    classifier = classes_of(model)["AutoModelForSequenceClassification"](model.config).eval()
    with torch.no_grad():
        program = torch.export.export(model, (ids,), kwargs={"attention_mask": mask}, strict=False)
        exported_classifier = torch.export.export(classifier, (ids,), kwargs={"attention_mask": mask}, strict=False)
        for inputs in (ids, other):  # the graph is not specialised to the values it was traced with
            torch.testing.assert_close(program.module()(inputs, attention_mask=mask).logits,
                                       model(inputs, attention_mask=mask).logits)
        torch.testing.assert_close(exported_classifier.module()(other, attention_mask=mask).logits,
                                   classifier(other, attention_mask=mask).logits)
    missing = [package for package in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(package) is None]
    if missing:
        pytest.skip(f"torch.export checked; ONNX needs {', '.join(missing)} (pip install bytezoo[test])")
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own passes
        torch.onnx.export(program, dynamo=True, verbose=False).save(f"{folder}/model.onnx")
        session = onnxruntime.InferenceSession(f"{folder}/model.onnx")
    assert [value.name for value in session.get_inputs()] == ["input_ids", "attention_mask"]
    logits = session.run(None, {"input_ids": other.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(other, attention_mask=mask).logits)
