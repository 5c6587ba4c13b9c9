"""Degeneracy and diversity of a cell's continuations, on words."""

from __future__ import annotations

from collections.abc import Sequence

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from steer.degeneracy import Degeneracy
from steer.judges.heldout import split_context

# Self-BLEU compares each continuation with all the others (quadratic in the
# cell's size); this many evenly spaced hypotheses estimate it well.
SELF_BLEU_HYPOTHESES = 100


class DiversityJudge:
    """Per sample: whether the continuation is degenerate; per cell: distinct-1/2 and self-BLEU.

    Degenerate (``steer.degeneracy.Degeneracy`` on word ids): empty, shorter
    than ``min_len`` words, looping (a repeated word n-gram or a periodic
    tail) or copying a span of the prompt.
    """

    name = "diversity"

    def __init__(self, degeneracy: Degeneracy | None = None):
        self.degeneracy = degeneracy or Degeneracy()

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, list[float]]:
        vocab: dict[str, int] = {}

        def ids(ws):
            return [vocab.setdefault(w, len(vocab)) for w in ws]

        pairs = [split_context(p, c) for p, c in zip(prompts, continuations, strict=True)]
        flags = self.degeneracy.is_degenerate([ids(p) or [0] for p, _ in pairs], [ids(c) for _, c in pairs])
        return {"degenerate": [float(f) for f in flags.tolist()]}

    @staticmethod
    def summary(prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, float]:
        """distinct-1, distinct-2 (unique / all word n-grams, pooled) and self-BLEU (4-gram, smoothed)."""
        conts = [split_context(p, c)[1] for p, c in zip(prompts, continuations, strict=True)]
        out = {}
        for n in (1, 2):
            grams = [tuple(c[i : i + n]) for c in conts for i in range(len(c) - n + 1)]
            out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else float("nan")
        out["self_bleu"] = self_bleu(conts)
        return out


def self_bleu(conts: Sequence[Sequence[str]], max_hypotheses: int = SELF_BLEU_HYPOTHESES) -> float:
    """Mean BLEU-4 (nltk, smoothing method 1) of each continuation against all the others as references.

    High = the continuations resemble each other. At most ``max_hypotheses``
    evenly spaced continuations are scored (each against all the others).
    NaN with fewer than two non-empty continuations.
    """
    conts = [list(c) for c in conts if c]
    if len(conts) < 2:
        return float("nan")
    step = max(1, len(conts) // max_hypotheses)
    picks = list(range(0, len(conts), step))[:max_hypotheses]
    smooth = SmoothingFunction().method1
    scores = [sentence_bleu(conts[:i] + conts[i + 1 :], conts[i], smoothing_function=smooth) for i in picks]
    return sum(scores) / len(scores)
