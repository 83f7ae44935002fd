"""Sequence classification for every family (one preset each, at its registry's tiny test size): the head on a pooled
state, its losses, padding and chunking exactness, loading from a causal LM's checkpoint, saving, serving."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

import bytezoo
from zoo_presets import one_preset_per_family
from bytezoo.zoo import ByteTokenizer, CheckpointError
from bytezoo.zoo.recurrent_lm import RecurrentForSequenceClassification, supported_poolings


ONE_PER_FAMILY = one_preset_per_family()


def classifier_class(language_model) -> type:
    """The family's ``*ForSequenceClassification``, found through the Auto class it registered with."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(language_model.config)]


def poolings(language_model) -> list[str]:
    return list(supported_poolings(language_model))


def make_classifier(tiny_model, name: str, **config):
    language_model = tiny_model(name, num_layers=2)
    cls = classifier_class(language_model)
    overrides = {k: config.pop(k) for k in list(config) if k in ("classifier_pooling", "classifier_dropout")}
    lm_config = language_model.config.to_dict()
    if "num_labels" in config and "id2label" not in config:  # the LM's default two-label map would contradict it
        del lm_config["id2label"], lm_config["label2id"]
    lm_config.update(overrides)
    lm_config.update(config)
    model_config = type(language_model.config).from_dict(lm_config)
    return cls(model_config).eval()


def family_cases():
    cases = []
    for name in ONE_PER_FAMILY:
        with torch.device("meta"):
            model = bytezoo.create_model(name, **bytezoo.get_model_info(name).test_overrides)
        cases += [(name, pooling) for pooling in poolings(model)]
    return cases


FAMILY_POOLINGS = family_cases()


def texts_batch(lengths, side="right", width=None):
    """Random byte texts of ``lengths`` padded to ``width`` with the tokenizer's <pad> id (never looked up)."""
    texts = [torch.randint(0, 256, (n,)) for n in lengths]
    width = width or max(lengths)
    ids = torch.full((len(texts), width), 256)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for row, text in enumerate(texts):
        span = slice(width - len(text), width) if side == "left" else slice(0, len(text))
        ids[row, span], mask[row, span] = text, 1
    return texts, ids, mask


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_registered_with_the_auto_class_and_default_pooling(name, tiny_model):
    model = make_classifier(tiny_model, name, num_labels=2)
    # the family's copy of the contract (each folder carries one): the class written once, by name
    assert RecurrentForSequenceClassification.__name__ in [c.__name__ for c in type(model).__mro__]
    assert type(model).__name__.endswith("ForSequenceClassification") and type(model).__module__ == type(model.model).__module__
    expected = "final_cell" if "cell" in model.unit_states else "final_hidden" if "hidden" in model.unit_states else "mean"
    assert model.config.classifier_pooling == expected  # resolved at construction, so saved explicitly


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_final_cell_without_a_cell_is_refused_in_one_line(name, tiny_model):
    language_model = tiny_model(name)
    if "cell" in language_model.model.unit_states:
        pytest.skip("this family has a cell")
    offered = ", ".join(supported_poolings(language_model))
    with pytest.raises(ValueError, match=rf"pooling 'final_cell' reads a per-unit cell state, which \w+ does not have; "
                                         rf"\w+ offers {offered} \(default \w+\)$") as error:
        make_classifier(tiny_model, name, classifier_pooling="final_cell")
    assert "\n" not in str(error.value) and isinstance(error.value, bytezoo.errors.ByteZooError)
    with pytest.raises(ValueError, match=rf"pooling 'max' is not a pooling mode \(final_cell, final_hidden, mean\); \w+ offers {offered}"):
        make_classifier(tiny_model, name, classifier_pooling="max")


@pytest.mark.parametrize("name, pooling", FAMILY_POOLINGS)
def test_shapes_and_the_standard_losses_of_the_three_problem_types(name, pooling, tiny_model):
    ids = torch.randint(0, 256, (4, 9))
    model = make_classifier(tiny_model, name, num_labels=3, classifier_pooling=pooling).train()
    labels = torch.tensor([0, 2, 1, 2])
    out = model(ids, labels=labels)
    assert out.logits.shape == (4, 3) and out.logits.dtype == torch.float32
    assert model.config.problem_type == "single_label_classification"  # inferred as transformers does
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    out.loss.backward()
    for param_name, param in model.named_parameters():  # the gradient reaches the head and every body weight
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{param_name} receives no gradient"
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\] but the head has num_labels=3"):
        model(ids, labels=torch.tensor([0, 3, 1, 2]))

    multi = make_classifier(tiny_model, name, num_labels=3, classifier_pooling=pooling,
                            problem_type="multi_label_classification")
    targets = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    out = multi(ids, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets.float()))

    regression = make_classifier(tiny_model, name, num_labels=1, classifier_pooling=pooling)
    values = torch.tensor([0.5, -1.0, 2.0, 0.0])
    out = regression(ids, labels=values)
    assert regression.config.problem_type == "regression" and out.logits.shape == (4, 1)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.view(-1), values))


@torch.no_grad()
@pytest.mark.parametrize("name, pooling", FAMILY_POOLINGS)
def test_a_text_alone_and_padded_in_a_batch_get_the_same_logits(name, pooling, tiny_model):
    model = make_classifier(tiny_model, name, num_labels=3, classifier_pooling=pooling)
    lengths = [5, 17, 11, 1]
    for side in ("left", "right"):
        texts, ids, mask = texts_batch(lengths, side, width=19)
        batched = model(ids, attention_mask=mask, chunk_size=4).logits  # chunk edges fall inside texts and padding
        for row, text in enumerate(texts):
            alone = model(text[None]).logits[0]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)
    # an empty text (what the tokenizer gives for ""): the initial state's features, alone or as a padding-only row
    empty = model(torch.zeros(1, 0, dtype=torch.long)).logits[0]
    ids = torch.cat([torch.full((1, 5), 256), torch.randint(0, 256, (1, 5))])  # a padding-only row beside a text
    padded = model(ids, attention_mask=torch.tensor([[0] * 5, [1] * 5])).logits[0]
    torch.testing.assert_close(empty, padded, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name, pooling", FAMILY_POOLINGS)
def test_reading_in_chunks_equals_reading_at_once_with_the_same_gradient(name, pooling, tiny_model):
    model = make_classifier(tiny_model, name, num_labels=2, classifier_pooling=pooling).train()  # dropout 0
    _, ids, mask = texts_batch([23, 9, 30], "left")
    labels = torch.tensor([1, 0, 1])

    def run(chunk_size):
        model.zero_grad()
        out = model(ids, attention_mask=mask, labels=labels, chunk_size=chunk_size)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    whole_logits, whole_grads = run(64)
    chunked_logits, chunked_grads = run(7)  # five chunks, each recomputed in the backward pass
    torch.testing.assert_close(chunked_logits, whole_logits, atol=1e-5, rtol=1e-5)
    for param_name in whole_grads:
        torch.testing.assert_close(chunked_grads[param_name], whole_grads[param_name], atol=1e-5, rtol=1e-4, msg=param_name)


@pytest.fixture
def causal_lm_checkpoint(tiny_model, tmp_path):
    def save(name):
        language_model = tiny_model(name, num_layers=2)
        path = tmp_path / f"lm-{name}"
        language_model.save_pretrained(path)
        ByteTokenizer().save_pretrained(path)
        return language_model, path

    return save


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_loading_a_causal_lm_checkpoint_loads_the_body_and_a_fresh_head(name, causal_lm_checkpoint):
    language_model, path = causal_lm_checkpoint(name)
    model, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3, output_loading_info=True)
    assert type(model) is classifier_class(language_model) and model.config.num_labels == 3
    assert info["missing_keys"] == {"score.weight", "score.bias"}  # initialised fresh, and reported so
    assert info["unexpected_keys"] == {"lm_head.weight", "lm_head.bias"}  # the LM head, not used
    assert not info["mismatched_keys"]
    body = language_model.model.state_dict()
    loaded = model.model.state_dict()
    assert body.keys() == loaded.keys()
    for key in body:
        assert torch.equal(loaded[key], body[key]), key  # every body weight is the checkpoint's
    assert torch.isfinite(model.score.weight).all() and model.score.weight.abs().sum() > 0
    # the class itself, with num_labels, loads the same way
    direct = type(model).from_pretrained(path, num_labels=2, classifier_dropout=0.1)
    assert direct.config.num_labels == 2 and direct.dropout.p == 0.1
    assert torch.equal(direct.model.state_dict()[next(iter(body))], body[next(iter(body))])


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_a_checkpoint_of_another_family_or_size_or_with_part_of_the_head_is_refused(name, causal_lm_checkpoint, tiny_model, tmp_path):
    language_model, path = causal_lm_checkpoint(name)
    cls = classifier_class(language_model)
    other = next(n for n in ONE_PER_FAMILY if n != name)
    _, other_path = causal_lm_checkpoint(other)
    other_type = json.loads((other_path / "config.json").read_text())["model_type"]
    with pytest.raises(CheckpointError, match=rf"config.json: a '{other_type}' checkpoint, not '{language_model.config.model_type}'") as error:
        cls.from_pretrained(other_path, num_labels=2)
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="does not match the weights"):
        cls.from_pretrained(path, num_labels=2, hidden_size=2 * language_model.config.hidden_size)

    classifier = make_classifier(tiny_model, name, num_labels=2)
    saved = tmp_path / "classifier"
    classifier.save_pretrained(saved)
    weights = load_file(str(saved / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "score.bias"}, str(saved / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing weights \['score.bias'\]"):  # half a head: never random
        AutoModelForSequenceClassification.from_pretrained(saved)
    save_file({k: v for k, v in weights.items() if not k.startswith("score.")}, str(saved / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing weights \['score.bias', 'score.weight'\]"):  # a classifier's own
        AutoModelForSequenceClassification.from_pretrained(saved)                                   # checkpoint, headless
    with pytest.raises(CheckpointError, match=r"does not match the weights: score.weight \[2, \d+\] in the file, \[3, "):
        save_file(weights, str(saved / "model.safetensors"), metadata={"format": "pt"})
        AutoModelForSequenceClassification.from_pretrained(saved, num_labels=3)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_save_and_load_round_trip(name, tiny_model, tmp_path):
    model = make_classifier(tiny_model, name, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"},
                            label2id={"neg": 0, "neu": 1, "pos": 2})
    model.save_pretrained(tmp_path)
    ByteTokenizer().save_pretrained(tmp_path)
    _, ids, mask = texts_batch([7, 12], "left")
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        for loader in (AutoModelForSequenceClassification.from_pretrained, bytezoo.from_pretrained):
            loaded, info = loader(tmp_path, output_loading_info=True)
            assert type(loaded) is type(model) and not info["missing_keys"] and not info["unexpected_keys"]
            assert loaded.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
            assert loaded.config.classifier_pooling == model.config.classifier_pooling
            torch.testing.assert_close(loaded.eval()(ids, attention_mask=mask).logits, expected, atol=0, rtol=0)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith(type(model).__name__)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_transformers_pipeline_serves_a_saved_classifier(name, tiny_model, tmp_path):
    from transformers import pipeline

    model = make_classifier(tiny_model, name, num_labels=2, id2label={0: "negative", 1: "positive"},
                            label2id={"negative": 0, "positive": 1})
    model.save_pretrained(tmp_path)
    ByteTokenizer().save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path), device="cpu")
    texts = ["a fine film", "dull, dull, dull and long"]
    results = classify(texts, top_k=None)
    tokenizer = ByteTokenizer()
    with torch.no_grad():
        for text, result in zip(texts, results):
            probabilities = model(torch.tensor([tokenizer(text)["input_ids"]])).logits.softmax(-1)[0]
            scores = {r["label"]: r["score"] for r in result}
            assert set(scores) == {"negative", "positive"}
            assert scores["positive"] == pytest.approx(float(probabilities[1]), abs=1e-5)
        batched = classify(texts, batch_size=2, top_k=None)  # padded together: the same scores
        for alone, together in zip(results, batched):
            assert {r["label"]: pytest.approx(r["score"], abs=1e-5) for r in alone} == {r["label"]: r["score"] for r in together}


def test_classifiers_load_and_serve_with_remote_code_without_bytezoo(tiny_model, tmp_path):
    folders = {}
    tokenizer = ByteTokenizer()
    ids = torch.tensor([tokenizer("héllo wörld")["input_ids"]])
    for name in ONE_PER_FAMILY:
        model = make_classifier(tiny_model, name, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1})
        folder = tmp_path / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        with torch.no_grad():
            torch.save(model(ids).logits, folder / "expected.pt")
        folders[name] = str(folder)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["bytezoo"] = None  # transformers installed, bytezoo not
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
        for name, path in {folders!r}.items():
            model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
            assert "transformers_modules" in type(model).__module__, type(model).__module__
            ids = AutoTokenizer.from_pretrained(path, trust_remote_code=True)("héllo wörld", return_tensors="pt").input_ids
            with torch.no_grad():
                torch.testing.assert_close(model(ids).logits, torch.load(path + "/expected.pt"), atol=1e-6, rtol=1e-6)
            result = pipeline("text-classification", model=path, trust_remote_code=True)("héllo wörld")
            assert result[0]["label"] in ("no", "yes"), result
        print("remote code OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def test_transformers_trainer_fine_tunes_a_classifier_unchanged(tiny_model, causal_lm_checkpoint, tmp_path):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    _, path = causal_lm_checkpoint("mlstm-256")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tokenizer = ByteTokenizer()
    texts = ["good", "great fun", "bad", "awful and dull", "good good", "bad bad bad"] * 4
    rows = [{**tokenizer(text), "labels": int("bad" in text or "awful" in text)} for text in texts]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    arguments = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, max_steps=4,
                                  learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,
                                  disable_tqdm=True, per_device_eval_batch_size=8)
    trainer = Trainer(model=model, args=arguments, train_dataset=rows, eval_dataset=rows,
                      data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    assert result.global_step == 4 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "score.weight" in changed and any(n.startswith("model.") for n in changed)
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))
    predictions = trainer.predict(rows)
    assert predictions.predictions.shape == (len(rows), 2)
