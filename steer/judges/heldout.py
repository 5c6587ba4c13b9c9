"""Held-out style perplexity: continuations scored by a word-level Kneser-Ney model of the judge split."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from ngram import NGramTable
from steer.judges import JudgeError
from steer.judges.text import words
from steer.metrics import style_nll

UNK = "<unk>"


def split_context(prompt: str, continuation: str) -> tuple[list[str], list[str]]:
    """(context words, continuation words) of prompt + continuation.

    The two are tokenised together, so a continuation that finishes the
    prompt's last word ("walk" + "ed on") is scored as "walked", "on".
    """
    p = words(prompt)
    full = words(prompt + continuation)
    k = 0
    while k < min(len(p), len(full)) and p[k] == full[k]:
        k += 1
    return full[:k], full[k:]


class HeldoutStylePPL:
    """Perplexity of continuations under interpolated Kneser-Ney (orders 1..N) of the judge split's words.

    Words (:func:`steer.judges.text.words`, lowercased) seen fewer than
    ``min_count`` times in the judge split map to ``<unk>``, which thus has
    real counts. ``<unk>`` stands for every such word type, so an unknown
    word costs -log(p(<unk> | h) / n_unk_types): text made of words the
    corpus never uses cannot look in-style by being all ``<unk>``.
    Per sample: the summed negative log-likelihood (nats) of the
    continuation's words given the prompt and earlier words, and their
    number; a cell's perplexity is exp(sum of NLL / sum of words). It shares
    nothing with the steering table: other text (the judge split), other
    units (words, not the model's tokens).

    Example:
        >>> judge = HeldoutStylePPL(corpus.judge, name="don_quixote")   # doctest: +SKIP
        >>> judge.score(["The old man"], [" rode out on his horse."])     # doctest: +SKIP
        {'heldout_nll': [21.3], 'heldout_words': [6]}
    """

    def __init__(self, judge_docs: Sequence[str], name: str = "", order: int = 3, min_count: int = 2,
                 discount: float = 0.75):
        if isinstance(judge_docs, str):
            raise TypeError("`judge_docs` must be a list of documents, got a single string")
        doc_words = [[w.lower() for w in words(d)] for d in judge_docs]
        counts = Counter(w for ws in doc_words for w in ws)
        if sum(counts.values()) < 1000:
            raise JudgeError(f"the judge split of {name or 'this corpus'} has {sum(counts.values())} words; "
                             "at least 1,000 are needed for a held-out perplexity")
        self.vocab = {UNK: 0}
        for w, c in sorted(counts.items()):
            if c >= min_count:
                self.vocab[w] = len(self.vocab)
        # Word types folded into <unk> (at least 1, so that log stays finite).
        self.unk_types = max(1, len(counts) - (len(self.vocab) - 1))
        self.name = f"heldout_style_ppl[{name}]" if name else "heldout_style_ppl"
        self.discount = discount
        self.table = NGramTable.from_token_ids([self.ids(ws) for ws in doc_words], len(self.vocab), order)

    def ids(self, ws: Sequence[str]) -> list[int]:
        return [self.vocab.get(w.lower(), 0) for w in ws]

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> dict[str, list[float]]:
        ctx, cont = zip(*(split_context(p, c) for p, c in zip(prompts, continuations, strict=True)), strict=True)
        cont_ids = [self.ids(c) for c in cont]
        per = style_nll(self.table, [self.ids(c) for c in ctx], cont_ids, smoothing="kneser_ney",
                        discount=self.discount)
        unk_cost = math.log(self.unk_types)
        return {"heldout_nll": [n + unk_cost * ids.count(0) for (n, _), ids in zip(per, cont_ids, strict=True)],
                "heldout_words": [float(k) for _, k in per]}

