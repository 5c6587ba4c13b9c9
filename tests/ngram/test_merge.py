"""NGramTable.merge: exactly the table of the concatenated corpus, for exact and hashed keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ngram import NGramTable


def _assert_same(a: NGramTable, b: NGramTable) -> None:
    assert (a.order, a.vocab_size, a.hash_seed, a.hashed_orders) == (b.order, b.vocab_size, b.hash_seed,
                                                                     b.hashed_orders)
    ta, tb = a._saved_tensors(), b._saved_tensors()
    assert sorted(ta) == sorted(tb)
    for name in ta:
        assert ta[name].dtype == tb[name].dtype, name
        assert torch.equal(ta[name], tb[name]), name
    for key in ("n_tokens", "n_docs", "ngram_types", "contexts"):
        assert a.stats[key] == b.stats[key], key


def _docs(seed: int, n: int, vocab: int):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(rng.integers(1, 30))).tolist() for _ in range(n)]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("parts", [1, 2, 4])
def test_merge_equals_one_build_on_the_concatenated_corpus(order, parts):
    docs = _docs(order * 10 + parts, 40, 9)
    shards = [docs[i::parts] for i in range(parts)]
    merged = NGramTable.merge([NGramTable.from_token_ids(s, 9, order) for s in shards])
    _assert_same(merged, NGramTable.from_token_ids([d for s in shards for d in s], 9, order))


def test_merge_of_hashed_tables(monkeypatch):
    from ngram import keys

    monkeypatch.setattr(keys, "exact_packing", lambda v, width: width < 2)  # orders >= 3 hash
    docs = _docs(7, 60, 11)
    a, b = NGramTable.from_token_ids(docs[:30], 11, 4), NGramTable.from_token_ids(docs[30:], 11, 4)
    assert a.hashed_orders == (3, 4)
    _assert_same(NGramTable.merge([a, b]), NGramTable.from_token_ids(docs, 11, 4))


def test_merge_rehashes_after_a_collision(monkeypatch):
    from ngram import keys

    state = {"weak": False}
    real = keys.pack_hash

    def sometimes_weak(columns, seed):
        if state["weak"] and seed == 0:  # every context collides under seed 0
            return columns[0] * 0
        return real(columns, seed)

    monkeypatch.setattr(keys, "exact_packing", lambda v, width: width < 2)
    monkeypatch.setattr(keys, "pack_hash", sometimes_weak)
    docs = _docs(3, 20, 6)
    a, b = NGramTable.from_token_ids(docs[:10], 6, 3), NGramTable.from_token_ids(docs[10:], 6, 3)
    assert a.hash_seed == b.hash_seed == 0
    state["weak"] = True
    merged = NGramTable.merge([a, b])
    assert merged.hash_seed == 1
    _assert_same(merged, NGramTable.from_token_ids(docs, 6, 3))


def test_merged_table_looks_up_and_round_trips(tmp_path):
    docs = _docs(5, 30, 8)
    merged = NGramTable.merge([NGramTable.from_token_ids(docs[:15], 8, 3),
                               NGramTable.from_token_ids(docs[15:], 8, 3)])
    merged.save(tmp_path / "m.safetensors")
    loaded = NGramTable.load(tmp_path / "m.safetensors")
    ctx = torch.tensor([[1, 2], [3, 3], [0, 7]])
    whole = NGramTable.from_token_ids(docs, 8, 3)
    for opts in [dict(smoothing="kneser_ney"), dict(mode="mixture"), dict(order=2)]:
        torch.testing.assert_close(loaded.logprobs(ctx, **opts), whole.logprobs(ctx, **opts))
    assert loaded.stats["merged_from"] == 2


def test_tables_that_do_not_fit_together_are_refused():
    a = NGramTable.from_token_ids([[1, 2, 3]], 5, 2)
    with pytest.raises(ValueError, match="order 3 but"):
        NGramTable.merge([a, NGramTable.from_token_ids([[1, 2, 3]], 5, 3)])
    with pytest.raises(ValueError, match="vocab_size 6 but"):
        NGramTable.merge([a, NGramTable.from_token_ids([[1, 2, 3]], 6, 2)])
    with pytest.raises(ValueError, match="fingerprint"):
        NGramTable.merge([a, NGramTable.from_token_ids([[1, 2, 3]], 5, 2, tokenizer_fingerprint="sha256:x")])
    with pytest.raises(ValueError, match="non-empty"):
        NGramTable.merge([])
    with pytest.raises(TypeError, match="`tables\\[1\\]`"):
        NGramTable.merge([a, "table"])
