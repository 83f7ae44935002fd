"""The generation half of transformers' common tests, for a decoder-only model whose cache is a recurrent state.

transformers' own ``GenerationTesterMixin`` lives in ``tests/generation/test_utils.py`` of its git repository, which
neither its sdist nor its wheel ships (hf_common_tests.py); ``test_modeling_common.py`` imports it, and its
``test_generation_tester_mixin_inheritance`` asserts that a generative model's tester inherits it. This is bytezoo's
own, written against the public ``generate()`` API, with the checks RWKV's and Mamba's test files rely on: every
decoding strategy gives the same answer with the state carried (one byte per step after the prefill) as without it,
left padding changes nothing, a prompt continued from a saved state equals the whole prompt, and the dict outputs have
the shapes the API promises.
"""
from __future__ import annotations

import torch


class GenerationTesterMixin:
    all_generative_model_classes = ()
    max_new_tokens = 4

    def _generation_inputs(self, batch_size: int = 2):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        input_ids = inputs["input_ids"][:batch_size]
        return config, input_ids, torch.ones_like(input_ids)

    def _generate(self, model, input_ids, attention_mask, **options):
        options = {"max_new_tokens": self.max_new_tokens, "pad_token_id": 0, "do_sample": False, **options}
        return model.generate(input_ids, attention_mask=attention_mask, **options)

    def _models(self):
        config, input_ids, mask = self._generation_inputs()
        for model_class in self.all_generative_model_classes:
            yield model_class(config).eval(), input_ids, mask

    def test_greedy_generate_with_and_without_state(self):
        for model, ids, mask in self._models():
            options = {"output_scores": True, "return_dict_in_generate": True}
            carried = self._generate(model, ids, mask, use_cache=True, **options)
            rerun = self._generate(model, ids, mask, use_cache=False, **options)
            self.assertEqual(carried.sequences.shape, (ids.shape[0], ids.shape[1] + self.max_new_tokens))
            torch.testing.assert_close(carried.sequences, rerun.sequences, rtol=0, atol=0)
            torch.testing.assert_close(torch.stack(carried.scores), torch.stack(rerun.scores))

    def test_one_byte_per_step_after_the_prefill(self):
        for model, ids, mask in self._models():
            lengths = []
            hook = model.model.register_forward_pre_hook(lambda _m, args, kwargs: lengths.append(
                (args[0] if args else kwargs["input_ids"]).shape[1]), with_kwargs=True)
            try:
                self._generate(model, ids, mask)
            finally:
                hook.remove()
            self.assertEqual(lengths, [ids.shape[1]] + [1] * (self.max_new_tokens - 1))

    def test_sample_generate(self):
        for model, ids, mask in self._models():
            torch.manual_seed(0)
            first = self._generate(model, ids, mask, do_sample=True, top_k=10, num_return_sequences=2)
            torch.manual_seed(0)
            again = self._generate(model, ids, mask, do_sample=True, top_k=10, num_return_sequences=2, use_cache=False)
            self.assertEqual(first.shape, (2 * ids.shape[0], ids.shape[1] + self.max_new_tokens))
            torch.testing.assert_close(first, again, rtol=0, atol=0)
            torch.testing.assert_close(first[::2, : ids.shape[1]], ids, rtol=0, atol=0)

    def test_beam_search_with_and_without_state(self):
        for model, ids, mask in self._models():
            options = {"num_beams": 3, "num_return_sequences": 2, "output_scores": True, "return_dict_in_generate": True}
            carried = self._generate(model, ids, mask, use_cache=True, **options)
            rerun = self._generate(model, ids, mask, use_cache=False, **options)
            self.assertEqual(carried.sequences.shape[0], 2 * ids.shape[0])
            torch.testing.assert_close(carried.sequences, rerun.sequences, rtol=0, atol=0)
            torch.testing.assert_close(carried.sequences_scores, rerun.sequences_scores)

    def test_beam_sample_generate(self):
        for model, ids, mask in self._models():
            torch.manual_seed(1)
            carried = self._generate(model, ids, mask, num_beams=2, do_sample=True)
            torch.manual_seed(1)
            rerun = self._generate(model, ids, mask, num_beams=2, do_sample=True, use_cache=False)
            torch.testing.assert_close(carried, rerun, rtol=0, atol=0)

    def test_generate_dict_outputs(self):
        for model, ids, mask in self._models():
            out = self._generate(model, ids, mask, output_scores=True, output_logits=True, output_hidden_states=True,
                                 return_dict_in_generate=True)
            vocab = model.config.vocab_size
            self.assertEqual(len(out.scores), self.max_new_tokens)
            self.assertEqual(len(out.logits), self.max_new_tokens)
            self.assertTrue(all(s.shape == (ids.shape[0], vocab) for s in (*out.scores, *out.logits)))
            self.assertEqual(len(out.hidden_states), self.max_new_tokens)  # per step, per layer
            self.assertEqual(out.hidden_states[0][-1].shape, (ids.shape[0], ids.shape[1], model.config.hidden_size))
            self.assertEqual(out.hidden_states[1][-1].shape, (ids.shape[0], 1, model.config.hidden_size))

    def test_left_padding_changes_nothing(self):
        for model, ids, mask in self._models():
            unpadded = self._generate(model, ids[:1], mask[:1], output_scores=True, return_dict_in_generate=True)
            padded_ids = torch.cat([torch.full((1, 3), 7), ids[:1]], dim=1)
            padded_mask = torch.cat([torch.zeros(1, 3, dtype=mask.dtype), mask[:1]], dim=1)
            padded = self._generate(model, padded_ids, padded_mask, output_scores=True, return_dict_in_generate=True)
            torch.testing.assert_close(padded.sequences[:, 3:], unpadded.sequences, rtol=0, atol=0)
            torch.testing.assert_close(torch.stack(padded.scores), torch.stack(unpadded.scores))

    def test_continue_from_a_saved_state(self):
        for model, ids, mask in self._models():
            whole = self._generate(model, ids, mask, output_scores=True, return_dict_in_generate=True)
            with torch.no_grad():
                prefix = model(ids[:, :-2], use_cache=True)
            continued = self._generate(model, ids[:, -2:], mask[:, -2:], state=prefix.state, output_scores=True,
                                       return_dict_in_generate=True)
            torch.testing.assert_close(continued.sequences, whole.sequences[:, -2 - self.max_new_tokens :], rtol=0, atol=0)
            torch.testing.assert_close(torch.stack(continued.scores), torch.stack(whole.scores))
