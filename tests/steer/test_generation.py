"""The shared decode helper: its settings are checked, and the loop ban holds in every continuation."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor

from steer.generation import DecodeConfig, continue_prompts


@pytest.mark.parametrize("ban", [(0, 2), (3, 1), (3,), ("3", 2), (True, 2), 3])
def test_bad_loop_ban_is_refused_by_name(ban):
    with pytest.raises((ValueError, TypeError), match="`loop_ban`"):
        DecodeConfig(loop_ban=ban)


class _Loop(LogitsProcessor):
    """Prefers the tokens 7 8 9 7 8 9 ... so that, unbanned, every continuation loops."""

    def __call__(self, input_ids, scores):
        nxt = torch.tensor([7, 8, 9])[(input_ids[:, -1:] - 6) % 3]  # (B, 1): after 9 comes 7, ...
        bonus = torch.zeros_like(scores).scatter_(1, nxt, 50.0)
        return scores + bonus


def test_loop_ban_stops_every_repeat_and_leaves_plain_decoding_alone(aidreams):
    model, tok = aidreams
    prompts = ["Once upon a time", "The machine dreamed of"]
    def repeats(c):
        grams = [tuple(c[i:i + 3]) for i in range(len(c) - 2)]
        return len(grams) - len(set(grams))

    _, looped = continue_prompts(model, tok, prompts, [_Loop()], DecodeConfig(max_new_tokens=16))
    assert all(repeats(c) > 0 for c in looped)
    _, banned = continue_prompts(model, tok, prompts, [_Loop()], DecodeConfig(max_new_tokens=16, loop_ban=(3, 2)))
    assert all(repeats(c) == 0 and len(c) == 16 for c in banned)  # no 3-gram twice in a continuation
    plain = continue_prompts(model, tok, prompts, (), DecodeConfig(max_new_tokens=8))
    assert continue_prompts(model, tok, prompts, (), DecodeConfig(max_new_tokens=8)) == plain
