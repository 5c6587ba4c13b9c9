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
        start: long [B], first entry of the context's CSR range.
        length: long [B], its number of entries (0 where not found).
        stats: float32 [B, 4], the context's (c(h), n(h), continuation c(h),
            continuation n(h)); zeros where not found.
    """

    found: torch.Tensor
    idx: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    stats: torch.Tensor


@dataclass
class Tail:
    """The last N-1 tokens of every row, prepared once per lookup for all orders.

    Attributes:
        ids: long [B, w] with w = min(T, N-1), out-of-range ids clamped into [0, V).
        ok_from: bool [B, w]; ok_from[:, j] says every id from column j to the end
            was in range, so the context of order k (the last k-1 columns) may match.
    """

    ids: torch.Tensor
    ok_from: torch.Tensor


def prepare_tail(contexts: torch.Tensor, order: int, vocab_size: int) -> Tail:
    """Slice, check and clamp the part of ``contexts`` that any order can use."""
    w = min(contexts.shape[1], order - 1)
    tail = contexts[:, contexts.shape[1] - w :].long()  # (B, w)
    ok = (tail >= 0) & (tail < vocab_size)
    # A suffix is valid when all of it is: cumulative product from the right.
    ok_from = ok.flip(1).cumprod(1).flip(1).bool()
    return Tail(ids=tail.clamp(0, vocab_size - 1), ok_from=ok_from)


def find_contexts(tensors: dict, meta: OrderMeta, tail: Tail, vocab_size: int,
                  seed: int) -> ContextHits | None:
    """Look up the last k-1 tokens of every row; None when no row can match.

    Rows with fewer than k-1 tokens, or whose context holds an id outside
    [0, V), never match.
    """
    k = meta.k
    w = tail.ids.shape[1]
    if w < k - 1 or meta.n_ctx == 0:
        return None
    p = f"o{k}."
    hist = tail.ids[:, w - (k - 1) :]  # (B, k-1)
    key = keys.pack(hist.unbind(1), vocab_size, meta.hashed, seed).contiguous()  # (B,)
    ctx_keys = tensors[p + "ctx_keys"]
    # Sorted keys: searchsorted gives the insertion point; a hit is where the
    # key stored there equals ours.
    idx = torch.searchsorted(ctx_keys, key).clamp_(max=meta.n_ctx - 1)
    found = tail.ok_from[:, w - (k - 1)] & (ctx_keys[idx] == key)
    if meta.hashed:
        # A hashed key may belong to another context: compare the stored tokens.
        found &= (tensors[p + "ctx_tokens"][idx] == hist).all(dim=1)
    # One gather each for the CSR span and the per-context statistics; a
    # multiply by the hit mask zeroes the rows that did not match.
    span = tensors[p + "span"][idx] * found[:, None]  # (B, 2)
    stats = tensors[p + "rowstats"][idx] * found[:, None]  # (B, 4)
    return ContextHits(found=found, idx=idx, start=span[:, 0], length=span[:, 1], stats=stats)


def gather_entries(tensors: dict, meta: OrderMeta, hits: ContextHits, value_name: str,
                   padded: bool | None = None):
    """Every row's CSR range, flattened: the (row, next id, value) of each stored entry.

    Two equivalent layouts. ``padded`` (the default on accelerators) gives every
    row a static window as wide as the order's widest fan-out F, so shapes are
    known on the host and nothing waits on the device; padding slots carry
    value 0 and add nothing when scattered. The ragged layout (the default on
    CPU, where reading a length costs nothing) gathers exactly the stored
    entries, which is much less work when F is large.

    Returns:
        (rows long [L], cols long [L], vals float32 [L]).
    """
    p = f"o{meta.k}."
    start, length = hits.start, hits.length  # (B,)
    b = start.shape[0]
    if padded is None:
        padded = start.device.type != "cpu"
    if padded:
        ar = torch.arange(meta.max_fanout, device=start.device)  # (F,)
        valid = ar[None, :] < length[:, None]  # (B, F)
        pos = (start[:, None] + ar[None, :]).clamp(max=meta.n_entries - 1).reshape(-1)  # (B*F,)
        rows = torch.arange(b, device=start.device).repeat_interleave(meta.max_fanout)
        valid = valid.reshape(-1)
        cols = torch.where(valid, tensors[p + "next_long"][pos], 0)
        vals = torch.where(valid, tensors[p + value_name + "_f"][pos], 0.0)
        return rows, cols, vals
    if b == 1:  # one row: its range is a slice (views, no index arithmetic)
        s0 = int(start[0])
        s1 = s0 + int(length[0])
        cols = tensors[p + "next_long"][s0:s1]
        return torch.zeros_like(cols), cols, tensors[p + value_name + "_f"][s0:s1]
    # Ragged: row r owns slots [cum[r] - len[r], cum[r]) of a flat array of
    # length sum(len); slot j of row r reads entry start[r] + j.
    total = int(length.sum())
    rows = torch.repeat_interleave(torch.arange(b, device=start.device), length, output_size=total)
    first_slot = (torch.cumsum(length, 0) - length)[rows]  # (L,)
    pos = start[rows] + torch.arange(total, device=start.device) - first_slot
    return rows, tensors[p + "next_long"][pos], tensors[p + value_name + "_f"][pos]
