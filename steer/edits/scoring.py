"""Task metrics for edit tasks, each from its published definition.

- GLEU (Napoles et al. 2015, updated 2016), the metric JFLEG reports, equal to
  JFLEG's script (tested against the ``gleu`` package's port of it on the
  shared JFLEG sets, to 1e-9). Not nltk's ``gleu_score``, which is Google's
  different sentence-level GLEU.
- SARI (Xu et al. 2016) for simplification, tested on the paper's own example
  (EASSE and ``evaluate``'s SARI do not install offline).
- BLEU (nltk's corpus BLEU) for paraphrase, equal to sacreBLEU with
  ``tokenize="none"`` on the shared MRPC sets (tested); they differ only in
  how a zero n-gram count is smoothed.

All work on whitespace tokens of the given strings (the shared sets are tokenised).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def gleu_stats(source: str, hypothesis: str, reference: str, order: int = 4) -> list[int]:
    """[c, r, num_1, den_1, ..., num_N, den_N] for one sentence and one reference.

    num_n = max(0, |H_n & R_n| - |H_n & S'_n|): n-grams of the hypothesis that
    match the reference, minus those it kept from the source although the
    reference does not have them (multiset intersections; S'_n holds the source
    n-grams absent from the reference, with their source counts, as JFLEG's
    ``gleu.py`` does); den_n = max(0, c + 1 - n).
    """
    h, s, r = hypothesis.split(), source.split(), reference.split()
    stats = [len(h), len(r)]
    for n in range(1, order + 1):
        hn, sn, rn = _ngrams(h, n), _ngrams(s, n), _ngrams(r, n)
        matched = sum((hn & rn).values())
        penalty = sum((hn & Counter({g: k for g, k in sn.items() if g not in rn})).values())
        stats += [max(matched - penalty, 0), max(len(h) + 1 - n, 0)]
    return stats


def gleu_from_stats(stats: Sequence[float]) -> float:
    """GLEU = BP * exp(mean_n log(num_n / den_n)), BP = exp(min(0, 1 - r/c)); 0 if any stat is 0."""
    if any(x == 0 for x in stats):
        return 0.0
    c, r = stats[0], stats[1]
    nums, dens = stats[2::2], stats[3::2]
    log_prec = sum(math.log(x / y) for x, y in zip(nums, dens, strict=True)) / len(nums)
    return math.exp(min(0.0, 1 - r / c) + log_prec)


def gleu(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[Sequence[str]],
         order: int = 4, iterations: int = 500) -> float:
    """Corpus GLEU in [0, 1].

    Statistics are summed over sentences; with several references per
    sentence, each of ``iterations`` rounds picks one reference per sentence
    and the score is the mean over rounds. The picks are JFLEG's script's
    (round i seeds Python's ``random`` with 101 i and draws
    ``int(random() * n_refs)`` per sentence), so scores equal its output
    (tested against the ``gleu`` package's port of it: JFLEG test, sources as
    output, 40.54 as the JFLEG paper reports).

    Example:
        >>> round(gleu(["a b c d"], ["a b c d"], [["a b c d e"]]), 4)  # brevity penalty exp(-1/4)
        0.7788
    """
    _check_lengths(sources, hypotheses, references)
    n_refs = [len(r) for r in references]
    if min(n_refs, default=1) == 0:
        raise ValueError("every source needs at least one reference")
    cache = [[gleu_stats(s, h, r, order) for r in refs]
             for s, h, refs in zip(sources, hypotheses, references, strict=True)]
    if max(n_refs, default=1) == 1:
        return gleu_from_stats(np.sum([c[0] for c in cache], axis=0).tolist())
    scores = []
    for it in range(iterations):
        rng = random.Random(it * 101)
        pick = [cache[i][int(rng.random() * n_refs[i])] for i in range(len(cache))]
        scores.append(gleu_from_stats(np.sum(pick, axis=0).tolist()))
    return float(np.mean(scores))


def _sari_ngram(s: list, c: list, refs: list[list], n_refs: int) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order (Xu et al. 2016)."""
    r_all = Counter(g for ref in refs for g in ref)
    s_cnt, c_cnt = Counter(s), Counter(c)
    s_rep = Counter({g: k * n_refs for g, k in s_cnt.items()})
    c_rep = Counter({g: k * n_refs for g, k in c_cnt.items()})

    keep = s_rep & c_rep
    keep_good = keep & r_all
    keep_all = s_rep & r_all
    kp = sum(keep_good[g] / keep[g] for g in keep) / len(keep) if keep else 0.0
    kr = sum(keep_good[g] / keep_all[g] for g in keep_all if g in keep_good) / len(keep_all) if keep_all else 0.0
    keep_f = 2 * kp * kr / (kp + kr) if kp + kr > 0 else 0.0

    dele = s_rep - c_rep
    dele_good = dele - r_all
    dp = sum(dele_good[g] / dele[g] for g in dele) / len(dele) if dele else 0.0

    add = set(c_cnt) - set(s_cnt)
    add_good = add & set(r_all)
    add_all = set(r_all) - set(s_cnt)
    ap = len(add_good) / len(add) if add else 0.0
    ar = len(add_good) / len(add_all) if add_all else 0.0
    add_f = 2 * ap * ar / (ap + ar) if ap + ar > 0 else 0.0
    return keep_f, dp, add_f


def sari_sentence(source: str, output: str, references: Sequence[str]) -> float:
    """SARI of one sentence in [0, 1]: the mean of keep F1, deletion precision and addition F1,
    each averaged over n = 1..4, on lower-cased whitespace tokens.

    Example (Xu et al. 2016's own example):
        >>> refs = ["About 95 species are currently known .", "About 95 species are now accepted .",
        ...         "95 species are now accepted ."]
        >>> round(sari_sentence("About 95 species are currently accepted .", "About 95 you now get in .", refs), 6)
        0.268278
    """
    if not references:
        raise ValueError("`references` must hold at least one reference")
    s, c = source.lower().split(), output.lower().split()
    rs = [r.lower().split() for r in references]
    def grams(toks: list[str], n: int) -> list[tuple]:
        return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]

    parts = [_sari_ngram(grams(s, n), grams(c, n), [grams(r, n) for r in rs], len(rs)) for n in range(1, 5)]
    keep, dele, add = (sum(p[k] for p in parts) / 4 for k in range(3))
    return (keep + dele + add) / 3


def sari(sources, outputs, references) -> float:
    """Corpus SARI in [0, 100]: 100 x the mean sentence SARI."""
    _check_lengths(sources, outputs, references)
    return 100 * float(np.mean([sari_sentence(s, o, r) for s, o, r in
                                zip(sources, outputs, references, strict=True)]))


def bleu(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 in [0, 100] with nltk (whitespace tokens, method-1 smoothing)."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} reference lists")
    return 100 * corpus_bleu([[r.split() for r in refs] for refs in references], [o.split() for o in outputs],
                             smoothing_function=SmoothingFunction().method1)


def _check_lengths(sources, outputs, references) -> None:
    if not (len(sources) == len(outputs) == len(references)):
        raise ValueError(f"lengths differ: {len(sources)} sources, {len(outputs)} outputs, "
                         f"{len(references)} reference lists")
