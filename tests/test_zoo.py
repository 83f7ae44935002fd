"""The zoo: every registered model (parametrised over ``list_models()``) against the contract users rely on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

import bytezoo
from zoo_presets import assert_batched_generation_equals_one_at_a_time, one_preset_per_family
from bytezoo.zoo import CheckpointError, ByteTokenizer
from bytezoo.zoo.recurrent_lm import state_part

ALL_MODELS = bytezoo.list_models()
MLSTM_MODELS = bytezoo.list_models("mlstm-*")


def random_bytes(batch: int, steps: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, steps))


@pytest.fixture(params=ALL_MODELS)
def model(request, tiny_model):
    return tiny_model(request.param, num_layers=2)


def test_registry_lists_the_papers_presets():
    for name in ("mlstm-256", "mlstm-1024", "mlstm-4096", "mlstm-8192", "lstm-256", "lstm-1024", "lstm-4096"):
        assert name in ALL_MODELS
    assert bytezoo.list_models("lstm-*") == ["lstm-1024", "lstm-256", "lstm-4096"]
    info = bytezoo.get_model_info("mlstm-4096")
    assert "Radford" in info.paper and info.license == "MIT"  # metadata lives apart from the architecture
    with pytest.raises(KeyError, match="did you mean mlstm-4096"):
        bytezoo.create_model("mlstm-4069")


@pytest.mark.parametrize(
    "name, hidden, params",
    [
        # embedding 256×64 + W_x 64×4H + W_h H×4H + W_mx 64×H + W_mh H×H + b 4H + gains (4H+4H+H+H) + head H×256+256
        ("mlstm-4096", 4096, 256 * 64 + 64 * 4 * 4096 + 4096 * 4 * 4096 + 64 * 4096 + 4096**2 + 4 * 4096 + 10 * 4096 + 4096 * 256 + 256),
        ("mlstm-8192", 8192, 256 * 64 + 64 * 4 * 8192 + 8192 * 4 * 8192 + 64 * 8192 + 8192**2 + 4 * 8192 + 10 * 8192 + 8192 * 256 + 256),
        # nn.LSTM: W_ih 4H×64 + W_hh 4H×H + two biases 4H
        ("lstm-4096", 4096, 256 * 64 + 4 * 4096 * 64 + 4 * 4096 * 4096 + 8 * 4096 + 4096 * 256 + 256),
    ],
)
def test_full_size_presets_have_the_papers_shapes(name, hidden, params):
    with torch.device("meta"):  # shapes only: no memory, no time
        model = bytezoo.create_model(name)
    assert model.config.hidden_size == hidden and model.config.embedding_size == 64 and model.config.vocab_size == 256
    assert sum(p.numel() for p in model.parameters()) == params
    if name.startswith("mlstm"):
        assert model.config.weight_norm
        names = {n for n, _ in model.named_parameters()}
        assert "model.layers.0.g_mh" in names  # weight norm on the recurrent layer ...
        assert not any(n.startswith(("model.embeddings", "lm_head")) and ".g" in n for n in names)  # ... only


def test_forward_backward_and_shapes(model):
    ids = random_bytes(3, 7)
    has_cell = "cell" in model.state_names
    out = model(ids, labels=ids, output_hidden_states=True, output_cell_states=has_cell)
    hidden, layers = model.config.hidden_size, model.config.num_layers
    assert out.logits.shape == (3, 7, 256)
    assert len(out.state) == len(model.state_names) == len(model.model.state_shapes(3))
    assert all(part.shape[1] == 3 for part in out.state), "dim 1 of every state part is the batch"
    assert len(out.hidden_states) == layers and all(h.shape == (3, 7, hidden) for h in out.hidden_states)
    # the per-unit state parts are (layers, B, H), and their last step is what the per-layer sequences end with
    sequences = {"hidden": out.hidden_states, "cell": out.cell_states}
    for name in model.unit_states:
        part = state_part(model, out.state, name)
        assert part.shape == (layers, 3, hidden)
        for layer in range(layers):
            torch.testing.assert_close(sequences[name][layer][:, -1], part[layer])
    if has_cell:
        assert len(out.cell_states) == layers and all(c.shape == (3, 7, hidden) for c in out.cell_states)
    else:
        with pytest.raises(ValueError, match="has no cell state"):
            model(ids, output_cell_states=True)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} receives no gradient"


def test_loss_is_next_byte_cross_entropy(model):
    ids = random_bytes(2, 9)
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    aligned = model(ids[:, :-1], shift_labels=ids[:, 1:])  # truncated-backprop windows pass aligned targets
    torch.testing.assert_close(aligned.loss, expected)


@torch.no_grad()
def test_chunked_text_with_carried_state_equals_one_call(model):
    ids = random_bytes(2, 23)
    whole = model(ids)
    cuts = sorted(torch.randperm(21)[:3].add(1).tolist())
    state, logits = None, []
    for start, end in zip([0, *cuts], [*cuts, 23]):
        part = model(ids[:, start:end], state=state)
        state = part.state
        logits.append(part.logits)
    torch.testing.assert_close(torch.cat(logits, dim=1), whole.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state, whole.state, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_holds_the_state(model):
    """A text's state is as good alone as left- or right-padded in a batch: what follows reads the same, and the
    per-unit state parts are equal."""
    texts = [random_bytes(1, n)[0] for n in (5, 11, 8)]
    follow = random_bytes(1, 6)
    alone = [model(t[None]).state for t in texts]
    after_alone = [model(follow, state=state).logits for state in alone]
    width = 13
    for side in ("left", "right"):
        ids = torch.full((3, width), 256)  # the tokenizer's <pad> id: never looked up
        mask = torch.zeros(3, width, dtype=torch.long)
        for row, text in enumerate(texts):
            span = slice(width - len(text), width) if side == "left" else slice(0, len(text))
            ids[row, span], mask[row, span] = text, 1
        batched = model(ids, attention_mask=mask).state
        after_batched = model(follow.expand(3, -1), state=batched).logits
        for row in range(3):
            torch.testing.assert_close(after_batched[row], after_alone[row][0], atol=1e-5, rtol=1e-5)
            for name in model.unit_states:
                torch.testing.assert_close(state_part(model, batched, name)[:, row],
                                           state_part(model, alone[row], name)[:, 0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_reset_mask_restarts_the_state(model):
    ids = random_bytes(2, 12)
    reset = torch.zeros(2, 12, dtype=torch.bool)
    reset[0, 5] = True  # a document boundary in row 0 only
    out = model(ids, reset_mask=reset)
    fresh = model(ids[:1, 5:])
    torch.testing.assert_close(out.logits[:1, 5:], fresh.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits[1:], model(ids[1:]).logits, atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_named(model):
    with pytest.raises(ValueError, match="outside"):
        model(torch.tensor([[1, 2, 300]]))
    with pytest.raises(ValueError, match="T = 0"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="state must be"):
        model(random_bytes(2, 3), state=(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3)))
    with pytest.raises(ValueError, match="attention_mask"):
        model(random_bytes(2, 3), attention_mask=torch.ones(2, 4))


@torch.no_grad()
def test_generate_greedy_sampling_and_beam(model):
    prompt = random_bytes(2, 6)
    greedy = model.generate(prompt, max_new_tokens=7, do_sample=False)
    assert greedy.shape == (2, 13) and torch.equal(greedy[:, :6], prompt)
    # greedy decoding equals the argmax recomputed from scratch over the whole text at every step
    text = prompt
    for _ in range(7):
        next_byte = model(text).logits[:, -1].argmax(-1, keepdim=True)
        text = torch.cat([text, next_byte], dim=1)
    assert torch.equal(greedy, text)
    sampled = model.generate(prompt, max_new_tokens=5, do_sample=True, top_k=10, temperature=0.8)
    assert sampled.shape == (2, 11)
    beams = model.generate(prompt, max_new_tokens=5, num_beams=3, num_return_sequences=2)
    assert beams.shape == (4, 11)


@torch.no_grad()
def test_batched_generation_with_either_padding_side_equals_one_prompt_at_a_time(model):
    """Padding outputs the last real byte's output in every family (the Transformer's too), so a right-padded prompt's
    first generated byte is its own, and a batch generates what each prompt alone does, greedy and with beams."""
    lengths = (3, 9, 6)  # the tiny Transformer's window is 8 bytes: the longest prompt overflows it
    assert_batched_generation_equals_one_at_a_time(model, [random_bytes(1, n)[0].tolist() for n in lengths])


@torch.no_grad()
def test_generate_continues_from_a_carried_state(model):
    """generate(suffix, state=state after prefix) equals generate(prefix + suffix) from scratch."""
    text = random_bytes(1, 12)
    prefix_state = model(text[:, :8]).state
    from_state = model.generate(text[:, 8:], state=prefix_state, max_new_tokens=6, do_sample=False)
    from_scratch = model.generate(text, max_new_tokens=6, do_sample=False)
    assert torch.equal(from_state[:, 4:], from_scratch[:, 12:])
    beams_state = model.generate(text[:, 8:], state=prefix_state, max_new_tokens=4, num_beams=2, do_sample=False)
    beams_scratch = model.generate(text, max_new_tokens=4, num_beams=2, do_sample=False)
    assert torch.equal(beams_state[:, 4:], beams_scratch[:, 12:])


class ForwardLengths:
    """Records the number of positions of every forward through a model's recurrent body."""

    def __init__(self, model):
        self.lengths: list[int] = []
        self._handle = model.base_model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        self.lengths.append(ids.shape[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def generated_state(output):
    """The carried state in ``generate(..., return_dict_in_generate=True)``'s output, under either name: ``cache``
    from transformers 5.24, ``past_key_values`` before."""
    for name in ("cache", "past_key_values"):
        if getattr(output, name, None) is not None:
            return getattr(output, name)
    raise AssertionError(f"no state in {type(output).__name__}: {list(output.keys())}")


@torch.no_grad()
def test_decoding_feeds_one_byte_per_step_after_the_prefill(model):
    """The state replaces re-reading: from scratch and from a carried state, each step after the first reads one byte."""
    prompt = random_bytes(2, 6)
    with ForwardLengths(model) as calls:
        model.generate(prompt, max_new_tokens=5, do_sample=False)
    assert calls.lengths == [6, 1, 1, 1, 1]
    state = model(prompt).state
    with ForwardLengths(model) as calls:
        model.generate(random_bytes(2, 3), state=state, max_new_tokens=4, do_sample=True, top_k=5)
    assert calls.lengths == [3, 1, 1, 1]
    with ForwardLengths(model) as calls:
        model.generate(prompt, max_new_tokens=3, num_beams=2, do_sample=False)
    assert calls.lengths == [6, 1, 1]


@torch.no_grad()
def test_beam_search_with_the_state_equals_beam_search_without_it(model):
    prompt = random_bytes(2, 5)
    options = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False, output_scores=True,
                   return_dict_in_generate=True)
    cached = model.generate(prompt, **options)
    uncached = model.generate(prompt, use_cache=False, **options)
    assert cached.sequences.shape == (4, 11)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_seeded_sampling_from_a_carried_state_equals_sampling_from_scratch(model):
    text = random_bytes(2, 10)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    state = model(text[:, :7]).state
    torch.manual_seed(seed)
    from_state = model.generate(text[:, 7:], state=state, max_new_tokens=12, do_sample=True, temperature=1.3)
    torch.manual_seed(seed)
    from_scratch = model.generate(text, max_new_tokens=12, do_sample=True, temperature=1.3)
    assert torch.equal(from_state[:, 3:], from_scratch[:, 10:])


@torch.no_grad()
def test_generate_hands_back_the_final_state_to_continue_from(model):
    """The returned state covers every byte but the last one generated, like a KV cache: feeding that byte with it
    continues the text exactly."""
    prompt = random_bytes(2, 6)
    first = model.generate(prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    state = generated_state(first)
    expected = model(first.sequences[:, :-1]).state
    torch.testing.assert_close(tuple(state), tuple(expected), atol=1e-5, rtol=1e-5)
    more = model.generate(first.sequences[:, -1:], state=tuple(state), max_new_tokens=5, do_sample=False)
    at_once = model.generate(prompt, max_new_tokens=9, do_sample=False)
    assert torch.equal(torch.cat([first.sequences, more[:, 1:]], dim=1), at_once)


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    ByteTokenizer().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    ids = random_bytes(2, 9)
    with torch.no_grad():
        expected = model(ids).logits
        for loader in (AutoModelForCausalLM.from_pretrained, bytezoo.from_pretrained):
            loaded = loader(tmp_path).eval()
            assert type(loaded) is type(model)
            torch.testing.assert_close(loaded(ids).logits, expected, atol=0, rtol=0)
        base = AutoModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(base(ids).last_hidden_state, model.model(ids).last_hidden_state, atol=0, rtol=0)
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), ByteTokenizer)


ONE_PER_FAMILY = one_preset_per_family()


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_checkpoint_loads_with_remote_code_without_bytezoo(name, tiny_model, tmp_path):
    model = tiny_model(name, num_layers=2)
    model.save_pretrained(tmp_path)
    ByteTokenizer().save_pretrained(tmp_path)
    ids = torch.tensor([list("héllo wörld".encode())])
    with torch.no_grad():
        torch.save(model(ids).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["bytezoo"] = None  # an environment where transformers is installed but bytezoo is not
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
        path = {str(tmp_path)!r}
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        ids = tokenizer("héllo wörld", return_tensors="pt").input_ids
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, torch.load(path + "/expected.pt"), atol=1e-6, rtol=1e-6)
            out = model.generate(ids, max_new_tokens=4, do_sample=False)
        assert out.shape == (1, ids.shape[1] + 4)
        assert "transformers_modules" in type(AutoModel.from_pretrained(path, trust_remote_code=True)).__module__
        print("remote code OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


class TestBadCheckpoints:
    @pytest.fixture
    def checkpoint(self, tiny_model, tmp_path):
        tiny_model("mlstm-256").save_pretrained(tmp_path)
        return tmp_path

    def test_missing_weights(self, checkpoint):
        (checkpoint / "model.safetensors").unlink()
        with pytest.raises(CheckpointError, match="model.safetensors: missing"):
            AutoModelForCausalLM.from_pretrained(checkpoint)

    @pytest.mark.parametrize("damage", ["truncate", "garble"])
    def test_truncated_or_corrupt_weights(self, checkpoint, damage):
        path = checkpoint / "model.safetensors"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 7] if damage == "truncate" else b"\x00" * 8 + data[8:])
        with pytest.raises(CheckpointError, match="model.safetensors: truncated or corrupt"):
            bytezoo.from_pretrained(checkpoint)

    def test_unknown_model_type(self, checkpoint):
        config = json.loads((checkpoint / "config.json").read_text())
        config["model_type"] = "gpt7"
        (checkpoint / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match="config.json: unknown model_type 'gpt7'"):
            bytezoo.from_pretrained(checkpoint)

    def test_config_that_does_not_match_the_weights(self, checkpoint):
        config = json.loads((checkpoint / "config.json").read_text())
        config["num_layers"] = 2  # the weights hold one layer: never random-initialise the second
        (checkpoint / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match=r"missing weights \['model.layers.1"):
            AutoModelForCausalLM.from_pretrained(checkpoint)
        config["num_layers"], config["hidden_size"] = 1, 48
        (checkpoint / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match=r"config.json: the config does not match the weights: "
                                                  r"model.layers.0.w_x \[\d+, \d+\] in the file, \[\d+, 192\] by the config"):
            bytezoo.from_pretrained(checkpoint)

    def test_a_config_claiming_a_huge_model_is_refused_before_anything_is_allocated(self, checkpoint):
        """hidden_size = 2**20 next to tiny weights would allocate terabytes before transformers noticed: the shapes
        are compared on the meta device first (a fuzzing finding: inputs took seconds and gigabytes)."""
        import resource

        config = json.loads((checkpoint / "config.json").read_text())
        config["hidden_size"] = 1 << 20
        (checkpoint / "config.json").write_text(json.dumps(config))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(CheckpointError, match=r"does not match the weights: .*1048576"):
            bytezoo.from_pretrained(checkpoint)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: well under 0.5 GB

    def test_not_a_checkpoint(self, tmp_path):
        with pytest.raises(CheckpointError, match="config.json: missing"):
            bytezoo.from_pretrained(tmp_path)


def test_a_user_registered_model_is_covered(tiny_model):
    """One decorator adds an architecture; everything parametrised over list_models() then tests it."""
    from bytezoo.zoo import MLSTMConfig, MLSTMForCausalLM
    from bytezoo.zoo.registry import _REGISTRY

    @bytezoo.register_model(test_overrides={"hidden_size": 8})
    def my_wide_mlstm(**overrides):
        """A user's preset."""
        return MLSTMForCausalLM(MLSTMConfig(**{"hidden_size": 2048, "embedding_size": 16, **overrides}))

    try:
        assert "my-wide-mlstm" in bytezoo.list_models()
        assert tiny_model("my-wide-mlstm").config.hidden_size == 8
        with pytest.raises(ValueError, match="already registered"):
            bytezoo.register_model(my_wide_mlstm)
    finally:
        del _REGISTRY["my-wide-mlstm"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_config_typos_and_wrong_types_are_refused_by_name(name, tiny_model, tmp_path):
    from bytezoo.zoo.configuration_utils import ConfigError

    config_name = type(tiny_model(name).config).__name__
    with pytest.raises(ConfigError, match=rf"unknown key 'hidden_sise' for {config_name}; did you mean 'hidden_size'\? "
                                          r"valid keys: vocab_size, "):
        bytezoo.create_model(name, hidden_sise=64)
    with pytest.raises(ConfigError, match=rf"'hidden_size' of {config_name} expects int; got 'abc' \(str\)"):
        bytezoo.create_model(name, hidden_size="abc")
    with pytest.raises(ConfigError, match=r"'num_layers' of .* expects int; got True \(bool\)"):
        bytezoo.create_model(name, num_layers=True)
    tiny_model(name).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"from_pretrained\(.*\): unknown key 'num_layer' .*did you mean 'num_layers'"):
        bytezoo.from_pretrained(tmp_path, num_layer=2)
    with pytest.raises(ConfigError, match=r"unknown key 'num_layer' .*did you mean 'num_layers'"):
        AutoModelForCausalLM.from_pretrained(tmp_path, num_layer=2)
    with pytest.raises(ConfigError, match=r"'use_cache' of .* expects bool"):
        type(tiny_model(name)).from_pretrained(tmp_path, use_cache="no")
    loaded = bytezoo.from_pretrained(tmp_path, use_cache=False)  # a valid override still works
    assert loaded.config.use_cache is False


def test_mlstm_inference_cache_matches_and_follows_parameter_changes(tiny_model):
    """Without a graph, the mLSTM caches its weight-normed weights and first-layer tables between calls: same outputs
    as a forward that builds a graph, and a parameter change (in place, load_state_dict) is seen at the next call."""
    import torch

    model = tiny_model("mlstm-256", num_layers=2)
    ids = torch.randint(0, 256, (2, 7))
    with torch.enable_grad():
        expected = model(ids).logits.detach()
    with torch.no_grad():
        first = model(ids).logits
        again = model(ids).logits
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(again, expected)
    with torch.no_grad():
        model.model.layers[0].w_h.mul_(1.5)
        model.model.embeddings.weight.add_(0.1)
        changed = model(ids).logits
    with torch.enable_grad():
        torch.testing.assert_close(changed, model(ids).logits.detach())
    assert not torch.allclose(changed, expected)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v * 0.9 if v.is_floating_point() else v for k, v in state.items()})
    with torch.inference_mode():
        reloaded = model(ids).logits
    with torch.enable_grad():
        torch.testing.assert_close(reloaded, model(ids).logits.detach())
    # new parameter objects (assign=True): never matched, even were one to land at a freed parameter's address
    model.load_state_dict({k: v * 1.1 if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    with torch.no_grad():
        assigned = model(ids).logits
    with torch.enable_grad():
        torch.testing.assert_close(assigned, model(ids).logits.detach())
    model.train()
    assert all("_inference_cache" not in layer.__dict__ for layer in model.model.layers)
