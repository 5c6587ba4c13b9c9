"""Metrics: definitions checked against hand-worked values and brute-force recomputation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from ngram import NGramTable
from steer import metrics as M
from tests.conftest import tiny_llama


def test_js_hand_worked_and_against_scipy():
    p = torch.log(torch.tensor([[1.0, 1e-30], [0.2, 0.8]]))
    q = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
    js = M.js_divergence(p, q)
    assert js[0].item() == pytest.approx(0.3113, abs=1e-3)
    assert js[1].item() == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    got = M.js_divergence(torch.tensor(a), torch.tensor(b)).numpy()
    pa, pb = np.exp(a) / np.exp(a).sum(1, keepdims=True), np.exp(b) / np.exp(b).sum(1, keepdims=True)
    want = [jensenshannon(x, y, base=2) ** 2 for x, y in zip(pa, pb, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_js_bounds_symmetry_and_masks():
    a = torch.tensor([[0.0, -math.inf, 1.0]])
    b = torch.tensor([[-math.inf, 0.0, -math.inf]])
    assert M.js_divergence(a, b).item() == pytest.approx(1.0, abs=1e-6)  # disjoint supports
    x, y = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(M.js_divergence(x, y), M.js_divergence(y, x))
    assert torch.isfinite(M.js_divergence(a, a)).all() and M.js_divergence(a, a).item() == pytest.approx(0)


def test_style_perplexity_by_brute_force():
    table = NGramTable.from_token_ids([[1, 2, 3, 1, 2, 4, 1, 2, 3]], 6, 3)
    prompts, conts = [[5, 1], [2]], [[2, 3, 1], [3]]
    nll, n = 0.0, 0
    for p, c in zip(prompts, conts, strict=True):
        seq = p + c
        for pos in range(len(p), len(seq)):
            ctx = torch.tensor([seq[max(0, pos - 2) : pos]])
            nll -= table.logprobs(ctx, smoothing="kneser_ney")[0, seq[pos]].item()
            n += 1
    assert M.style_perplexity(table, prompts, conts) == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert math.isnan(M.style_perplexity(table, [[1]], [[]]))


def test_base_perplexity_batched_equals_one_by_one():
    model = tiny_llama(32)
    prompts, conts = [[1, 5, 6], [1, 7]], [[8, 9, 10, 11], [12]]
    got = M.base_nll(model, prompts, conts)
    for (nll, n), p, c in zip(got, prompts, conts, strict=True):
        ids = torch.tensor([p + c])
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        want = -sum(logp[len(p) - 1 + i, c[i]].item() for i in range(len(c)))
        assert n == len(c) and nll == pytest.approx(want, rel=1e-4)


def test_overlap_and_diversity():
    table = NGramTable.from_token_ids([[1, 2, 3, 4]], 8, 3)
    conts = [[1, 2, 3, 7], [2, 3]]
    assert M.ngram_overlap(table, conts, 1) == pytest.approx(5 / 6)
    assert M.ngram_overlap(table, conts, 2) == pytest.approx(3 / 4)  # 12 23 37 | 23
    assert M.ngram_overlap(table, conts, 3) == pytest.approx(1 / 2)  # 123 237
    assert math.isnan(M.ngram_overlap(table, [[1]], 2))
    assert M.distinct_n([[1, 1, 2], [1, 2]], 1) == pytest.approx(2 / 5)
    assert M.distinct_n([[1, 1, 2], [1, 2]], 2) == pytest.approx(2 / 3)
    assert M.unigram_jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert M.unigram_jaccard([], []) == 1.0
    assert M.shared_prefix([1, 2, 3], [1, 2, 4]) == 2 and M.shared_prefix([], [1]) == 0


def test_relative_change():
    assert M.relative_change(75.3, 100.0) == pytest.approx(-0.247)
    assert math.isnan(M.relative_change(1.0, 0.0))
