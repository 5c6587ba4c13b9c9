"""The shared decode helper: its settings are checked, and the loop ban holds in every continuation."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

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


class _EndAt(LogitsProcessor):
    """Ends row i after ``lengths[i]`` generated tokens (a large EOS bonus), so rows finish at different steps."""

    def __init__(self, lengths, prompt_length, eos):
        self.lengths, self.prompt_length, self.eos = torch.tensor(lengths), prompt_length, eos

    def __call__(self, input_ids, scores):
        done = (input_ids.shape[1] - self.prompt_length) == self.lengths
        return scores + torch.zeros_like(scores).index_fill(1, torch.tensor([self.eos]), 1e4) * done[:, None]


def _left_padded(rows, pad=0):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    return ids, (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()


def test_dropping_finished_rows_equals_generate_token_for_token():
    from steer.generation import greedy_drop_finished
    from steer.repetition import NoNgramLoop
    from tests.conftest import tiny_llama

    model = tiny_llama().double()
    ids, mask = _left_padded([[1, 5, 6, 7], [1, 9], [1, 3, 4, 10, 11, 12], [1, 20, 21]])
    width = ids.shape[1]
    for lengths in ([3, 1, 7, 12], [12, 12, 12, 12], [1, 1, 1, 1]):
        procs = [_EndAt(lengths, width, eos=2), NoNgramLoop(2, 2, prompt_length=width)]
        want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                              eos_token_id=[2], pad_token_id=0, logits_processor=LogitsProcessorList(procs))
        got = greedy_drop_finished(model, ids, mask, max_new_tokens=10, stop_ids=[2], pad_token_id=0,
                                   logits_processor=procs)
        assert torch.equal(got, want), lengths
    # Several stop ids: a row ends at whichever comes first.
    procs = [_EndAt([2, 5, 3, 4], width, eos=3)]
    want = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                          eos_token_id=[2, 3], pad_token_id=0, logits_processor=LogitsProcessorList(procs))
    got = greedy_drop_finished(model, ids, mask, max_new_tokens=8, stop_ids=[2, 3], pad_token_id=0,
                               logits_processor=procs)
    assert torch.equal(got, want)


def test_dropping_finished_rows_refuses_bad_arguments():
    from steer.generation import greedy_drop_finished
    from tests.conftest import tiny_llama

    model = tiny_llama()
    ids, mask = _left_padded([[1, 5], [1, 6]])
    with pytest.raises(ValueError, match="`max_new_tokens`"):
        greedy_drop_finished(model, ids, mask, max_new_tokens=0, stop_ids=[2], pad_token_id=0)
    with pytest.raises(ValueError, match="`stop_ids`"):
        greedy_drop_finished(model, ids, mask, max_new_tokens=4, stop_ids=[], pad_token_id=0)
    with pytest.raises(ValueError, match="`input_ids`"):
        greedy_drop_finished(model, ids, mask[:, :1], max_new_tokens=4, stop_ids=[2], pad_token_id=0)
