"""Style prompting: an instruction and/or in-style exemplars from the corpus before the user's prompt.

With a tokenizer that has a chat template (an instruct model), the instruction
and exemplars are one user turn of that template and the user's prompt opens
the assistant's answer, which is how people prompt such a model; otherwise
they are plain paragraphs before the prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar, Literal

from steer import checks
from steer.options import Options, option


@dataclass(frozen=True)
class StylePrompt(Options):
    """A prefix put before every user prompt: the ``prompt`` option family."""

    family: ClassVar[str] = "prompt"
    instruction: str = option("The following passages are written in the same style.",
                              "text before the exemplars (\"\" for none)")
    exemplars: int = option(3, "number of corpus documents quoted as examples (0 for none)")
    max_chars: int = option(300, "each exemplar is cut at a word boundary to at most this many characters")
    seed: int = option(0, "which documents are drawn")
    chat: Literal["auto", "never"] = option("auto", "auto: the tokenizer's chat template when it has one; never: "
                                                    "plain paragraphs")
    request: str = option("Continue the text that begins your answer, in the same style as these passages.",
                          "with the chat template, the sentence after the exemplars that asks for the continuation")

    def __post_init__(self):
        checks.choice("chat", self.chat, ("auto", "never"))
        checks.integer("exemplars", self.exemplars, low=0)
        checks.integer("max_chars", self.max_chars, low=20)
        checks.integer("seed", self.seed)
        checks.text("instruction", self.instruction)
        checks.text("request", self.request)
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
