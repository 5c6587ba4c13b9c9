"""NGramTable: brute-force equivalence of all three estimates, invariants and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngram import NGramTable
from tests.ngram.reference import BruteNGram

V = 6


def _docs_strategy(vocab=V):
    doc = st.lists(st.integers(0, vocab - 1), min_size=0, max_size=12)
    return st.lists(doc, min_size=1, max_size=4).filter(lambda ds: any(ds))


def _contexts(docs, vocab, order, rng):
    """Rows of every length 0..order, drawn from the corpus and at random."""
    rows = []
    flat = [t for d in docs for t in d]
    for t in range(order + 1):
        rows.append(list(rng.integers(0, vocab, size=t)))
        if len(flat) >= t:
            i = int(rng.integers(0, len(flat) - t + 1))
            rows.append(flat[i : i + t])
    return rows


def _batched(table, rows, **opts):
    """All rows in one batch per length (equal T), to exercise the batched path."""
    out = {}
    for t in sorted({len(r) for r in rows}):
        same = [r for r in rows if len(r) == t]
        lp = table.logprobs(torch.tensor(same, dtype=torch.long).reshape(len(same), t), **opts)
        for r, row in zip(same, lp, strict=True):
            out[tuple(r)] = row
    return out


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(docs=_docs_strategy(), order=st.integers(1, 4), alpha=st.sampled_from([0.01, 0.5, 2.0]),
       seed=st.integers(0, 1000))
def test_single_order_matches_brute_force(docs, order, alpha, seed):
    table = NGramTable.from_token_ids(docs, V, order)
    ref = BruteNGram(docs, V, order)
    rows = _contexts(docs, V, order, np.random.default_rng(seed))
    for k in range(1, order + 1):
        got = _batched(table, rows, order=k, alpha=alpha)
        for ctx, row in got.items():
            want = [math.log(ref.p_add(list(ctx), w, k, alpha)) for w in range(V)]
            np.testing.assert_allclose(row.numpy(), want, rtol=1e-5, atol=1e-5)
            assert abs(row.exp().sum().item() - 1) < 1e-5


@SETTINGS
@given(docs=_docs_strategy(), order=st.integers(1, 4), mode=st.sampled_from(["logsum", "mixture"]),
       weights=st.lists(st.sampled_from([0.0, 0.3, 1.0, 2.5]), min_size=4, max_size=4)
       .filter(lambda w: any(w)), seed=st.integers(0, 1000))
def test_combination_matches_brute_force(docs, order, mode, weights, seed):
    weights = weights[:order]
    if not any(weights):
        weights[-1] = 1.0
    table = NGramTable.from_token_ids(docs, V, order)
    ref = BruteNGram(docs, V, order)
    rows = _contexts(docs, V, order, np.random.default_rng(seed))
    got = _batched(table, rows, weights=weights, alpha=0.1, mode=mode)
    for ctx, row in got.items():
        want = [ref.combine(list(ctx), w, weights, 0.1, mode) for w in range(V)]
        np.testing.assert_allclose(row.numpy(), want, rtol=1e-5, atol=1e-5)
        if mode == "mixture":
            assert abs(row.exp().sum().item() - 1) < 1e-5


@SETTINGS
@given(docs=_docs_strategy(), order=st.integers(1, 5), discount=st.sampled_from([0.1, 0.5, 0.75, 0.9]),
       seed=st.integers(0, 1000))
def test_kneser_ney_matches_brute_force(docs, order, discount, seed):
    table = NGramTable.from_token_ids(docs, V, order)
    ref = BruteNGram(docs, V, order)
    rows = _contexts(docs, V, order, np.random.default_rng(seed))
    got = _batched(table, rows, smoothing="kneser_ney", discount=discount)
    for ctx, row in got.items():
        want = [math.log(ref.p_kn(list(ctx), w, order, discount)) for w in range(V)]
        np.testing.assert_allclose(row.numpy(), want, rtol=1e-5, atol=1e-5)
        assert abs(row.exp().sum().item() - 1) < 1e-5


@SETTINGS
@given(docs=_docs_strategy(), order=st.integers(1, 5))
def test_counts_match_brute_force(docs, order):
    table = NGramTable.from_token_ids(docs, V, order)
    ref = BruteNGram(docs, V, order)
    for gram, c in ref.c.items():
        assert table.count(list(gram)) == c
    assert table.count([0] * order) == ref.c[(0,) * order]


def test_ngrams_never_cross_documents():
    table = NGramTable.from_token_ids([[1, 2], [3, 4]], 5, 2)
    assert table.count([2, 3]) == 0
    assert table.count([1, 2]) == 1 and table.count([3, 4]) == 1
    assert table.stats["n_docs"] == 2 and table.stats["n_tokens"] == 4


def test_accepts_lists_arrays_and_tensors():
    docs = [[1, 2, 3], np.array([1, 2, 3], dtype=np.int32), torch.tensor([1, 2, 3])]
    table = NGramTable.from_token_ids(docs, 4, 3)
    assert table.count([1, 2, 3]) == 3


def test_rows_longer_than_order_use_only_the_tail():
    docs = [[0, 1, 2, 3, 1, 2, 0]]
    table = NGramTable.from_token_ids(docs, 4, 3)
    short = table.logprobs(torch.tensor([[1, 2]]), smoothing="kneser_ney")
    long = table.logprobs(torch.tensor([[3, 0, 3, 1, 2]]), smoothing="kneser_ney")
    torch.testing.assert_close(short, long)


def test_hand_worked_add_alpha():
    # bigrams after 1: (1,2) twice -> c(1)=2; p(2|1) = (2+1)/(2+3) = 0.6
    table = NGramTable.from_token_ids([[0, 1, 2, 1, 2]], 3, 2)
    got = table.logprobs(torch.tensor([[1]]), order=2, alpha=1.0).exp()
    torch.testing.assert_close(got, torch.tensor([[0.2, 0.2, 0.6]]))


def test_hashed_keys_match_exact_keys(monkeypatch):
    docs = [list(np.random.default_rng(0).integers(0, 7, size=60)) for _ in range(3)]
    exact = NGramTable.from_token_ids(docs, 7, 4)
    from ngram import keys

    monkeypatch.setattr(keys, "exact_packing", lambda v, width: width < 2)
    hashed = NGramTable.from_token_ids(docs, 7, 4)
    assert hashed.hashed_orders == (3, 4)
    ctx = torch.tensor([d[:3] for d in docs] + [[6, 6, 6], [0, 0, 0]])
    for opts in [dict(smoothing="kneser_ney"), dict(mode="mixture"), dict(order=4)]:
        torch.testing.assert_close(hashed.logprobs(ctx, **opts), exact.logprobs(ctx, **opts))
    assert hashed.count(docs[0][:4]) == exact.count(docs[0][:4])


def test_hash_collision_is_detected_and_rehashed(monkeypatch):
    from ngram import keys

    weak_calls = []

    def weak_hash(columns, seed):
        weak_calls.append(seed)
        if seed == 0:  # every context collides under seed 0
            return columns[0] * 0
        return keys.pack_exact(columns, 1000)

    monkeypatch.setattr(keys, "exact_packing", lambda v, width: width < 2)
    monkeypatch.setattr(keys, "pack_hash", weak_hash)
    docs = [[1, 2, 3, 4, 1, 3, 2, 4]]
    table = NGramTable.from_token_ids(docs, 5, 3)
    assert table.hash_seed == 1 and 0 in weak_calls
    assert table.count([1, 2, 3]) == 1 and table.count([2, 3, 4]) == 1 and table.count([3, 2, 4]) == 1
    # A query whose key collides with a stored one but whose tokens differ never matches.
    lp = table.logprobs(torch.tensor([[4, 4]]), order=3, alpha=1.0)
    torch.testing.assert_close(lp, torch.full((1, 5), -math.log(5)))


def test_large_vocab_uses_hash_and_agrees_with_brute_force():
    vocab = 3_000_000  # V**2 > 2**63: orders >= 3 hash their contexts
    rng = np.random.default_rng(1)
    base = rng.integers(0, vocab, size=8)
    docs = [list(base[rng.integers(0, 8, size=40)]) for _ in range(3)]
    table = NGramTable.from_token_ids(docs, vocab, 4)
    assert table.hashed_orders == (4,)
    ref = BruteNGram(docs, 8, 4)  # brute force over the 8 ids used, remapped
    for gram, c in list(ref.c.items())[:50]:
        assert table.count(list(gram)) == c


def test_out_of_range_context_never_matches_without_validation():
    table = NGramTable.from_token_ids([[1, 2, 3]], 4, 2)
    lp = table.logprobs(torch.tensor([[7], [-1]]), order=2, alpha=1.0, validate=False)
    torch.testing.assert_close(lp, torch.full((2, 4), -math.log(4)))


def test_inputs_are_not_mutated():
    docs = [np.array([1, 2, 3, 1])]
    before = docs[0].copy()
    table = NGramTable.from_token_ids(docs, 4, 2)
    ctx = torch.tensor([[1, 2]])
    table.logprobs(ctx)
    np.testing.assert_array_equal(docs[0], before)
    assert ctx.tolist() == [[1, 2]]


def test_logprobs_on_empty_batch_and_zero_width():
    table = NGramTable.from_token_ids([[1, 2, 3]], 4, 3)
    assert table.logprobs(torch.zeros(0, 2, dtype=torch.long)).shape == (0, 4)
    lp = table.logprobs(torch.zeros(3, 0, dtype=torch.long), smoothing="kneser_ney")
    assert lp.shape == (3, 4) and torch.isfinite(lp).all()


def test_from_texts_records_fingerprint(llama2_tokenizer):
    from ngram import tokenizer_fingerprint

    texts = ["It was the best of times.", "It was the worst of times."]
    table = NGramTable.from_texts(texts, llama2_tokenizer, 3)
    assert table.fingerprint == tokenizer_fingerprint(llama2_tokenizer)
    assert table.vocab_size == len(llama2_tokenizer) == 32000
    ids = llama2_tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert table.count(ids[:3]) == 2  # "It was the" in both documents
    assert table.stats["n_tokens"] == sum(
        len(llama2_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts
    )


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "docs, vocab, order, exc, match",
    [
        ([], 5, 2, ValueError, "empty"),
        ([[], []], 5, 2, ValueError, "empty"),
        ([[1, 2]], 5, 0, ValueError, "`order`"),
        ([[1, 2]], 5, 11, ValueError, "`order`"),
        ([[1, 2]], 5, 2.0, TypeError, "`order`"),
        ([[1, -2]], 5, 2, ValueError, "-2"),
        ([[1, 5]], 5, 2, ValueError, "5"),
        ([[1.5, 2.0]], 5, 2, TypeError, "integer"),
        ([[[1, 2]]], 5, 2, ValueError, "1-D"),
        ("abc", 5, 2, TypeError, "string"),
        ([[1, 2]], 0, 2, ValueError, "`vocab_size`"),
    ],
)
def test_bad_build_input(docs, vocab, order, exc, match):
    with pytest.raises(exc, match=match):
        NGramTable.from_token_ids(docs, vocab, order)


def test_bad_texts(llama2_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        NGramTable.from_texts([], llama2_tokenizer, 2)
    with pytest.raises(ValueError, match="no text"):
        NGramTable.from_texts(["", ""], llama2_tokenizer, 2)
    with pytest.raises(TypeError, match="single string"):
        NGramTable.from_texts("some text", llama2_tokenizer, 2)


def test_whitespace_only_texts_are_refused(llama2_tokenizer):
    # Regression: Llama-2 tokenises "   " to space pieces, so an all-whitespace
    # corpus used to build a table of nothing but spaces.
    with pytest.raises(ValueError, match="empty or whitespace"):
        NGramTable.from_texts(["", "   ", "\n\t"], llama2_tokenizer, order=3)


def test_tiny_corpus_warns_that_it_barely_steers(llama2_tokenizer):
    with pytest.warns(UserWarning, match="too small to steer"):
        NGramTable.from_texts(["a corpus of a few dozen tokens at most, " * 3], llama2_tokenizer, order=3)


@pytest.fixture
def small_table():
    return NGramTable.from_token_ids([[0, 1, 2, 3, 1, 2]], 4, 3)


@pytest.mark.parametrize(
    "opts, exc, match",
    [
        (dict(alpha=0), ValueError, "`alpha`"),
        (dict(alpha=-1), ValueError, "`alpha`"),
        (dict(alpha=float("nan")), ValueError, "`alpha`"),
        (dict(smoothing="kneser_ney", discount=0), ValueError, "`discount`"),
        (dict(smoothing="kneser_ney", discount=1.0), ValueError, "`discount`"),
        (dict(weights=(1, 1)), ValueError, "`weights`"),
        (dict(weights=(1, -1, 1)), ValueError, "`weights`"),
        (dict(weights=(0, 0, 0)), ValueError, "`weights`"),
        (dict(weights=(1, float("inf"), 1)), ValueError, "`weights`"),
        (dict(mode="product"), ValueError, "`mode`"),
        (dict(smoothing="witten_bell"), ValueError, "`smoothing`"),
        (dict(order=0), ValueError, "`order`"),
        (dict(order=4), ValueError, "`order`"),
        (dict(order=2, weights=(1, 1, 1)), ValueError, "not both"),
        (dict(smoothing="kneser_ney", order=2), ValueError, "kneser_ney"),
    ],
)
def test_bad_lookup_options(small_table, opts, exc, match):
    with pytest.raises(exc, match=match):
        small_table.logprobs(torch.tensor([[1, 2]]), **opts)


@pytest.mark.parametrize(
    "ctx, exc, match",
    [
        ([[1, 2]], TypeError, "torch.Tensor"),
        (torch.tensor([1, 2]), ValueError, "2-D"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "integer"),
        (torch.tensor([[1, 4]]), ValueError, "4"),
        (torch.tensor([[-1, 2]]), ValueError, "-1"),
    ],
)
def test_bad_contexts(small_table, ctx, exc, match):
    with pytest.raises(exc, match=match):
        small_table.logprobs(ctx)


@pytest.mark.parametrize("ngram", [[], [1, 2, 3, 1], [4], [-1]])
def test_bad_count(small_table, ngram):
    with pytest.raises(ValueError):
        small_table.count(ngram)


@SETTINGS
@given(docs=_docs_strategy(), order=st.integers(1, 4), seed=st.integers(0, 1000))
def test_count_many_matches_count(docs, order, seed):
    table = NGramTable.from_token_ids(docs, V, order)
    rng = np.random.default_rng(seed)
    for k in range(1, order + 1):
        grams = rng.integers(0, V, size=(20, k))
        flat = [t for d in docs for t in d]
        if len(flat) >= k:
            grams = np.concatenate([grams, [flat[:k]]])
        got = table.count_many(torch.from_numpy(grams))
        assert got.tolist() == [table.count(list(g)) for g in grams]


def test_count_many_bad_width_and_out_of_range():
    table = NGramTable.from_token_ids([[1, 2, 3]], 4, 2)
    with pytest.raises(ValueError, match="columns"):
        table.count_many(torch.tensor([[1, 2, 3]]))
    assert table.count_many(torch.tensor([[1, 9], [1, 2]])).tolist() == [0, 1]


@pytest.mark.parametrize("opts", [dict(smoothing="kneser_ney"), dict(mode="mixture"), dict(order=2, alpha=1.0),
                                  dict(mode="logsum", weights=(0.2, 0.3, 0.5))], ids=str)
def test_score_is_the_logprobs_row_at_the_target(opts):
    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 40, size=int(rng.integers(2, 200))).tolist() for _ in range(30)]
    table = NGramTable.from_token_ids(docs, 40, 3)
    ctx = torch.tensor(rng.integers(0, 40, size=(200, 4)))
    ctx[:50, 2:] = torch.tensor(docs[0][:2])  # a seen context
    targets = torch.tensor(rng.integers(0, 40, size=200))
    expected = table.logprobs(ctx, **opts).gather(1, targets[:, None])[:, 0]
    assert torch.equal(table.score(ctx, targets, **opts), expected)
    # Contexts shorter than N-1 and empty ones, as logprobs takes them.
    assert torch.equal(table.score(ctx[:, 3:], targets, **opts),
                       table.logprobs(ctx[:, 3:], **opts).gather(1, targets[:, None])[:, 0])
    assert torch.equal(table.score(ctx[:, :0], targets, **opts),
                       table.logprobs(ctx[:, :0], **opts).gather(1, targets[:, None])[:, 0])


def test_score_refuses_bad_targets_by_name():
    table = NGramTable.from_token_ids([[0, 1, 2, 1, 2]], vocab_size=3, order=2)
    ctx = torch.tensor([[1], [2]])
    with pytest.raises(ValueError, match="`targets` holds id 3"):
        table.score(ctx, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="`targets` must be 1-D"):
        table.score(ctx, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="`targets` must be 1-D"):
        table.score(ctx, torch.tensor([0]))
    with pytest.raises(TypeError, match="`targets` must hold integer ids"):
        table.score(ctx, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="`targets` must be a torch.Tensor"):
        table.score(ctx, [0, 1])
    with pytest.raises(ValueError, match="`contexts` holds id -1"):
        table.score(torch.tensor([[-1], [2]]), torch.tensor([0, 1]))
