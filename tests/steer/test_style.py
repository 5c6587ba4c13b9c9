"""NGramStylePrior: the processor contract, its invariants, and generate() end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList

from ngram import NGramTable, TokenizerMismatchError
from ngram.host import host_lookup
from steer.models import encode_prompts
from steer.style import NGramStylePrior
from tests.conftest import tiny_gpt2, tiny_llama, within_unfused_rounding

V = 64


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return NGramTable.from_token_ids([rng.integers(3, V, size=300) for _ in range(5)], V, 3)


@pytest.mark.parametrize("opts", [dict(), dict(smoothing="kneser_ney"), dict(order=2, alpha=0.5),
                                  dict(mode="logsum", weights=(0.2, 0.3, 0.5))])
def test_adds_lam_times_prior(table, opts):
    ids = torch.randint(0, V, (4, 7))
    scores = torch.randn(4, V)
    out = NGramStylePrior(table, 0.3, **opts)(ids, scores)
    want = scores + 0.3 * table.logprobs(ids, **opts)
    torch.testing.assert_close(out, want)


def test_lam_zero_is_identity_and_returns_new_tensor(table):
    ids, scores = torch.randint(0, V, (2, 5)), torch.randn(2, V)
    out = NGramStylePrior(table, 0)(ids, scores)
    assert torch.equal(out, scores) and out is not scores


def test_minus_inf_survives_and_no_nan(table):
    ids = torch.randint(0, V, (3, 4))
    scores = torch.randn(3, V)
    scores[:, :10] = -math.inf
    out = NGramStylePrior(table, 1.0, smoothing="kneser_ney")(ids, scores)
    assert torch.isneginf(out[:, :10]).all()
    assert torch.isfinite(out[:, 10:]).all()


def test_input_not_mutated(table):
    ids, scores = torch.randint(0, V, (2, 5)), torch.randn(2, V)
    ids0, scores0 = ids.clone(), scores.clone()
    NGramStylePrior(table, 0.5)(ids, scores)
    assert torch.equal(ids, ids0) and torch.equal(scores, scores0)


def test_padded_vocab_columns_get_no_bonus(table):
    ids, scores = torch.randint(0, V, (2, 5)), torch.randn(2, V + 8)
    out = NGramStylePrior(table, 0.5)(ids, scores)
    assert torch.equal(out[:, V:], scores[:, V:])
    torch.testing.assert_close(out[:, :V], scores[:, :V] + 0.5 * table.logprobs(ids))


def test_padding_ids_beyond_table_never_match(table):
    ids = torch.tensor([[5, V + 3, V + 3]])  # ids of a padded embedding region
    out = NGramStylePrior(table, 1.0)(ids, torch.zeros(1, V + 8))
    assert torch.isfinite(out).all()


def test_smaller_score_width_is_an_error(table):
    with pytest.raises(ValueError, match="columns"):
        NGramStylePrior(table, 0.5)(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, V - 1))


@pytest.mark.parametrize("ids, exc, match", [(torch.zeros(5, dtype=torch.long), ValueError, "2-D"),
                                              (torch.zeros(1, 5), TypeError, "integer ids")])
def test_malformed_input_ids_are_refused(table, ids, exc, match):
    with pytest.raises(exc, match=match):
        NGramStylePrior(table, 0.5)(ids, torch.zeros(1, V))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_keeps_scores_dtype(table, dtype):
    ids, scores = torch.randint(0, V, (2, 5)), torch.randn(2, V).to(dtype)
    out = NGramStylePrior(table, 0.2)(ids, scores)
    assert out.dtype == dtype
    want = (scores.float() + 0.2 * table.logprobs(ids)).to(dtype)
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("lam, exc", [(-0.1, ValueError), (float("nan"), ValueError),
                                      (float("inf"), ValueError), ("0.1", TypeError), (True, TypeError)])
def test_bad_lam(table, lam, exc):
    with pytest.raises(exc, match="`lam`"):
        NGramStylePrior(table, lam)


def test_bad_table_and_options(table):
    with pytest.raises(TypeError, match="`table`"):
        NGramStylePrior({"not": "a table"}, 0.1)
    with pytest.raises(ValueError, match="`alpha`"):
        NGramStylePrior(table, 0.1, alpha=0)


def test_tokenizer_mismatch(llama2_tokenizer, gpt2_tokenizer):
    table = NGramTable.from_texts(["some style text here"], llama2_tokenizer, 2)
    NGramStylePrior(table, 0.1, tokenizer=llama2_tokenizer)
    with pytest.raises(TokenizerMismatchError):
        NGramStylePrior(table, 0.1, tokenizer=gpt2_tokenizer)


def test_simulated_decode_loop_batched_equals_per_row(table):
    """Tier (b): random logits, argmax, append; the batch equals each row alone."""
    torch.manual_seed(0)
    prior = NGramStylePrior(table, 0.7, smoothing="kneser_ney")
    ids = torch.randint(0, V, (5, 2))
    for _ in range(12):
        scores = torch.randn(5, V)
        batched = prior(ids, scores)
        single = torch.cat([prior(ids[i : i + 1], scores[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(batched, single)
        ids = torch.cat([ids, batched.argmax(-1, keepdim=True)], dim=1)


GEN = [
    dict(do_sample=False),
    dict(do_sample=False, num_beams=3),
    dict(do_sample=True, top_k=0, top_p=1.0),
]


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("gen", GEN)
def test_generate_on_tiny_models(table, factory, gen):
    model = factory(V)
    ids = torch.tensor([[0, 0, 1, 5, 9], [1, 7, 8, 9, 10]])  # left-padded batch
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0, **gen)
    torch.manual_seed(1)
    plain = model.generate(**kw)
    torch.manual_seed(1)
    zero = model.generate(**kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 0.0)]))
    assert torch.equal(plain, zero)
    torch.manual_seed(1)
    steered = model.generate(**kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 5.0)]))
    assert steered.shape[0] == 2 and (steered[:, :5] == ids).all()


def test_strong_prior_follows_the_table():
    """With a huge lam the greedy output follows the table's argmax chain."""
    model = tiny_llama(V)
    cycle = [10, 11, 12, 13] * 50
    table = NGramTable.from_token_ids([cycle], V, 2)
    prior = NGramStylePrior(table, 1000.0, order=2, alpha=0.01)
    out = model.generate(torch.tensor([[1, 10]]), max_new_tokens=8, do_sample=False, pad_token_id=0,
                         logits_processor=LogitsProcessorList([prior]))
    assert out[0, 2:].tolist() == [11, 12, 13, 10, 11, 12, 13, 10]


@pytest.mark.parametrize("gen", GEN[:2])
def test_lam_zero_identity_on_real_model(aidreams, gen):
    model, tok = aidreams
    from steer.corpora import split_documents

    table = NGramTable.from_texts(split_documents("the dream of pixels.\n\nA kaleidoscope unfolds."), tok, 3)
    enc = encode_prompts(tok, ["Once upon a time", "The machine dreamed of"])
    kw = dict(**enc, max_new_tokens=20, pad_token_id=tok.pad_token_id, **gen)
    plain = model.generate(**kw)
    zero = model.generate(**kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 0.0, tok)]))
    assert torch.equal(plain, zero)
    steered = model.generate(
        **kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 1.0, tok, smoothing="kneser_ney")])
    )
    assert not torch.equal(steered, plain)  # a strong prior moves greedy decoding


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_generate_in_half_precision(table, dtype):
    model = tiny_llama(V).to(dtype)
    ids = torch.tensor([[1, 5, 9, 11]])
    kw = dict(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    plain = model.generate(**kw)
    zero = model.generate(**kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 0.0)]))
    assert torch.equal(plain, zero)
    out = model.generate(**kw, output_scores=True, return_dict_in_generate=True,
                         logits_processor=LogitsProcessorList([NGramStylePrior(table, 1.0)]))
    assert all(not torch.isnan(s).any() for s in out.scores)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_add_to_steers_in_place_to_the_calls_values(table, lam):
    ids = torch.randint(0, V, (3, 6))
    scores = torch.randn(3, V + 4)
    prior = NGramStylePrior(table, lam, mode="logsum", weights=(0.2, 0.3, 0.5))
    want = prior(ids, scores)
    strided = torch.zeros(3, V + 4, 3)[:, :, 1]  # every third float, as llama-cpp-python's records hold a row
    strided.copy_(scores)
    for target in (scores.clone(), strided):
        assert prior.add_to(ids, target) is target
        assert torch.equal(target, want)
    with pytest.raises(TypeError, match="float32"):
        prior.add_to(ids, scores.half())


def test_an_arpa_model_steers_through_the_prior(tmp_path):
    """A table written as ARPA and read back is the table's Kneser-Ney prior; it takes no prior options."""
    rng = np.random.default_rng(0)
    table = NGramTable.from_token_ids([rng.zipf(1.3, 200).clip(max=27).tolist() for _ in range(6)], 30, 3)
    table.to_arpa(tmp_path / "t.arpa")
    model = NGramTable.from_arpa(tmp_path / "t.arpa", vocab_size=table.vocab_size)
    ids, scores = torch.randint(0, 30, (4, 5)), torch.randn(4, 32)
    got = NGramStylePrior(model, 0.5)(ids, scores)
    torch.testing.assert_close(got, NGramStylePrior(table, 0.5, smoothing="kneser_ney")(ids, scores), rtol=0,
                               atol=1e-5)
    with pytest.raises(ValueError, match="no prior options"):
        NGramStylePrior(model, 0.5, smoothing="kneser_ney")


@pytest.mark.parametrize("opts", [dict(smoothing="kneser_ney"), dict(mode="logsum", weights=(0.2, 0.3, 0.5)),
                                  dict(mode="mixture")], ids=str)
@pytest.mark.parametrize("extra_columns", [0, 3])
def test_one_row_on_the_host_equals_the_batched_path_bit_for_bit(table, opts, extra_columns, monkeypatch):
    g = torch.Generator().manual_seed(5)
    ids = torch.cat([torch.randint(0, V, (6, 7), generator=g), torch.tensor([[-1, 2, V, 5, 6, 7, 8]])])
    scores = torch.randn(ids.shape[0], V + extra_columns, generator=g)
    scores[0, :4] = -math.inf
    prior = NGramStylePrior(table, 0.3, **opts)
    plan = table.plan(prior.options, "cpu")
    assert (host_lookup(plan) is None) == (opts.get("mode") == "mixture")  # the mixture keeps the batched step

    def each_row():
        out = []
        for i in range(ids.shape[0]):
            row = scores[i : i + 1].clone()
            out.append((prior(ids[i : i + 1], scores[i : i + 1]), prior.add_to(ids[i : i + 1], row)))
        return out

    host = each_row()
    monkeypatch.setattr("steer.style.host_lookup", lambda plan: None)
    for (call, added), (want_call, want_added) in zip(host, each_row(), strict=True):
        assert torch.equal(call, want_call) and torch.equal(added, want_added)


@pytest.mark.parametrize("opts", [dict(smoothing="kneser_ney"), dict(mode="logsum", weights=(0.2, 0.3, 0.5)),
                                  dict(mode="mixture")], ids=str)
@pytest.mark.parametrize("extra_columns", [0, 3])
def test_add_to_row_steers_a_numpy_row_as_add_to_does(table, opts, extra_columns):
    g = torch.Generator().manual_seed(8)
    ids = torch.cat([torch.randint(0, V, (6, 7), generator=g), torch.tensor([[-1, 2, V, 5, 6, 7, 8]])])
    scores = torch.randn(ids.shape[0], V + extra_columns, generator=g) * 8
    scores[0, :4] = -math.inf
    prior = NGramStylePrior(table, 0.3, **opts)
    assert prior.rows_on_host == (opts.get("mode") != "mixture")  # the mixture goes through add_to
    for i in range(ids.shape[0]):
        want = prior.add_to(ids[i : i + 1], scores[i : i + 1].clone())[0].numpy()
        records = np.zeros(scores.shape[1], dtype=[("id", np.intc), ("logit", np.single), ("p", np.single)])
        records["logit"] = scores[i].numpy()
        row = records["logit"]  # every third float, as llama-cpp-python hands a row over
        for given in (ids[i].numpy().astype(np.intc), ids[i].tolist()[-2:]):
            row[:] = scores[i].numpy()
            assert prior.add_to_row(given, row) is row
            assert within_unfused_rounding(row, want, scores[i].numpy())
    zero = NGramStylePrior(table, 0.0, **opts)
    row = scores[1].numpy().copy()
    assert np.array_equal(zero.add_to_row([1, 2], row), scores[1].numpy())  # lam 0 is the identity
    with pytest.raises(ValueError, match="columns"):
        NGramStylePrior(table, 0.3, **opts).add_to_row([1, 2], np.zeros(V - 1, np.float32))
