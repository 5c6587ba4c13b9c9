"""Held-out judges: they read text only, are built only from a corpus's judge split, and never see a method.

Every judge has ``name`` and ``score(prompts, continuations) -> {measure: per-sample values}``;
identical text gets identical scores whoever wrote it.

- :class:`~steer.judges.heldout.HeldoutStylePPL`: word-level interpolated Kneser-Ney of the judge split.
- :class:`~steer.judges.classifier.StyleClassifier`: TF-IDF word and character n-grams + logistic
  regression over every corpus and a ``neutral`` class (needs ``steer[eval]``, scikit-learn).
- :class:`~steer.judges.diversity.DiversityJudge`: degenerate continuations, distinct-n, self-BLEU.
- :mod:`~steer.judges.stats`: bootstrap intervals, per cell and paired over prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Judge(Protocol):
    """What the sweep asks of a judge."""

    name: str

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, list[float]]:
        """Per-sample values of each measure the judge reports (one list per measure, in input order)."""
        ...


class JudgeError(ValueError):
    """A judge that cannot be trusted (too little judge text, too inaccurate) refuses to judge."""
