"""GLEU and SARI against worked examples with known scores."""

from __future__ import annotations

import numpy as np
import pytest

from steer.edits.scoring import bleu, gleu, gleu_stats, sari, sari_sentence

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


def test_gleu_penalises_only_source_ngrams_the_reference_lacks():
    # The source has "c" twice, the reference once: keeping both is no penalty (JFLEG's gleu.py
    # drops every source n-gram the reference has), so unigram precision is 5/5.
    assert gleu_stats("a c c b", "a c c b", "a c b x")[2:4] == [3, 4]
    assert gleu_stats("a c c d", "a c c d", "a c b x")[2:4] == [1, 4]  # "d" kept although changed


def _gleu_package(sources, hypotheses, references, iterations=500):
    """The `gleu` package (a port of JFLEG's script) with its seed-compatible draws."""
    from gleu.aggreg import make_hdrn_accum
    from gleu.corpus_main import drn_accum_to_gleu
    from gleu.count import make_dx_xlen, set_tokenization
    from gleu.util import make_id_rindex

    set_tokenization("word")
    rs_dat = [tuple(r) for r in references]
    (drn_accum,) = make_hdrn_accum(4, list(sources), rs_dat, [list(hypotheses)])
    dr_rlen, d_hlen = make_dx_xlen(rs_dat), make_dx_xlen([(h,) for h in hypotheses])[:, 0]
    rindex = make_id_rindex(iterations, len(sources), len(references[0]), True)
    return 100 * float(np.mean([drn_accum_to_gleu(drn_accum, r, dr_rlen, d_hlen) for r in rindex]))


def test_gleu_equals_jfleg_script_on_the_shared_sets(shared_data):
    pytest.importorskip("gleu", reason="the cross-check needs the `gleu` package (steer[eval])")
    from steer.edits.data import load_edit_set

    for split in ("dev", "test"):
        es = load_edit_set("jfleg", split)
        rewrite = [r[0] for r in es.references]  # one annotator's rewrite, scored against all four
        dropped = [" ".join(s.split()[:-1]) for s in es.sources]
        for hyp in (es.sources, rewrite, dropped):
            ours = 100 * gleu(es.sources, hyp, es.references)
            assert ours == pytest.approx(_gleu_package(es.sources, hyp, es.references), abs=1e-9)
    # The JFLEG paper's figure for the uncorrected test sources.
    assert round(100 * gleu(es.sources, es.sources, es.references), 2) == 40.54


def test_bleu_equals_sacrebleu_on_the_shared_sets(shared_data):
    sacrebleu = pytest.importorskip("sacrebleu", reason="the cross-check needs sacrebleu (steer[eval])")
    from steer.edits.data import load_edit_set

    for split in ("train", "test"):
        es = load_edit_set("mrpc", split)
        refs = [r[0] for r in es.references]
        for hyp in (es.sources, [" ".join(s.split()[1:]) for s in es.sources]):
            want = sacrebleu.corpus_bleu(hyp, [refs], tokenize="none").score
            assert bleu(hyp, es.references) == pytest.approx(want, abs=1e-9)
