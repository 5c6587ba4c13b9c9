"""Style prompting: an instruction and/or in-style exemplars from the corpus before the user's prompt.

With a tokenizer that has a chat template (an instruct model), the instruction
and exemplars are one user turn of that template and the user's prompt opens
the assistant's answer, which is how people prompt such a model; otherwise
they are plain paragraphs before the prompt.
"""

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
        chat: "auto" (the tokenizer's chat template when it has one) or "never" (plain paragraphs).
        request: with the chat template, the sentence after the exemplars that asks for the continuation.
    """

    instruction: str = "The following passages are written in the same style."
    exemplars: int = 3
    max_chars: int = 300
    seed: int = 0
    chat: str = "auto"
    request: str = "Continue the text that begins your answer, in the same style as these passages."

    def __post_init__(self):
        if self.chat not in ("auto", "never"):
            raise ValueError(f"`chat` must be 'auto' or 'never', got {self.chat!r}")
        if not isinstance(self.exemplars, int) or self.exemplars < 0:
            raise ValueError(f"`exemplars` must be an int >= 0, got {self.exemplars!r}")
        if self.max_chars < 20:
            raise ValueError(f"`max_chars` must be >= 20, got {self.max_chars}")
        if not self.instruction and self.exemplars == 0:
            raise ValueError("a style prompt needs an `instruction` or `exemplars` > 0")

    def prefix(self, docs: list[str], tokenizer=None) -> str:
        """The prefix: instruction, then exemplars drawn from ``docs``, one a paragraph.

        With ``tokenizer`` and a chat template (and ``chat="auto"``), they and
        :attr:`request` form one user turn, followed by the template's opening
        of the assistant's turn; the user's prompt then starts the answer.
        """
        pool = [d for d in docs if len(d.split()) >= 8] or list(docs)
        if self.exemplars and not pool:
            raise ValueError("the corpus has no document to quote as an exemplar")
        rng = random.Random(self.seed)
        picks = rng.sample(pool, min(self.exemplars, len(pool))) if self.exemplars else []
        parts = [self.instruction] if self.instruction else []
        for doc in picks:
            cut = doc if len(doc) <= self.max_chars else doc[: self.max_chars].rsplit(" ", 1)[0] + " ..."
            parts.append(cut)
        if self.chat == "auto" and tokenizer is not None and getattr(tokenizer, "chat_template", None):
            turn = {"role": "user", "content": "\n\n".join([*parts, self.request])}
            return tokenizer.apply_chat_template([turn], tokenize=False, add_generation_prompt=True)
        return "\n\n".join(parts) + "\n\n"

    def apply(self, docs: list[str], prompts: list[str], tokenizer=None) -> list[str]:
        """Every prompt with the prefix before it."""
        p = self.prefix(docs, tokenizer)
        return [p + q for q in prompts]
