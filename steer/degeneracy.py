"""Degeneracy attributes of a continuation: empty, repetitive, prompt copy, too short.

Each attribute is a vectorised function of a batch: ``prompts`` and ``conts`` as
right-padded LongTensors [B, T] with their lengths (see :func:`pad`). The
continuation excludes EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steer import checks

# Keys of n-grams: polynomial hash modulo a prime below 2**31 (products stay
# below 2**62, so int64 never overflows); equal n-grams get equal keys, and a
# rare false match between distinct n-grams can only over-report a repetition.
_P = 2_147_483_629
_B = 1_000_003


def pad(seqs: Sequence[Sequence[int]], fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id sequences: (LongTensor [B, max_len], lengths LongTensor [B])."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = max(int(lengths.max()) if len(seqs) else 0, 1)
    out = torch.full((len(seqs), width), fill, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out, lengths


def ngram_keys(ids: torch.Tensor, lengths: torch.Tensor, n: int):
    """Keys of every n-gram of every row: (keys [B, W], valid [B, W]) with W = T - n + 1.

    Invalid windows (reaching into padding) have valid=False.
    """
    b, t = ids.shape
    if t < n:
        return ids.new_zeros(b, 0), torch.zeros(b, 0, dtype=torch.bool)
    win = ids.unfold(1, n, 1)  # (B, W, n)
    key = torch.zeros(win.shape[:2], dtype=torch.long)
    for j in range(n):
        key = (key * _B + win[..., j] + 1) % _P
    valid = torch.arange(win.shape[1])[None, :] + n <= lengths[:, None]  # (B, W)
    return key, valid


@dataclass(frozen=True)
class Degeneracy:
    """Thresholds of the attributes.

    Attributes:
        ngram: n of the repeated-n-gram test (an n-gram of length n ...).
        repeats: ... occurring at least this many times makes a loop.
        tail_period: a tail that repeats with any period 1..tail_period ...
        tail_min: ... over at least this many tokens is a loop too.
        copy_span: a span of at least this many tokens taken from the prompt is a copy.
        min_len: fewer tokens than this is too short.
    """

    ngram: int = 3
    repeats: int = 3
    tail_period: int = 8
    tail_min: int = 12
    copy_span: int = 8
    min_len: int = 5

    def __post_init__(self):
        for name in ("ngram", "repeats", "tail_period", "tail_min", "copy_span", "min_len"):
            v = getattr(self, name)
            checks.integer(name, v, low=1)
        if self.repeats < 2:
            raise ValueError(f"`repeats` must be >= 2, got {self.repeats}")

    def empty(self, conts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """No content before EOS: length 0. bool [B]."""
        return lengths == 0

    def too_short(self, conts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Fewer than ``min_len`` tokens before EOS. bool [B]."""
        return lengths < self.min_len

    def repetitive(self, conts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A loop: some ``ngram``-gram occurs >= ``repeats`` times, or the tail is periodic.

        The tail test: for some period p <= ``tail_period``, the last
        max(``tail_min``, 2p) tokens satisfy y_t = y_{t-p}. bool [B].
        """
        b = conts.shape[0]
        key, valid = ngram_keys(conts, lengths, self.ngram)
        if key.shape[1] >= self.repeats:
            # Padding windows get distinct negative keys so they never form a run.
            pad_keys = -1 - torch.arange(key.shape[1]).expand_as(key)
            srt, _ = torch.where(valid, key, pad_keys).sort(dim=1)  # (B, W)
            r = self.repeats
            # After sorting, r equal keys sit side by side: a run of length r
            # exists iff sorted[i] == sorted[i + r - 1] for some i.
            loop = ((srt[:, : srt.shape[1] - r + 1] == srt[:, r - 1 :]) & (srt[:, r - 1 :] >= 0)).any(1)
        else:
            loop = torch.zeros(b, dtype=torch.bool)
        t = conts.shape[1]
        pos = torch.arange(t)[None, :]  # (1, T)
        for p in range(1, self.tail_period + 1):
            span = max(self.tail_min, 2 * p)
            if span > t:
                break
            # Over the tail window [len - span + p, len), each token equals the one p before.
            shifted = torch.cat([conts.new_full((b, p), -1), conts[:, :-p]], dim=1)  # (B, T)
            in_tail = (pos >= (lengths - span + p)[:, None]) & (pos < lengths[:, None])
            ok = torch.where(in_tail, conts == shifted, True).all(1)
            loop |= ok & (lengths >= span)
        return loop

    def prompt_copy(self, prompts: torch.Tensor, prompt_lengths: torch.Tensor,
                    conts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The continuation reproduces a span of >= ``copy_span`` tokens of the prompt. bool [B]."""
        ck, cv = ngram_keys(conts, lengths, self.copy_span)
        pk, pv = ngram_keys(prompts, prompt_lengths, self.copy_span)
        if ck.shape[1] == 0 or pk.shape[1] == 0:
            return torch.zeros(conts.shape[0], dtype=torch.bool)
        same = (ck[:, :, None] == pk[:, None, :]) & cv[:, :, None] & pv[:, None, :]  # (B, Wc, Wp)
        return same.flatten(1).any(1)

    def all(self, prompts, prompt_lengths, conts, lengths) -> dict[str, torch.Tensor]:
        """Every attribute, and "degenerate" = any of them. Each bool [B]."""
        out = {
            "empty": self.empty(conts, lengths),
            "repetitive": self.repetitive(conts, lengths),
            "prompt_copy": self.prompt_copy(prompts, prompt_lengths, conts, lengths),
            "too_short": self.too_short(conts, lengths),
        }
        out["degenerate"] = out["empty"] | out["repetitive"] | out["prompt_copy"] | out["too_short"]
        return out

    def is_degenerate(self, prompts: Sequence[Sequence[int]], conts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Any attribute, from plain id lists. bool [B]."""
        p, pl = pad(prompts)
        c, cl = pad(conts)
        return self.all(p, pl, c, cl)["degenerate"]
