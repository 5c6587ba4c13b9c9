"""Hidden-state optimisation: weights untouched, zero steps is plain cached evaluation and generation."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, LogitsProcessor

from steer import hso
from tests.conftest import tiny_gpt2, tiny_llama


def _ids(batch=2, length=24, vocab=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


def _plain_cached(model, ids, segment):
    """log p of every token after the first, reading ``ids`` segment by segment through a DynamicCache."""
    cache, out, prev = DynamicCache(), [], None
    with torch.no_grad():
        for s in range(0, ids.shape[1], segment):
            seg = ids[:, s: s + segment]
            logits = model(input_ids=seg, cache=cache, use_cache=True).logits
            lp = torch.log_softmax(logits.float(), -1)
            if prev is not None:
                out.append(torch.log_softmax(prev.float(), -1).gather(-1, seg[:, :1]))
            out.append(lp[:, :-1].gather(-1, seg[:, 1:, None])[..., 0])
            prev = logits[:, -1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_weights_never_change_and_get_no_gradient(make):
    model = make()
    before = copy.deepcopy(model.state_dict())
    state = hso.read(model, _ids(), config=hso.HSOConfig(segment=8, steps=3, lr=0.1))
    assert state.backwards == 2 * 3  # segments 2 and 3, three steps each
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None, name
        assert p.requires_grad, name  # restored as it was


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_zero_steps_is_plain_cached_evaluation(make):
    model, ids = make(), _ids()
    state = hso.read(model, ids, config=hso.HSOConfig(segment=8, steps=0))
    assert torch.isnan(state.logprobs[:, 0]).all()
    assert torch.equal(state.logprobs[:, 1:], _plain_cached(model, ids, 8))
    with torch.no_grad():  # and, up to rounding, the one-pass evaluation
        full = torch.log_softmax(model(input_ids=ids).logits, -1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(state.logprobs[:, 1:], full, atol=1e-5, rtol=1e-5)
    assert state.backwards == 0


def test_a_segment_is_scored_before_any_update_that_saw_it():
    model, ids = tiny_llama(), _ids()
    plain = hso.read(model, ids, config=hso.HSOConfig(segment=8, steps=0)).logprobs
    opt = hso.read(model, ids, config=hso.HSOConfig(segment=8, steps=2, lr=0.5)).logprobs
    # Segments 1 and 2 are predicted from caches no loss has touched yet; segment 3 from the
    # cache segment 2's loss optimised.
    # (Up to rounding: with a gradient to take, attention may run other kernels.)
    torch.testing.assert_close(opt[:, :16], plain[:, :16], atol=1e-6, rtol=1e-6, equal_nan=True)
    assert (opt[:, 16:] - plain[:, 16:]).abs().max() > 1e-3


def test_sgd_step_is_minus_lr_times_the_gradient():
    model, ids = tiny_llama(), _ids(length=16)
    lr = 0.3
    state = hso.read(model, ids, config=hso.HSOConfig(segment=8, steps=1, lr=lr, optimiser="sgd"))
    plain = hso.read(model, ids[:, :8], config=hso.HSOConfig(segment=8, steps=0))
    leaves = [t.detach().clone().requires_grad_(True) for t in plain.leaves()]
    n = len(plain.keys)
    cache = DynamicCache(ddp_cache_data=list(zip(leaves[:n], leaves[n:], strict=True)))
    logits = model(input_ids=ids[:, 8:], cache=cache, use_cache=True,
                   position_ids=torch.arange(8, 16).expand(2, 8)).logits
    nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 9:, None])[..., 0]
    grads = torch.autograd.grad(nll.mean(1).sum(), leaves)
    first = [layer[0] for layer in state.keys + state.values]  # the first segment's states, updated once
    for got, x, g in zip(first, leaves, grads, strict=True):
        torch.testing.assert_close(got.detach(), x.detach() - lr * g, atol=1e-6, rtol=1e-5)


def test_adam_keeps_a_moment_estimate_per_cached_state():
    model = tiny_llama()
    state = hso.read(model, _ids(length=24), config=hso.HSOConfig(segment=8, steps=1))
    assert len(state.optimiser.param_groups) == 3  # one group per segment read
    seen = {id(p) for p in state.optimiser.state}
    first, second, third = ([layer[i] for layer in state.keys + state.values] for i in range(3))
    assert all(id(p) in seen for p in first + second)  # updated by segments 2 and 3
    assert not any(id(p) in seen for p in third)  # nothing after it yet
    assert all(state.optimiser.state[p]["step"] == 2 for p in first)


def test_rows_are_independent_of_their_batch():
    model, ids = tiny_llama(), _ids(batch=3)
    cfg = hso.HSOConfig(segment=8, steps=2, lr=0.1)
    together = hso.read(model, ids, config=cfg).logprobs
    for i in range(3):
        alone = hso.read(model, ids[i: i + 1], config=cfg).logprobs
        torch.testing.assert_close(together[i: i + 1], alone, atol=1e-5, rtol=1e-4, equal_nan=True)


def test_left_padding_is_masked():
    model, ids = tiny_llama(), _ids(batch=2, length=16)
    mask = torch.ones_like(ids)
    mask[1, :8] = 0  # row 1: one segment of padding, then its text
    ids = ids.masked_fill(mask == 0, 0)
    state = hso.read(model, ids, mask, config=hso.HSOConfig(segment=8, steps=1))
    assert torch.isnan(state.logprobs[1, :9]).all() and not torch.isnan(state.logprobs[1, 9:]).any()
    alone = hso.read(model, ids[1:, 8:], config=hso.HSOConfig(segment=8, steps=0)).logprobs
    torch.testing.assert_close(state.logprobs[1:, 9:], alone[:, 1:], atol=1e-5, rtol=1e-5)


def test_hso_lowers_the_loss_of_text_that_repeats():
    model = tiny_llama()
    ids = _ids(batch=2, length=8).repeat(1, 6)  # the same 8 tokens six times
    plain = hso.perplexity(hso.read(model, ids, config=hso.HSOConfig(segment=8, steps=0)))
    opt = hso.perplexity(hso.read(model, ids, config=hso.HSOConfig(segment=8, steps=4, lr=0.05)))
    assert (opt < plain).all()


class _Bump(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores + (torch.arange(scores.shape[-1]) % 5 == 0).to(scores.dtype)


def test_zero_steps_generates_exactly_what_plain_generation_does():
    model = tiny_llama().double()
    ids = _ids(batch=2, length=20)
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, logits_processor=[_Bump()])
    plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
    got = hso.generate(model, ids, config=hso.HSOConfig(segment=8, steps=0), **kw)
    assert torch.equal(got, plain)
    # With steps, the continuation comes from the optimised cache (and still goes through the processor).
    moved = hso.generate(model, ids, config=hso.HSOConfig(segment=8, steps=3, lr=0.5), **kw)
    assert moved.shape == plain.shape and torch.equal(moved[:, :20], ids)


def test_cached_prefix_is_repeated_for_the_batch():
    model = tiny_llama()
    prefix = hso.read_prefix(model, list(range(3, 19)), hso.HSOConfig(segment=8, steps=1))
    cache = prefix.cache_for(4)
    assert cache.get_seq_length() == 16
    assert cache.layers[0].keys.shape[0] == 4
    with pytest.raises(ValueError, match="one-row"):
        hso.read(model, _ids(), config=hso.HSOConfig(segment=8, steps=0)).cache(batch=3)


@pytest.mark.parametrize("kwargs, match", [
    ({"segment": 0}, "segment"), ({"steps": -1}, "steps"), ({"steps": 1.5}, "steps"),
    ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"optimiser": "lbfgs"}, "optimiser"),
    ({"betas": (0.9, 1.0)}, "betas"), ({"eps": 0}, "eps"),
])
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hso.HSOConfig(**kwargs)


def test_bad_inputs_are_refused():
    model = tiny_llama()
    with pytest.raises(TypeError, match="input_ids"):
        hso.read(model, _ids().float())
    with pytest.raises(ValueError, match="attention_mask"):
        hso.read(model, _ids(), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        hso.read(model, torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="config"):
        hso.read(model, _ids(), config={"steps": 1})
    state = hso.read(model, _ids(batch=2), config=hso.HSOConfig(segment=8, steps=0))
    with pytest.raises(ValueError, match="rows"):
        hso.read(model, _ids(batch=3), state=state)
