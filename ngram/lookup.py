"""Batched device-side lookup: contexts [B, T] -> sparse next-token rows.

Everything here is torch on the contexts' device with static shapes: no Python
loop over rows or vocabulary and no host-device sync, so it runs unchanged on
CUDA next to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ngram import keys


@dataclass(frozen=True)
class OrderMeta:
    """Host-side facts about one order k >= 2 (no device reads needed)."""

    k: int
    hashed: bool
    n_ctx: int
    n_entries: int
    max_fanout: int


@dataclass
class ContextHits:
    """Where each row's context of one order sits in the table.

    Attributes:
        found: bool [B], the row has >= k-1 tokens and its context was seen.
        idx: long [B], the context's index (clamped to a valid index where not found).
    """

    found: torch.Tensor
    idx: torch.Tensor


def find_contexts(tensors: dict, meta: OrderMeta, contexts: torch.Tensor, vocab_size: int,
                  seed: int) -> ContextHits | None:
    """Look up the last k-1 tokens of every row; None when no row can match.

    Rows with fewer than k-1 tokens, or whose context holds an id outside
    [0, V), never match.
    """
    k = meta.k
    b, t = contexts.shape
    if t < k - 1 or meta.n_ctx == 0:
        return None
    p = f"o{k}."
    hist = contexts[:, t - (k - 1):]  # (B, k-1)
    in_range = ((hist >= 0) & (hist < vocab_size)).all(dim=1)  # (B,)
    safe = hist.clamp(0, vocab_size - 1)  # keeps the packing free of overflow
    key = keys.pack([safe[:, j] for j in range(k - 1)], vocab_size, meta.hashed, seed)  # (B,)
    ctx_keys = tensors[p + "ctx_keys"]
    # Sorted keys: searchsorted gives the insertion point; a hit is where the
    # key stored there equals ours.
    pos = torch.searchsorted(ctx_keys, key)
    idx = pos.clamp(max=meta.n_ctx - 1)
    found = in_range & (ctx_keys[idx] == key)
    if meta.hashed:
        # A hashed key may belong to another context: compare the stored tokens.
        found &= (tensors[p + "ctx_tokens"][idx] == safe).all(dim=1)
    return ContextHits(found=found, idx=idx)


def gather_entries(tensors: dict, meta: OrderMeta, hits: ContextHits, value_name: str):
    """Pad every row's CSR range to the order's widest fan-out and gather it.

    Returns:
        (cols long [B, F], values float32 [B, F], valid bool [B, F]) where F is the
        largest number of next tokens any context of this order has. Padding
        slots have valid=False, col 0 and value 0, so a scatter_add of them adds
        nothing.
    """
    p = f"o{meta.k}."
    offsets = tensors[p + "offsets"]
    start = offsets[hits.idx]  # (B,)
    length = torch.where(hits.found, offsets[hits.idx + 1] - start, torch.zeros_like(start))
    # A static-width window [start, start + F) per row instead of a ragged
    # gather: the width is known on the host, so nothing waits on the device.
    ar = torch.arange(meta.max_fanout, device=start.device)  # (F,)
    valid = ar[None, :] < length[:, None]  # (B, F)
    pos = (start[:, None] + ar[None, :]).clamp(max=meta.n_entries - 1)  # (B, F)
    cols = torch.where(valid, tensors[p + "next_ids"][pos].long(), 0)
    vals = torch.where(valid, tensors[p + value_name][pos].float(), 0.0)
    return cols, vals, valid


def row_values(tensors: dict, meta: OrderMeta, hits: ContextHits, name: str) -> torch.Tensor:
    """A per-context statistic (totals, types) for every row, 0 where not found. float32 [B]."""
    v = tensors[f"o{meta.k}.{name}"][hits.idx].float()
    return torch.where(hits.found, v, torch.zeros_like(v))
