"""GLEU and SARI against worked examples with known scores."""

from __future__ import annotations

import pytest

from steer.edits.metrics import bleu, gleu, gleu_stats, sari, sari_sentence

REFS = ["About 95 species are currently known .", "About 95 species are now accepted .",
        "95 species are now accepted ."]
SRC = "About 95 species are currently accepted ."


@pytest.mark.parametrize("output, want", [
    ("About 95 you now get in .", 0.2682782411698074),
    ("About 95 species are now agreed .", 0.5889995423074248),
    ("About 95 species are currently agreed .", 0.5071608864657479),
])
def test_sari_matches_xu_et_al_example(output, want):
    assert sari_sentence(SRC, output, REFS) == pytest.approx(want, abs=1e-9)


def test_sari_corpus_is_mean_times_100():
    outs = ["About 95 you now get in .", "About 95 species are now agreed ."]
    assert sari([SRC, SRC], outs, [REFS, REFS]) == pytest.approx(100 * (0.2682782411698074 + 0.5889995423074248) / 2)


def test_gleu_hand_worked_examples():
    # per order: matched - kept-but-changed over hypothesis n-grams; 5/6, 4/5, 3/4, 2/3, BP = 1
    assert gleu(["a b c d e f"], ["a b x d e g"], [["a b x d e f"]]) == pytest.approx((1 / 3) ** 0.25)
    # keeping "c" that the reference changed is penalised until a precision hits 0
    assert gleu_stats("a b c d e f", "a b c d e f", "a b x d e f")[2:6] == [4, 6, 1, 5]
    assert gleu(["a b c d e f"], ["a b c d e f"], [["a b x d e f"]]) == 0.0
    # brevity penalty exp(1 - r/c) with c = 4, r = 5
    assert gleu(["a b c d"], ["a b c d"], [["a b c d e"]]) == pytest.approx(0.7788007830714049)
    # corpus level sums the statistics: 9/10, 7/8, 5/6, 3/4
    two = gleu(["a b c d e f", "p q z s"], ["a b x d e g", "p q r s"], [["a b x d e f"], ["p q r s"]])
    assert two == pytest.approx((0.9 * 0.875 * (5 / 6) * 0.75) ** 0.25)


def test_gleu_multi_reference_is_mean_over_draws():
    # the same reference twice gives the single-reference score
    assert gleu(["a b c d e f"], ["a b x d e g"], [["a b x d e f"] * 2]) == pytest.approx((1 / 3) ** 0.25)
    score = gleu(["a b c d"], ["a b c d"], [["a b c d", "a b c d e"]], iterations=400)
    assert 0.7788 < score < 1.0


def test_bleu_and_errors():
    assert bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="lengths differ"):
        gleu(["a"], ["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="reference"):
        sari_sentence("a", "a", [])
