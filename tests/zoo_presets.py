"""Test helper shared by the registry-parametrised test files: which presets stand for the model families."""
from __future__ import annotations

import bytezoo


def one_preset_per_family() -> list[str]:
    """The first registered name (alphabetically) of each config class: one model per family."""
    first = {}
    for name in bytezoo.list_models():
        first.setdefault(bytezoo.get_model_info(name).resolved_config_class(), name)
    return sorted(first.values())


def assert_batched_generation_equals_one_at_a_time(model, prompts, max_new_tokens: int = 6) -> None:
    """``model.generate`` on ``prompts`` (lists of byte values of different lengths) padded into one batch, on the left
    and on the right, greedy and with beam search, continues every prompt exactly as generating it alone does."""
    import torch

    for options in ({"do_sample": False}, {"do_sample": False, "num_beams": 3}):
        alone = []
        for prompt in prompts:
            ids = torch.tensor([prompt])
            alone.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                        **options)[0, len(prompt):].tolist())
        width = max(len(prompt) for prompt in prompts)
        for side in ("left", "right"):
            ids = torch.full((len(prompts), width), 256)  # the byte tokenizer's <pad>: masked, never looked up
            mask = torch.zeros(len(prompts), width, dtype=torch.long)
            for row, prompt in enumerate(prompts):
                span = slice(width - len(prompt), width) if side == "left" else slice(0, len(prompt))
                ids[row, span], mask[row, span] = torch.tensor(prompt), 1
            batched = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=256, **options)
            assert batched[:, width:].tolist() == alone, (side, options)
