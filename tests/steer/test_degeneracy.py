"""Degeneracy attributes on hand-made sequences, batched against one-by-one."""

from __future__ import annotations

import pytest
import torch

from steer.degeneracy import Degeneracy, pad

D = Degeneracy(ngram=3, repeats=3, tail_period=4, tail_min=6, copy_span=4, min_len=3)


def _one(attr, seq):
    c, cl = pad([seq])
    return bool(getattr(D, attr)(c, cl)[0])


def test_empty_and_too_short():
    assert _one("empty", []) and not _one("empty", [5])
    assert _one("too_short", [5, 6]) and not _one("too_short", [5, 6, 7])


@pytest.mark.parametrize("seq, want", [
    ([1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 3], True),    # 1 2 3 three times
    ([1, 2, 3, 9, 1, 2, 3, 8, 7, 6, 5], False),   # twice only
    ([4, 5, 6, 7, 8, 9, 7, 7, 7, 7, 7, 7], True),  # periodic tail, p = 1, 6 tokens
    ([4, 5, 6, 1, 2, 1, 2, 1, 2], True),           # p = 2 tail over 6 tokens
    ([4, 5, 6, 1, 2, 1, 2, 1], False),            # p = 2 over 5 tokens only; 1 2 1 twice
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], False),
    ([], False),
])
def test_repetitive(seq, want):
    assert _one("repetitive", seq) == want


def test_prompt_copy():
    prompt = [10, 11, 12, 13, 14, 15]
    p, pl = pad([prompt, prompt, prompt])
    c, cl = pad([[1, 12, 13, 14, 15, 2], [1, 12, 13, 14, 2], [13, 14, 15]])
    assert D.prompt_copy(p, pl, c, cl).tolist() == [True, False, False]


def test_batched_equals_one_by_one_with_padding():
    seqs = [[1, 2, 3, 1, 2, 3, 1, 2, 3], [], [5, 5, 5, 5, 5, 5, 5], [1, 2, 3, 4], [9, 8]]
    prompts = [[1, 2, 3, 1], [4], [6, 6], [5, 6, 7, 8, 9], [9, 8]]
    batch = D.all(*pad(prompts), *pad(seqs))
    for i, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
        one = D.all(*pad([p]), *pad([s]))
        for name in batch:
            assert bool(batch[name][i]) == bool(one[name][0]), (name, i)
    assert D.is_degenerate(prompts, seqs).tolist() == batch["degenerate"].tolist()
    assert batch["degenerate"].tolist() == [True, True, True, False, True]


def test_padding_never_counts_as_repetition():
    c = torch.tensor([[7, 8, 9, 0, 0, 0, 0, 0, 0, 0]])
    assert not D.repetitive(c, torch.tensor([3]))[0]


@pytest.mark.parametrize("kw", [dict(ngram=0), dict(repeats=1), dict(min_len=2.0), dict(copy_span=True)])
def test_bad_thresholds(kw):
    with pytest.raises((ValueError, TypeError)):
        Degeneracy(**kw)
