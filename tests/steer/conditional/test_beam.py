"""Conditional beam search: weight-0 identity, beam reordering, hard constraints, head files, training."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

from steer.conditional.beam import ConditionalBeam, HiddenStateTap
from steer.conditional.constraints import HardConstraints, NoNgramLoop, hard_constraints
from steer.conditional.head import PrefixHead
from steer.conditional.train import AttrTrainConfig, auc, train_attribute_model
from steer.degeneracy import Degeneracy
from tests.conftest import tiny_gpt2, tiny_llama

V = 48


def _head(model, seed=0):
    torch.manual_seed(seed)
    d = model.config.hidden_size
    head = PrefixHead(d, model.get_input_embeddings().weight.shape[1], 16)
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(5)  # a head with strong opinions, so it changes the search
    return head.eval()


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("beams", [1, 4])
def test_weight_zero_is_plain_beam_search(factory, beams):
    model = factory(V)
    ids = torch.tensor([[1, 5, 6, 7], [1, 9, 10, 11]])
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, num_beams=beams,
              do_sample=False, pad_token_id=0)
    plain = model.generate(**kw)
    with HiddenStateTap(model) as tap:
        zero = model.generate(**kw, logits_processor=LogitsProcessorList(
            [ConditionalBeam(_head(model), tap, model, weight=0.0, top_m=2 * beams)]))
        strong = model.generate(**kw, logits_processor=LogitsProcessorList(
            [ConditionalBeam(_head(model), tap, model, weight=50.0, top_m=2 * beams)]))
    assert torch.equal(plain, zero)
    assert strong.shape[0] == 2


class _CheckStates:
    """A processor that recomputes each row's last hidden state from input_ids and compares."""

    def __init__(self, model, tap):
        self.model, self.tap, self.calls = model, tap, 0

    def __call__(self, input_ids, scores):
        seen = self.tap.last.clone()
        with torch.no_grad(), HiddenStateTap(self.model) as fresh:
            self.model(input_ids=input_ids)
            want = fresh.last
        torch.testing.assert_close(seen, want, rtol=1e-4, atol=1e-4)
        self.calls += 1
        return scores


def test_tapped_states_follow_beam_reordering():
    model = tiny_llama(V)
    ids = torch.tensor([[1, 5, 6, 7], [1, 9, 10, 11]])
    with HiddenStateTap(model) as tap:
        check = _CheckStates(model, tap)
        cb = ConditionalBeam(_head(model), tap, model, weight=3.0, top_m=8)
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, num_beams=4,
                       do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([cb, check]))
    assert check.calls == 6


def test_processor_contract():
    model = tiny_llama(V)
    head = _head(model)
    with HiddenStateTap(model) as tap:
        model(input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]))
        scores = torch.randn(2, V)
        scores[:, :5] = float("-inf")
        out = ConditionalBeam(head, tap, model, weight=1.0, top_m=10)(torch.zeros(2, 3, dtype=torch.long), scores)
        h = tap.last
    assert torch.isneginf(out[:, :5]).all() and not torch.isnan(out).any()
    changed = (out != scores).sum(1)
    assert (changed <= 10).all() and (changed > 0).all()
    # The bonus from the vocabulary's precomputed token features is the head's own.
    top = scores.topk(10, dim=-1).indices
    emb = model.get_input_embeddings().weight.detach()[top]
    want = scores.scatter_add(1, top, head.log_prob_ok(h, emb).detach())
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(weight=-1.0), ValueError, "`weight`"), (dict(weight=float("nan")), ValueError, "`weight`"),
    (dict(top_m=0), ValueError, "`top_m`"), (dict(head="x"), TypeError, "`head`"),
])
def test_bad_processor_args(kw, exc, match):
    model = tiny_llama(V)
    with HiddenStateTap(model) as tap:
        args = dict(head=_head(model), tap=tap, model=model, weight=1.0, top_m=4) | kw
        with pytest.raises(exc, match=match):
            ConditionalBeam(**args)


def test_without_tap_is_a_clear_error():
    model = tiny_llama(V)
    tap = HiddenStateTap(model)
    with pytest.raises(RuntimeError, match="HiddenStateTap"):
        ConditionalBeam(_head(model), tap, model)(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, V))


def test_head_round_trip_and_refusals(tmp_path):
    model = tiny_llama(V)
    head = _head(model)
    head.save(tmp_path / "h.safetensors", model, extra={"auc": 0.8})
    loaded = PrefixHead.load(tmp_path / "h.safetensors", model)
    h, e = torch.randn(3, 32), torch.randn(3, 5, 32)
    torch.testing.assert_close(loaded.logits(h, e), head.logits(h, e))
    assert loaded.meta == {"auc": 0.8}
    with pytest.raises(ValueError, match="another base model"):
        PrefixHead.load(tmp_path / "h.safetensors", tiny_llama(V, seed=1))
    with pytest.raises(ValueError, match="vocab size"):
        PrefixHead.load(tmp_path / "h.safetensors", tiny_llama(V + 1))
    with pytest.raises(FileNotFoundError, match="train-attr"):
        PrefixHead.load(tmp_path / "none.safetensors", model)


def test_hard_constraints_use_transformers_min_length():
    procs = hard_constraints(Degeneracy(min_len=4), prompt_length=3, eos_token_id=2)
    scores = procs[0](torch.tensor([[1, 5, 6, 7]]), torch.zeros(1, V))
    assert torch.isneginf(scores[0, 2])


def test_hard_constraints_never_empty_a_row():
    # Before the minimum length only EOS (2) and the loop's next token (5) are left finite in row 0:
    # both rules would ban them, so the row keeps its scores; row 1, all finite, gets both bans.
    proc = HardConstraints(Degeneracy(min_len=10, ngram=2, repeats=2), prompt_length=1, eos_token_id=2)
    ids = torch.tensor([[1, 4, 5, 4]] * 2)
    scores = torch.zeros(2, V)
    scores[0] = float("-inf")
    scores[0, [2, 5]] = 0.0
    out = proc(ids, scores)
    assert torch.equal(out[0], scores[0])
    assert torch.isneginf(out[1, [2, 5]]).all() and torch.isfinite(out[1]).sum() == V - 2


@pytest.mark.parametrize("eos", [2, [2, 5], [3, 99], None])
def test_hard_constraints_in_one_pass_equal_transformers_min_length_then_the_loop_ban(eos):
    g = torch.Generator().manual_seed(0)
    deg = Degeneracy(min_len=6, ngram=2, repeats=2)
    fused = HardConstraints(deg, prompt_length=3, eos_token_id=eos)
    loop = NoNgramLoop(deg.ngram, deg.repeats, prompt_length=3)
    for length in range(0, 12):
        ids = torch.randint(0, 5, (4, 3 + length), generator=g)
        scores = torch.randn(4, 12, generator=g)
        scores[1, 2] = float("-inf")
        want = scores
        if eos is not None:
            want = MinNewTokensLengthLogitsProcessor(3, deg.min_len, eos)(ids, want)
        torch.testing.assert_close(fused(ids, scores), loop(ids, want))
    with pytest.raises(ValueError, match="`eos_token_id`"):
        HardConstraints(deg, 3, eos_token_id=-1)
    with pytest.raises(TypeError, match="`degeneracy`"):
        HardConstraints({"min_len": 3}, 3, eos_token_id=2)
    ids, scores = torch.tensor([[1, 2, 3, 4]]), torch.randn(1, 12)
    torch.testing.assert_close(HardConstraints(deg, 3, torch.tensor([2, 5]))(ids, scores),
                               HardConstraints(deg, 3, [2, 5])(ids, scores))


def test_auc():
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.75)


def test_train_on_real_model_and_generate(aidreams, tmp_path):
    model, tok = aidreams
    prompts = ["Once upon a time", "The machine dreamed of", "In the data", "Pixels", "A network of",
               "Silent code", "The algorithm", "Electric dreams"]
    cfg = AttrTrainConfig(max_new_tokens=16, samples=1, beams=[1, 3], epochs=2, heldout=0.25, chunk=4,
                          degeneracy=dict(min_len=3))
    head, report = train_attribute_model(model, tok, prompts, cfg)
    assert report["n_examples"] > 50 and 0 <= report["heldout_accuracy"] <= 1
    head.save(tmp_path / "h.safetensors", model, extra=report)
    head = PrefixHead.load(tmp_path / "h.safetensors", model)
    from steer.models import encode_prompts

    enc = encode_prompts(tok, prompts[:2])
    kw = dict(**enc, max_new_tokens=12, num_beams=3, do_sample=False, pad_token_id=tok.pad_token_id)
    plain = model.generate(**kw)
    with HiddenStateTap(model) as tap:
        zero = model.generate(**kw, logits_processor=LogitsProcessorList(
            [ConditionalBeam(head, tap, model, weight=0.0, top_m=6)]))
        cond = model.generate(**kw, logits_processor=LogitsProcessorList(
            [ConditionalBeam(head, tap, model, weight=1.0, top_m=6)]))
    assert torch.equal(plain, zero) and cond.shape[0] == 2
    with pytest.raises(ValueError, match="tokenises to nothing"):
        train_attribute_model(model, tok, ["ok prompt", ""], cfg)
    with pytest.raises(ValueError, match="`beams`"):
        AttrTrainConfig(beams=[0])


