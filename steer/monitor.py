"""A processor wrapper that records how much another processor moves the next-token distribution."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from steer.metrics import js_divergence


class DivergenceRecorder(LogitsProcessor):
    """Applies ``inner`` and records, per step and row, JS(softmax(scores), softmax(inner(scores))).

    The divergence reuses the logits generate() already computed: no extra
    forward pass. The recorded distributions are the ones entering and leaving
    ``inner`` (after the steering prior, before any sampling truncation placed
    after it).

    Example:
        >>> rec = DivergenceRecorder(NGramStylePrior(table, 0.1))  # doctest: +SKIP
        >>> model.generate(..., logits_processor=LogitsProcessorList([rec]))  # doctest: +SKIP
        >>> rec.divergences().shape   # (rows, steps)  # doctest: +SKIP
    """

    def __init__(self, inner: LogitsProcessor):
        self.inner = inner
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = self.inner(input_ids, scores)
        self._steps.append(js_divergence(scores, out).cpu())
        return out

    def divergences(self) -> torch.Tensor:
        """float32 [rows, steps]: the JS divergence (bits) of every row at every step so far."""
        if not self._steps:
            return torch.zeros(0, 0)
        return torch.stack(self._steps, dim=1)
