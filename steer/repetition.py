"""The n-gram loop ban shared by every decoder that must not loop: conditional beam search's hard
constraints, steered generation's ``loop_ban`` and edit decoding's repetition guard."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from steer import checks

# Continuations up to V / SORT_COUNT_RATIO positions count repeats by sorting, longer ones by a
# [B, V] bincount (the two cost the same near there: V = 32000, about 250 positions).
SORT_COUNT_RATIO = 128


def apply_bans(scores: torch.FloatTensor, found) -> torch.FloatTensor:
    """New scores with the bans of ``found`` ((ids [B, W], values [B, W]) for a min-scatter, or None) applied,
    except in rows the bans would leave with no finite score, which keep their scores."""
    if found is None:
        return scores.clone()
    ids, _ = found
    out = scores.scatter_reduce(1, *found, reduce="amin")
    # A row is emptied iff its max is -inf (one [B, V] max, no host sync). An emptied row differs
    # from ``scores`` only at the banned ids, so writing the old values back there restores it:
    # a [B, W] scatter instead of a [B, V] select. Duplicate ids write equal values.
    emptied = out.amax(dim=-1, keepdim=True) == float("-inf")
    return out.scatter_(1, ids, torch.where(emptied, scores.gather(1, ids), out.gather(1, ids)))


def followers(ids: torch.LongTensor, n: int) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """(next [B, W], match [B, W]): each n-gram's last token in ``ids`` [B, L], and whether its first
    n - 1 tokens equal the row's last n - 1, i.e. whether that token would repeat the n-gram if drawn next.

    n = 1 matches every token (the empty context). Needs L >= n (W = L - n + 1), as ``unfold`` does; callers
    with a shorter row have no n-gram to repeat and skip the call.
    """
    if n == 1:
        return ids, torch.ones_like(ids, dtype=torch.bool)
    win = ids.unfold(1, n, 1)  # (B, W, n): every n-gram so far
    tail = ids[:, ids.shape[1] - (n - 1) :]  # (B, n-1): the context of the next token
    return win[:, :, n - 1], (win[:, :, : n - 1] == tail[:, None, :]).all(-1)


class NoNgramLoop(LogitsProcessor):
    """Bans w when (last n-1 generated tokens, w) already occurs ``repeats - 1`` times in the continuation.

    Only the continuation counts (tokens after ``prompt_length``), so a prompt
    may repeat itself freely. With repeats = 2 this is transformers'
    ``NoRepeatNGramLogitsProcessor`` restricted to the continuation.
    State comes from ``input_ids`` alone, so beam reordering is safe.

    The ban never empties a row: where earlier processors left only banned
    tokens finite (a steering mask that keeps a few plausible tokens), that
    row keeps its scores for the step, since sampling from an all -inf row
    gives NaN and a search cannot rank it (:func:`apply_bans`).

    Args:
        ngram: n.
        repeats: r >= 2; the r-th occurrence is banned.
        prompt_length: width of the (left-padded) prompt batch.
    """

    def __init__(self, ngram: int, repeats: int, prompt_length: int):
        for name, v, lo in (("ngram", ngram, 1), ("repeats", repeats, 2), ("prompt_length", prompt_length, 0)):
            checks.integer(name, v, low=lo)
        self.n, self.r, self.prompt_length = ngram, repeats, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return apply_bans(scores, self.bans(input_ids, scores))

    def bans(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """(token ids [B, W], -inf where banned and +inf elsewhere [B, W]) for a min-scatter, or None."""
        cont = input_ids[:, self.prompt_length :]  # (B, L)
        length = cont.shape[1]
        n, v = self.n, scores.shape[-1]
        if length < max(n - 1, 1) or length < n - 1 + (self.r - 1):
            return None
        # Work on the continuation's n-grams (B x L small tensors), never on a
        # dense [B, V] count table: a step costs one copy of the scores.
        nxt, match = followers(cont, n)
        nxt = nxt.clamp(max=v - 1)
        if self.r > 2:
            # How often each next token followed the context, without a pairwise [W, W]
            # compare; the other positions count as token V, past every id.
            key = torch.where(match, nxt, v)  # (B, W)
            if key.shape[1] * SORT_COUNT_RATIO <= v:
                # Short continuations, O(W log W): a token's count is the width of its run
                # in the sorted row, the gap between its rightmost and leftmost insertion points.
                run = key.sort(dim=1).values
                times = torch.searchsorted(run, key, right=True) - torch.searchsorted(run, key)
            else:
                # Long ones, O(W + V): one bincount over (row, token) pairs, read back per position.
                flat = torch.arange(key.shape[0], device=key.device)[:, None] * (v + 1) + key
                times = torch.bincount(flat.view(-1), minlength=key.shape[0] * (v + 1)).take(flat)
            match = match & (times >= self.r - 1)  # (B, W)
        # amin with -inf where banned and +inf elsewhere: duplicates agree, other scores stay.
        return nxt, torch.where(match, float("-inf"), float("inf")).to(scores.dtype)
