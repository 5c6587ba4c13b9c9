"""Conditional beam search: beam search on log p(y|x) + weight * log P(not degenerate | x, prefix, next).

Used through the standard API::

    with HiddenStateTap(model) as tap:
        out = model.generate(**inputs, num_beams=K,
                             logits_processor=[ConditionalBeam(head, tap, model, weight=1.0)])

The tap is the small helper that gives a processor the hidden states: a forward
pre-hook on the LM head records its input (the last hidden state) at every
step. Rows of the recorded state are the rows of ``input_ids`` at that step, so
beam reordering cannot desynchronise them; nothing is kept between steps.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from steer import checks
from steer.conditional.head import PrefixHead


class HiddenStateTap:
    """Records the input of ``model.get_output_embeddings()`` (the last hidden state) on each forward.

    Use as a context manager; ``last`` is float [rows, d_model] of the latest
    position, ``states`` the whole [rows, T, d_model] of the latest forward.
    """

    def __init__(self, model):
        self.model = model
        self.states: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, args):
        self.states = args[0].detach()

    @property
    def last(self) -> torch.Tensor | None:
        return None if self.states is None else self.states[:, -1, :]

    def __enter__(self):
        head = self.model.get_output_embeddings()
        if head is None:
            raise TypeError("`model` has no output embeddings (LM head) to tap")
        self._handle = head.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        self._handle = None
        self.states = None


class ConditionalBeam(LogitsProcessor):
    """Adds ``weight * log P(not degenerate | prefix + w)`` to each row's top-m candidate tokens.

    Other tokens keep their scores; -inf stays -inf; weight 0 is the identity
    (the same output as plain beam search, token for token).

    Args:
        head: a trained :class:`PrefixHead` for this model, frozen while decoding (its
            projection of every token is computed once per device, on first use).
        tap: the active :class:`HiddenStateTap` of this model.
        model: the model (for its input embeddings).
        weight: >= 0, finite.
        top_m: candidates rescored per row (default 2 * num_beams; give it
            explicitly when you know the beam size).
    """

    def __init__(self, head: PrefixHead, tap: HiddenStateTap, model, weight: float = 1.0, top_m: int = 8):
        if not isinstance(head, PrefixHead):
            raise TypeError(f"`head` must be a PrefixHead, got {type(head).__name__}")
        checks.number("weight", weight, 0)
        checks.integer("top_m", top_m, low=1)
        emb = model.get_input_embeddings().weight
        if emb.shape[1] != head.w_e.in_features:
            raise ValueError(f"`head` expects embeddings of size {head.w_e.in_features}, "
                             f"the model has {emb.shape[1]}: it was trained for another model")
        self.head, self.tap, self.weight, self.top_m = head, tap, float(weight), top_m
        self.embeddings = emb.detach()
        self._features = None  # W_e e(w) of every token, on the head's device (see __call__)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.weight == 0:
            return scores.clone()
        h = self.tap.last  # (B, d_model)
        if h is None or h.shape[0] != scores.shape[0]:
            raise RuntimeError("ConditionalBeam needs an active HiddenStateTap on the generating model")
        m = min(self.top_m, scores.shape[-1])
        top = scores.topk(m, dim=-1).indices  # (B, m)
        if self._features is None or self._features.device != h.device:
            # Once per device: the head moves there and projects every token's
            # embedding, so a step gathers [B, m, hidden] instead of projecting
            # [B, m, d_emb] (the head is frozen while decoding).
            self.head.to(h.device)
            with torch.no_grad():
                self._features = self.head.token_features(self.embeddings.to(h.device))  # (V_emb, hidden)
        feats = self._features[top.clamp(max=self._features.shape[0] - 1)]  # (B, m, hidden)
        with torch.no_grad():
            bonus = self.weight * torch.nn.functional.logsigmoid(self.head.logits_from_features(h, feats))  # (B, m)
        return scores.scatter_add(1, top, bonus.to(scores.dtype))  # out of place
