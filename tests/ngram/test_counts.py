"""Counting: continuation counts equal their definition, by either path."""

from __future__ import annotations

import numpy as np
import pytest

from ngram import counts as C


@pytest.mark.parametrize("k", [1, 2, 3])
def test_continuation_counts_are_distinct_left_neighbours(k, monkeypatch):
    """c_k(h, w) = |{u : c(u, h, w) > 0}| by brute force, from the packed path and the searched one."""
    rng = np.random.default_rng(k)
    docs = [rng.integers(0, 6, size=n) for n in (40, 3, 25, 1)]
    tokens, lengths = C.flatten_docs(docs, 6)
    remaining = C.remaining_in_doc(lengths)
    upper = C.count_order(tokens, remaining, k + 1, 6, hashed=False)
    lower = None if k == 1 else C.count_order(tokens, remaining, k, 6, hashed=False)
    left: dict = {}
    for d in docs:
        for i in range(len(d) - k):
            left.setdefault(tuple(d[i + 1 : i + k + 1]), set()).add(d[i])
    packed = C.continuation_counts(lower, upper, k, 6, False, False, 0)
    monkeypatch.setattr(C.keys, "exact_packing", lambda v, w: False)  # the search over unsorted suffixes
    searched = C.continuation_counts(lower, upper, k, 6, False, False, 0)
    np.testing.assert_array_equal(packed, searched)
    if k == 1:
        want = np.array([len(left.get((w,), ())) for w in range(6)])
    else:
        ctx = C.context_token_matrix(lower, k, 6, False)
        gram = [(*ctx[i], w) for i in range(ctx.shape[0])
                for w in lower.next_ids[lower.offsets[i] : lower.offsets[i + 1]]]
        want = np.array([len(left.get(tuple(int(x) for x in g), ())) for g in gram])
    np.testing.assert_array_equal(packed, want)


@pytest.mark.parametrize("vocab", [7, 2**16, 2**16 + 1])
def test_pair_order_is_lexsorts(vocab):
    """Contexts ascending, next ids ascending within one, ties in their original order."""
    rng = np.random.default_rng(vocab)
    ctx = rng.integers(-(2**62), 2**62, size=50).repeat(rng.integers(1, 6, size=50))  # runs of equal contexts
    ctx = rng.permutation(ctx)
    nxt = rng.integers(0, vocab, size=ctx.size)
    np.testing.assert_array_equal(C._pair_order(ctx, nxt, vocab), np.lexsort((nxt, ctx)))
