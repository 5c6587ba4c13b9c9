"""Held-out judges: text only, identical text scored identically, refusals, and what each measures."""

from __future__ import annotations

import math

import pytest

from steer.corpora import Corpus, split_steer_judge
from steer.judges import JudgeError
from steer.judges.classifier import StyleClassifier, make_chunks
from steer.judges.diversity import DiversityJudge, self_bleu
from steer.judges.heldout import HeldoutStylePPL, split_context
from steer.judges.panel import JudgePanel
from steer.judges.text import normalise_text, words
from steer.metrics import pooled_perplexity

pytest.importorskip("sklearn")

PIRATE = [f"Arr, matey {i}, hoist the sails and fetch the rum from the hold, ye scurvy dog." for i in range(400)]
COURT = [f"The court finds, in matter {i}, that the defendant shall pay the costs of the proceedings."
         for i in range(400)]


def _corpus(name, docs):
    steer, judge, info = split_steer_judge(docs, 0.3)
    return Corpus(name, None, steer, judge, "0" * 64, split=info)


def test_normalisation_removes_typography_as_a_cue():
    curly = normalise_text("\u201cNo\u2014_never_,\u201d  she said\u2026")
    assert curly == normalise_text('"No -- never," she said...')
    assert words("He didn\u2019t go.") == ["He", "didn't", "go", "."]


def test_context_split_handles_a_continuation_that_ends_the_prompts_last_word():
    assert split_context("The old man walk", "ed on the road") == (["The", "old", "man"], ["walked", "on", "the",
                                                                                            "road"])
    assert split_context("The old man", " walked.") == (["The", "old", "man"], ["walked", "."])


def test_heldout_ppl_prefers_in_style_text_and_refuses_too_little_text():
    judge = HeldoutStylePPL(PIRATE[::2], name="pirate")
    prompts = ["Then", "Then"]
    s = judge.score(prompts, [" arr, matey, hoist the sails", " the court finds that the defendant"])
    ppl = [math.exp(n / k) for n, k in zip(s["heldout_nll"], s["heldout_words"], strict=True)]
    assert ppl[0] < ppl[1] / 5
    assert pooled_perplexity([0.0], [0.0]) != pooled_perplexity([0.0], [0.0])  # NaN
    with pytest.raises(JudgeError, match="at least 1,000"):
        HeldoutStylePPL(["a few words only"], name="tiny")


def test_classifier_scores_by_style_and_refuses_when_it_cannot_tell_classes_apart():
    clf = StyleClassifier({"pirate": PIRATE, "court": COURT}, lengths=[8, 12, 16])
    assert clf.report["heldout_accuracy"] >= 0.95
    s = clf.for_target("pirate").score(["x", "x"], [" hoist the sails, matey, arr", " the court finds the costs"])
    assert s["judge_hit"] == [1.0, 0.0] and s["judge_p_target"][0] > 0.5 > s["judge_p_target"][1]
    # Regression: an empty continuation was judged by the classifier's prior and could count as a hit.
    empty = clf.for_target("pirate").score(["x", "x"], ["", "  \n"])
    assert empty == {"judge_p_target": [0.0, 0.0], "judge_hit": [0.0, 0.0]}
    same = [f"the same words again and again {i % 7}" for i in range(600)]
    with pytest.raises(JudgeError, match="refuses to judge"):
        StyleClassifier({"a": same, "b": same}, lengths=[6])
    with pytest.raises(ValueError, match="`target`"):
        clf.for_target("nope")


def test_chunk_lengths_follow_the_given_lengths():
    chunks = make_chunks(PIRATE[:50], [5, 9], seed=0)
    assert {len(c.split()) for c in chunks} <= {5, 9} and len(chunks) > 20


def test_diversity_flags_loops_and_measures_sameness():
    d = DiversityJudge()
    s = d.score(["A", "A", "A"], [" the cat sat on the mat and then it slept by the door",
                                  " the first time, the first time, the first time, the first time",
                                  ""])
    assert s["degenerate"] == [0.0, 1.0, 1.0]
    same = [["one", "two", "three", "four", "five"]] * 5
    assert self_bleu(same) == pytest.approx(1.0)
    summary = d.summary(["p"] * 2, [" a b c d", " a b c d"])
    assert summary["distinct_1"] == 0.5 and summary["self_bleu"] == pytest.approx(1.0, abs=1e-6)


def test_every_judge_scores_identical_text_identically_whoever_wrote_it():
    panel = JudgePanel({"pirate": _corpus("pirate", PIRATE)}, {"court": _corpus("court", COURT)},
                       neutral=_corpus("neutral", [f"It was a fine day {i} in the town." for i in range(400)]),
                       lengths=[8, 12])
    prompts = ["Once", "Then", "Once"]
    texts = [" hoist the sails, arr", " the court finds", " a fine day in town"]
    first = panel.score("pirate", prompts, texts)
    # the same texts, as if written by another method and in another order
    again = panel.score("pirate", prompts[::-1], texts[::-1])
    for key in first:
        assert first[key] == again[key][::-1], key
    report = panel.report()
    assert report["classifier"]["classes"] == ["court", "neutral", "pirate"]


def test_a_judge_built_on_steer_text_is_refused():
    leaky = Corpus("pirate", None, PIRATE, PIRATE[:50], "0" * 64)
    with pytest.raises(ValueError, match="overlaps the steer split"):
        JudgePanel({"pirate": leaky}, kinds=["heldout_ppl"])


def test_a_classifier_that_cannot_tell_corpora_apart_is_left_out_and_the_others_still_judge():
    def same(k):  # one text for every class; each number occurs once, so it is no feature
        return [f"the same words again and again {3 * i + k} and once more" for i in range(600)]

    panel = JudgePanel({"a": _corpus("a", same(0))}, {"b": _corpus("b", same(1))},
                       neutral=_corpus("neutral", same(2)), lengths=[6])
    assert panel.classifier is None
    report = panel.report()["classifier"]
    assert "refuses to judge" in report["refused"] and "larger corpus" in report["how_to_get_it"]
    assert report["report"]["heldout_accuracy"] < 0.75
    scores = panel.score("a", ["x"], [" the same words again"])
    assert "judge_hit" not in scores and "heldout_nll" in scores and "degenerate" in scores
