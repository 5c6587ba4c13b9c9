"""Style prompting: an instruction and/or in-style exemplars from the corpus before the user's prompt."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class StylePrompt:
    """A prefix put before every user prompt.

    Attributes:
        instruction: text such as "Write in the style of the examples." ("" for none).
        exemplars: number of corpus documents quoted as examples (0 for none).
        max_chars: each exemplar is cut at a word boundary to at most this many characters.
        seed: which documents are drawn.
    """

    instruction: str = "The following passages are written in the same style."
    exemplars: int = 3
    max_chars: int = 300
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.exemplars, int) or self.exemplars < 0:
            raise ValueError(f"`exemplars` must be an int >= 0, got {self.exemplars!r}")
        if self.max_chars < 20:
            raise ValueError(f"`max_chars` must be >= 20, got {self.max_chars}")
        if not self.instruction and self.exemplars == 0:
            raise ValueError("a style prompt needs an `instruction` or `exemplars` > 0")

    def prefix(self, docs: list[str]) -> str:
        """The prefix: instruction, then exemplars drawn from ``docs``, one a paragraph."""
        pool = [d for d in docs if len(d.split()) >= 8] or list(docs)
        if self.exemplars and not pool:
            raise ValueError("the corpus has no document to quote as an exemplar")
        rng = random.Random(self.seed)
        picks = rng.sample(pool, min(self.exemplars, len(pool))) if self.exemplars else []
        parts = [self.instruction] if self.instruction else []
        for doc in picks:
            cut = doc if len(doc) <= self.max_chars else doc[: self.max_chars].rsplit(" ", 1)[0] + " ..."
            parts.append(cut)
        return "\n\n".join(parts) + "\n\n"

    def apply(self, docs: list[str], prompts: list[str]) -> list[str]:
        """Every prompt with the prefix before it."""
        p = self.prefix(docs)
        return [p + q for q in prompts]
