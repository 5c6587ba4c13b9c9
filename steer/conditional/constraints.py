"""Exact hard constraints for attributes decidable on the prefix: the zero-cost baseline.

- non-empty / not too short: no EOS before L new tokens. transformers already
  has this (``MinNewTokensLengthLogitsProcessor``); :func:`hard_constraints` uses it.
- no loop: :class:`NoNgramLoop` bans the token that would make an n-gram of the
  continuation occur ``repeats`` times.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, MinNewTokensLengthLogitsProcessor

from steer.conditional.attributes import Degeneracy


class NoNgramLoop(LogitsProcessor):
    """Bans w when (last n-1 generated tokens, w) already occurs ``repeats - 1`` times in the continuation.

    Only the continuation counts (tokens after ``prompt_length``), so a prompt
    may repeat itself freely. With repeats = 2 this is transformers'
    ``NoRepeatNGramLogitsProcessor`` restricted to the continuation.
    State comes from ``input_ids`` alone, so beam reordering is safe.

    Args:
        ngram: n.
        repeats: r >= 2; the r-th occurrence is banned.
        prompt_length: width of the (left-padded) prompt batch.
    """

    def __init__(self, ngram: int, repeats: int, prompt_length: int):
        checks = (("ngram", ngram, 1), ("repeats", repeats, 2), ("prompt_length", prompt_length, 0))
        for name, v, lo in checks:
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"`{name}` must be an int >= {lo}, got {v!r}")
        self.n, self.r, self.prompt_length = ngram, repeats, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cont = input_ids[:, self.prompt_length :]  # (B, L)
        length = cont.shape[1]
        n, v = self.n, scores.shape[-1]
        if length < max(n - 1, 1) or length < n - 1 + (self.r - 1):
            return scores.clone()
        # Work on the continuation's n-grams (B x L small tensors), never on a
        # dense [B, V] count table: a step costs one copy of the scores.
        if n == 1:
            nxt = cont  # (B, L): every token so far follows the empty context
            match = torch.ones_like(cont, dtype=torch.bool)
        else:
            win = cont.unfold(1, n, 1)  # (B, W, n): every n-gram so far
            tail = cont[:, length - (n - 1) :]  # (B, n-1): the context of the next token
            match = (win[:, :, : n - 1] == tail[:, None, :]).all(-1)  # (B, W): followed this context
            nxt = win[:, :, n - 1]  # (B, W): the token that followed
        nxt = nxt.clamp(max=v - 1)
        if self.r > 2:
            # How often each next token followed the context: pairwise over the W positions.
            times = ((nxt[:, :, None] == nxt[:, None, :]) & match[:, None, :]).sum(-1)  # (B, W)
            match = match & (times >= self.r - 1)
        # amin with -inf where banned and +inf elsewhere: duplicates agree, other scores stay.
        ban = torch.where(match, float("-inf"), float("inf")).to(scores.dtype)
        return scores.scatter_reduce(1, nxt, ban, reduce="amin")


def hard_constraints(degeneracy: Degeneracy, prompt_length: int, eos_token_id) -> list[LogitsProcessor]:
    """The exact processors for ``degeneracy``: min length (transformers') and the n-gram-loop ban."""
    return [
        MinNewTokensLengthLogitsProcessor(prompt_length, degeneracy.min_len, eos_token_id),
        NoNgramLoop(degeneracy.ngram, degeneracy.repeats, prompt_length),
    ]
