"""Exact hard constraints for attributes decidable on the prefix: the zero-cost baseline.

- non-empty / not too short: no EOS before L new tokens (transformers'
  ``MinNewTokensLengthLogitsProcessor`` rule).
- no loop: :class:`NoNgramLoop` bans the token that would make an n-gram of the
  continuation occur ``repeats`` times.

:func:`hard_constraints` applies both in one :class:`HardConstraints` processor:
one copy of the scores per step instead of one per rule, which is most of
their cost when many rows are decoded at once.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from steer.degeneracy import Degeneracy
from steer.repetition import NoNgramLoop, apply_bans

__all__ = ["HardConstraints", "NoNgramLoop", "hard_constraints"]


class HardConstraints(LogitsProcessor):
    """No EOS before ``min_new_tokens`` new tokens, and :class:`NoNgramLoop`'s ban, in one pass.

    The same scores as transformers' ``MinNewTokensLengthLogitsProcessor``
    followed by :class:`NoNgramLoop`: both rules only ever set scores to -inf,
    so their bans land in one min-scatter into one copy of the scores. A row
    the bans would leave with no finite score keeps its scores
    (:func:`steer.repetition.apply_bans`).

    Args:
        degeneracy: its ``min_len``, ``ngram`` and ``repeats`` set the rules.
        prompt_length: width of the (left-padded) prompt batch.
        eos_token_id: an id, a list of ids, or None (no length rule).
    """

    def __init__(self, degeneracy: Degeneracy, prompt_length: int, eos_token_id):
        if not isinstance(degeneracy, Degeneracy):
            raise TypeError(f"`degeneracy` must be a Degeneracy, got {type(degeneracy).__name__}")
        self.loop = NoNgramLoop(degeneracy.ngram, degeneracy.repeats, prompt_length)
        self.min_new_tokens = degeneracy.min_len
        if hasattr(eos_token_id, "tolist"):  # a tensor, as a generation config may hold it
            eos_token_id = eos_token_id.tolist()
        ids = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
            raise ValueError(f"`eos_token_id` must be an id >= 0, a list of them or None, got {eos_token_id!r}")
        self.eos_token_ids = ids
        self._eos: dict = {}  # (device, width) -> the ids below width, on the device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        found = self.loop.bans(input_ids, scores)
        if input_ids.shape[1] - self.loop.prompt_length < self.min_new_tokens and self.eos_token_ids:
            key = (scores.device, scores.shape[-1])
            if key not in self._eos:  # once per device and width: no host sync per step
                self._eos[key] = torch.tensor([i for i in self.eos_token_ids if i < key[1]], dtype=torch.long,
                                              device=scores.device)
            eos = self._eos[key].expand(scores.shape[0], -1)  # (B, e)
            eos_ban = torch.full(eos.shape, float("-inf"), dtype=scores.dtype, device=scores.device)
            found = (eos, eos_ban) if found is None else (torch.cat([found[0], eos], 1),
                                                           torch.cat([found[1], eos_ban], 1))
        return apply_bans(scores, found)


def hard_constraints(degeneracy: Degeneracy, prompt_length: int, eos_token_id) -> list[LogitsProcessor]:
    """The exact processors for ``degeneracy``: min length and the n-gram-loop ban, as one :class:`HardConstraints`."""
    return [HardConstraints(degeneracy, prompt_length, eos_token_id)]
