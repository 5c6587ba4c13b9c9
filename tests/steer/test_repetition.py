"""NoNgramLoop: the continuation-only n-gram loop ban."""

from __future__ import annotations

import pytest
import torch

from steer import repetition
from steer.degeneracy import Degeneracy  # the definition of a loop the ban must prevent
from steer.repetition import NoNgramLoop


def test_no_ngram_loop_hand_made():
    proc = NoNgramLoop(ngram=2, repeats=3, prompt_length=2)
    ids = torch.tensor([[9, 9, 4, 5, 4, 5, 4]])  # continuation 4 5 4 5 4: (4, 5) twice
    out = proc(ids, torch.zeros(1, 10))
    assert torch.isneginf(out[0, 5]) and torch.isfinite(out[0, [0, 1, 2, 3, 4, 6]]).all()
    # the prompt does not count
    assert torch.isfinite(NoNgramLoop(2, 2, 5)(torch.tensor([[4, 5, 4, 5, 4, 1]]), torch.zeros(1, 10))).all()


def test_no_ngram_loop_decode_loop_never_lets_a_loop_through():
    torch.manual_seed(0)
    deg = Degeneracy(ngram=3, repeats=2, tail_period=1, tail_min=10_000)
    proc = NoNgramLoop(3, 2, prompt_length=3)
    ids = torch.randint(0, 6, (16, 3))
    for _ in range(25):
        scores = proc(ids, torch.randn(16, 6) * 3)
        nxt = torch.where(torch.isneginf(scores), -1e9, scores).argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    conts = ids[:, 3:]
    # a row whose every token is banned keeps its scores (the ban never empties a row), so it may loop
    zeros = torch.zeros(16, 6)
    banned_all = torch.isneginf(zeros.scatter_reduce(1, *proc.bans(ids, zeros), reduce="amin")).all(-1)
    ok = ~deg.repetitive(conts, torch.full((16,), conts.shape[1]))
    assert (ok | banned_all).all()


def test_no_ngram_loop_never_empties_a_row():
    # Row 0: a mask before the ban left only token 5 finite, and the ban bans 5: the row is kept.
    # Row 1: same continuation, all tokens finite: 5 is banned as usual.
    proc = NoNgramLoop(ngram=2, repeats=3, prompt_length=2)
    ids = torch.tensor([[9, 9, 4, 5, 4, 5, 4]] * 2)
    scores = torch.zeros(2, 10)
    scores[0] = float("-inf")
    scores[0, 5] = 1.0
    out = proc(ids, scores)
    assert torch.equal(out[0], scores[0]) and out.data_ptr() != scores.data_ptr()
    assert torch.isneginf(out[1, 5]) and torch.isfinite(out[1]).sum() == 9
    probs = torch.softmax(out, -1)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(2))
    # a row that came in with no finite score stays as it was
    empty = torch.full((1, 10), float("-inf"))
    assert torch.isneginf(proc(ids[:1], empty)).all()


def _dense_reference_bans(input_ids, scores, n, r, prompt_length):
    """The bans written plainly: count every (context, next) pair of the continuation in a dense table."""
    cont = input_ids[:, prompt_length:]
    b, length = cont.shape
    if length < max(n - 1, 1) or length < n - 1 + (r - 1):
        return scores.clone()
    counts = torch.zeros(b, scores.shape[-1], dtype=torch.long)
    if n == 1:
        counts.scatter_add_(1, cont.clamp(max=scores.shape[-1] - 1), torch.ones_like(cont))
    else:
        win = cont.unfold(1, n, 1)
        tail = cont[:, length - (n - 1):]
        match = (win[:, :, : n - 1] == tail[:, None, :]).all(-1)
        counts.scatter_add_(1, win[:, :, n - 1].clamp(max=scores.shape[-1] - 1), match.long())
    return scores.masked_fill(counts >= r - 1, float("-inf"))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("count_by", ["sort", "bincount"])
def test_no_ngram_loop_bans_exactly_what_a_dense_count_bans(n, r, count_by, monkeypatch):
    # repeats are counted by sorting short continuations and by a bincount long ones: force each
    monkeypatch.setattr(repetition, "SORT_COUNT_RATIO", 0 if count_by == "sort" else 10**9)
    g = torch.Generator().manual_seed(n * 10 + r)
    for trial in range(25):
        length = int(torch.randint(0, 30, (1,), generator=g))
        ids = torch.randint(0, 4 + trial % 5, (6, 3 + length), generator=g)  # small vocab: many repeats
        scores = torch.randn(6, 12, generator=g)
        scores[0, 2] = float("-inf")
        got = NoNgramLoop(n, r, prompt_length=3)(ids, scores)
        torch.testing.assert_close(got, _dense_reference_bans(ids, scores, n, r, 3))
