"""Fluency judged by a model the method does not use: perplexity of continuations under another model.

``base_ppl``, the perplexity of a continuation under the unsteered model itself, is scored by the
model the method steers, which rewards text near that model's own mode. :class:`CrossModelFluency`
scores the same texts under a second model, ideally of another family (SmolLM2's continuations
under Gemma 3, Gemma 3's under SmolLM2): ``cross_ppl``.

Each sample is read as text, in the judge's own tokens: the prompt and the prompt followed by the
continuation are encoded in the judge's document format (:func:`steer.models.document_ids`), and
the tokens of the second that are not a prefix shared with the first are scored, given the ones
before them. Where the tokenizer merges the prompt's last characters with the continuation's first
(a prompt that ends inside a word), the merged token counts as continuation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from steer import checks


class CrossModelFluency:
    """The negative log-likelihood of continuations under a judge model, per sample, for ``cross_ppl``.

    Args:
        model, tokenizer: the judge (a causal LM and its tokenizer), frozen.
        name: how results name the judge (its model's source).
        batch_size: samples per forward pass.

    Example:
        >>> import torch
        >>> from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
        >>> tok = AutoTokenizer.from_pretrained("../shared/data/tokenizers/llama2/hf")
        >>> _ = torch.manual_seed(0)
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
        ...                                      num_hidden_layers=1, num_attention_heads=4))
        >>> judge = CrossModelFluency(model, tok, name="tiny")
        >>> [n for _, n in judge.nll(["Once upon a time", "Once upon a ti"], [" there was", "me there"])]
        [2, 2]

        The second prompt ends inside "time": the judge's token "time" holds both, and is scored
        with the continuation ("time", " there").
    """

    def __init__(self, model, tokenizer, name: str, batch_size: int = 16):
        self.model, self.tokenizer = model, tokenizer
        self.name = checks.text("name", name)
        self.batch_size = checks.integer("batch_size", batch_size, low=1)

    @classmethod
    def load(cls, source: str, batch_size: int = 16) -> CrossModelFluency:
        """The judge model at ``source`` (a folder, GGUF file, packaged model or hub id: :func:`steer.load_model`)."""
        from steer.models import load_model

        model, tokenizer = load_model(source)
        return cls(model, tokenizer, name=str(source), batch_size=batch_size)

    def nll(self, prompts: Sequence[str], texts: Sequence[str]) -> list[tuple[float, int]]:
        """Per sample, (sum of -log p_judge over the continuation's tokens, their number); (0.0, 0) for an
        empty continuation."""
        from steer.metrics import base_nll
        from steer.models import document_ids

        if isinstance(prompts, str) or isinstance(texts, str) or len(prompts) != len(texts):
            raise ValueError(f"`prompts` and `texts` must be lists of the same length, got {len(prompts)} and "
                             f"{len(texts)}")
        if not prompts:
            return []
        heads = document_ids(self.tokenizer, list(prompts))
        whole = document_ids(self.tokenizer, [p + t for p, t in zip(prompts, texts, strict=True)])
        contexts, conts = [], []
        for head, ids in zip(heads, whole, strict=True):
            k = 0  # the longest prefix the two encodings share: the prompt's own tokens
            while k < min(len(head), len(ids)) and head[k] == ids[k]:
                k += 1
            k = max(k, 1)  # the document's first token is context, never scored
            contexts.append(ids[:k])
            conts.append(ids[k:])
        return base_nll(self.model, contexts, conts, self.batch_size)

    def perplexity(self, prompts: Sequence[str], texts: Sequence[str]) -> float:
        """exp(mean -log p_judge) over all continuation tokens (NaN when there are none)."""
        per = self.nll(prompts, texts)
        n = sum(c for _, c in per)
        return math.exp(sum(v for v, _ in per) / n) if n else float("nan")
