"""The cross-model fluency judge: the judge's own tokens, scored after the prompt's, as the model scores them."""

from __future__ import annotations

import math

import pytest
import torch

from steer.judges.fluency import CrossModelFluency
from steer.metrics import base_nll
from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def judge(llama2_tokenizer):
    return CrossModelFluency(tiny_llama(len(llama2_tokenizer)), llama2_tokenizer, name="tiny")


def test_a_continuation_is_scored_after_its_prompt(judge, llama2_tokenizer):
    """The values are the judge model's log-likelihoods of the continuation's tokens given the prompt's."""
    tok = llama2_tokenizer
    prompt, text = "Once upon a time", " there was a king"
    (nll, n), = judge.nll([prompt], [text])
    head, whole = tok(prompt).input_ids, tok(prompt + text).input_ids
    assert whole[: len(head)] == head and n == len(whole) - len(head)
    assert nll == pytest.approx(base_nll(judge.model, [head], [whole[len(head):]])[0][0], rel=1e-6)
    with torch.no_grad():  # by hand: the sum of -log p of each continuation token
        logp = judge.model(torch.tensor([whole])).logits[0].log_softmax(-1)
    assert nll == pytest.approx(-sum(float(logp[t - 1, whole[t]]) for t in range(len(head), len(whole))), rel=1e-5)


def test_a_prompt_that_ends_inside_a_word_scores_the_merged_token(judge, llama2_tokenizer):
    (_, n), = judge.nll(["Once upon a ti"], ["me there"])
    assert n == 2  # "time" (prompt and continuation in one token) and " there"


def test_empty_continuations_batches_and_bad_input(judge):
    got = judge.nll(["Once upon a time", "The machine", "A"], [" there was", "", " dreamed of light"])
    assert got[1] == (0.0, 0) and got[0][1] == 2 and all(math.isfinite(v) and v >= 0 for v, _ in got)
    (alone, n), = judge.nll(["A"], [" dreamed of light"])  # the same alone as in a padded batch
    assert n == got[2][1] and alone == pytest.approx(got[2][0], rel=1e-5)
    assert judge.perplexity(["A"], [""]) != judge.perplexity(["A"], [""])  # NaN: nothing to score
    with pytest.raises(ValueError, match="same length"):
        judge.nll(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="`name`"):
        CrossModelFluency(judge.model, judge.tokenizer, name=None)
