"""Add-alpha, mixture and Kneser-Ney maths, folded into per-context and per-entry coefficients.

Every estimate the table offers has the same shape once its options are
fixed: for a row whose contexts h_2..h_K of orders 2..K were seen,

    out(w) = finish( dense(w) * scale + row + sum_k coef_k * value_k(h_k, w) )

where ``value_k(h, w)`` is non-zero only for the next tokens stored under h.
This module computes, once per table and options, on the host in float64,
everything that depends only on the table: the dense unigram term, one number
(or two) per context and one value per stored entry. :mod:`ngram.lookup`
then needs no estimator knowledge at decoding time.

Kneser-Ney's interpolation weights multiply down the chain of contexts
(p_N = sum_k (prod_{j>k} g_j) a_k + (prod_j g_j) p_1). Because the contexts
a row finds are always a suffix chain h_2..h_K (a context was seen only if
its suffix was), the product prod_{j>k} g_j equals G(h_K) / G(h_k) with
G(h) = prod of g over h's own suffix chain, precomputed per context; and
G(h_K) is the smallest G among the row's found contexts, since every g <= 1.
:func:`chain_values` goes one step further and folds every entry's lower
orders into it, so that the per-step path takes a maximum instead of a sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ngram import counts as C
from ngram import keys


@dataclass
class OrderCoefficients:
    """One order's share of an estimate.

    Attributes:
        k: the order.
        row: float64 [n_ctx, r], per-context numbers (r = 1 or 2, see :func:`coefficients`).
        values: float64 [n_entries], one value per stored (context, next id).
    """

    k: int
    row: np.ndarray
    values: np.ndarray


@dataclass
class Coefficients:
    """Everything an estimate needs besides the lookup, for one table and options.

    Attributes:
        kind: "kneser_ney", "logsum" or "mixture" (a single add-alpha order is
            a logsum with one weight, whose unseen contexts count as uniform).
        dense: float64 [V], the unigram term every row starts from.
        unigram: float64 [V], the order-1 distribution p_1 itself.
        orders: the orders that take part (weight non-zero), increasing.
        per_order: their coefficients.
        missing_row: the per-context numbers of an unseen context.
        b1: the unigram weight (mixture only: part of the normaliser).
    """

    kind: str
    dense: np.ndarray
    unigram: np.ndarray
    orders: list[int]
    per_order: list[OrderCoefficients]
    missing_row: tuple[float, ...]
    b1: float = 0.0


def unigram(counts: np.ndarray, cont: np.ndarray | None, kind: str, param: float) -> np.ndarray:
    """The order-1 distribution, float64 [V]: Kneser-Ney (discount ``param``) or add-alpha (``param``)."""
    v = counts.size
    if kind == "kneser_ney":
        c1 = (cont if cont is not None else counts).astype(np.float64)
        total, n1 = c1.sum(), np.count_nonzero(c1)
        if total == 0:
            return np.full(v, 1.0 / v)
        return np.maximum(c1 - param, 0) / total + param * n1 / (total * v)
    c1 = counts.astype(np.float64)
    return (c1 + param) / (c1.sum() + param * v)


def _order_arrays(stored: dict, k: int, name: str):
    """(offsets, per-entry counts, per-context totals, per-context types) of one order's ``name`` counts."""
    p = f"o{k}."
    off = stored[p + "offsets"].numpy().astype(np.int64)
    cnt = stored[p + name].numpy().astype(np.float64)
    cs = np.concatenate([[0.0], np.cumsum(cnt)])
    totals = cs[off[1:]] - cs[off[:-1]]
    nz = np.concatenate([[0], np.cumsum(cnt > 0)])
    types = (nz[off[1:]] - nz[off[:-1]]).astype(np.float64)
    return off, cnt, totals, types


def _per_entry(off: np.ndarray, per_ctx: np.ndarray) -> np.ndarray:
    """Repeat each context's number over its entries."""
    return np.repeat(per_ctx, np.diff(off))


def context_tokens(stored: dict, k: int, vocab_size: int, hashed_orders) -> np.ndarray:
    """Tokens of every order-k context, int64 [n_ctx, k-1], oldest first, in key order."""
    p = f"o{k}."
    oc = C.OrderCounts(ctx_keys=stored[p + "ctx_keys"].numpy().astype(np.int64),
                       offsets=stored[p + "offsets"].numpy().astype(np.int64), next_ids=None, counts=None,
                       ctx_tokens=stored[p + "ctx_tokens"].numpy().astype(np.int64) if k in hashed_orders else None)
    return C.context_token_matrix(oc, k, vocab_size, k in hashed_orders)


def suffix_index(stored: dict, k: int, vocab_size: int, hashed_orders, seed: int, to_order: int | None = None,
                 tokens: np.ndarray | None = None) -> np.ndarray:
    """For every order-k context, the index of its suffix among order ``to_order``'s contexts (default k-1, >= 2).

    The suffix of order j is the context's last j-1 tokens. ``tokens``: the
    contexts' :func:`context_tokens`, when the caller already has them.
    """
    j = k - 1 if to_order is None else to_order
    if tokens is None:
        tokens = context_tokens(stored, k, vocab_size, hashed_orders)  # (n_ctx, k-1)
    suffix = keys.pack(list(tokens[:, k - j :].T), vocab_size, j in hashed_orders, seed)
    lower = stored[f"o{j}.ctx_keys"].numpy().astype(np.int64)
    idx = np.searchsorted(lower, suffix)
    # The suffix of a seen context was seen (same occurrence, fewer tokens).
    assert idx.size == 0 or (idx.max() < lower.size and np.array_equal(lower[idx], suffix))
    return idx


def chain_values(coeffs: Coefficients, stored: dict, vocab_size: int, hashed_orders, seed: int,
                 tokens: dict | None = None):
    """Every entry's estimate for the tokens it covers, with all lower orders' terms folded in.

    A row's contexts form a suffix chain h_2..h_K, and the next ids stored
    under h_k are a subset of those under its suffix h_{k-1} (an n-gram's
    suffix was seen too). So for a token w the terms of all orders up to the
    highest k whose context stored w can be summed at build time into one
    number per entry, ``full``:

    * Kneser-Ney: log(p_1(w) + sum_{j<=k} a_j(h_j, w) / G(h_j)) (the row's
      log p is this plus log G(h_K));
    * logsum: b_1 log p_1(w) + sum_{j<=k} value_j(h_j, w) (plus the row's
      per-context numbers);
    * mixture: b_1 p_1(w) + sum_{j<=k} value_j(h_j, w) (plus the row's
      per-context numbers, then divided by the weights and logged).

    Every term added is >= 0, so ``full`` only grows with k: a row's estimate
    at w is its per-row part plus the *largest* ``full`` among its contexts'
    entries at w, or ``base[w]`` where no context stored w. That turns the
    per-step sum over orders into one max-scatter.

    Returns:
        (base float64 [V], full: per taking-part order float64 [n_entries],
        parent: per order the index of each context's suffix at the previous
        taking-part order, None for the first). ``tokens``: order -> its
        :func:`context_tokens`, when the caller already has them.
    """
    kn = coeffs.kind == "kneser_ney"
    base = coeffs.dense  # p_1 (Kneser-Ney), b_1 log p_1 (logsum) or b_1 p_1 (mixture)
    full, parent, below = [], [], None
    for k, oc in zip(coeffs.orders, coeffs.per_order, strict=True):
        p = f"o{k}."
        off = stored[p + "offsets"].numpy().astype(np.int64)
        nxt = stored[p + "next_ids"].numpy().astype(np.int64)
        ctx = np.repeat(np.arange(off.size - 1), np.diff(off))  # context of every entry
        add = oc.values / oc.row[ctx, 0] if kn else oc.values  # Kneser-Ney: a_k / G(h_k)
        if below is None:
            parent.append(None)
            lin = base[nxt] + add
        else:
            j, lin_j, keys_j = below
            up = suffix_index(stored, k, vocab_size, hashed_orders, seed, to_order=j,
                              tokens=(tokens or {}).get(k))
            parent.append(up)
            # Entries sorted by (context, next id): context index * V + next id is a
            # sorted key, and (suffix, w) is always there.
            want = up[ctx] * vocab_size + nxt
            at = np.searchsorted(keys_j, want)
            assert at.size == 0 or (at.max() < keys_j.size and np.array_equal(keys_j[at], want))
            lin = lin_j[at] + add
        below = (k, lin, ctx * vocab_size + nxt)
        full.append(np.log(lin) if kn else lin)
    return (np.log(base) if kn else base), full, parent


def kneser_ney(stored: dict, order: int, vocab_size: int, hashed_orders, seed: int, d: float) -> Coefficients:
    """Interpolated Kneser-Ney with discount ``d`` (formula in :meth:`ngram.NGramTable.logprobs`).

    Per entry: a_k(w) = max(c_k(h,w) - D, 0) / c_k(h) (0 where c_k(h) = 0).
    Per context: G(h) = g(h) * G(suffix of h), g = D n_k(h) / c_k(h) (1 where c_k(h) = 0).
    Raw counts for order N, continuation counts below.
    """
    cont1 = stored["unigram.cont"].numpy() if order >= 2 else None
    dense = unigram(stored["unigram.counts"].numpy(), cont1, "kneser_ney", d)
    per_order, chain = [], None
    for k in range(2, order + 1):
        off, cnt, tot, types = _order_arrays(stored, k, "counts" if k == order else "cont")
        has = tot > 0
        safe = np.where(has, tot, 1.0)
        g = np.where(has, d * types / safe, 1.0)
        values = np.maximum(cnt - d, 0) / _per_entry(off, safe)
        if k > 2:
            g = g * chain[suffix_index(stored, k, vocab_size, hashed_orders, seed)]
        chain = g
        per_order.append(OrderCoefficients(k, g[:, None], values))
    return Coefficients("kneser_ney", dense, dense, list(range(2, order + 1)), per_order, missing_row=(1.0,))


def add_alpha(stored: dict, order: int, vocab_size: int, weights, alpha: float, mode: str,
              single: bool = False) -> Coefficients:
    """Add-alpha orders combined by ``weights`` (b_1..b_N) in ``mode`` "logsum" or "mixture".

    With p_k(w|h) = (c(h,w) + alpha) / (c(h) + alpha V):
    logsum, per context b_k (log alpha - log(c(h) + alpha V)), per entry
    b_k (log(c(h,w) + alpha) - log alpha), dense b_1 log p_1;
    mixture, per context (b_k alpha / (c(h) + alpha V), b_k), per entry
    b_k c(h,w) / (c(h) + alpha V), dense b_1 p_1, and the sum is divided by
    b_1 + the matched b_k. ``single``: one order whose unseen contexts give the
    uniform 1/V instead of nothing.
    """
    v = vocab_size
    p1 = unigram(stored["unigram.counts"].numpy(), None, "add_alpha", alpha)
    b1 = float(weights[0])
    dense = b1 * (np.log(p1) if mode == "logsum" else p1)
    orders = [k for k in range(2, order + 1) if weights[k - 1] != 0]
    per_order = []
    for k in orders:
        bk = float(weights[k - 1])
        off, cnt, tot, _ = _order_arrays(stored, k, "counts")
        denom = tot + alpha * v
        if mode == "logsum":
            row = (bk * (math.log(alpha) - np.log(denom)))[:, None]
            values = bk * (np.log(cnt + alpha) - math.log(alpha))
        else:
            row = np.stack([bk * alpha / denom, np.full(denom.shape, bk)], axis=1)
            values = bk * cnt / _per_entry(off, denom)
        per_order.append(OrderCoefficients(k, row, values))
    if mode == "logsum":
        missing = (-math.log(v),) if single else (0.0,)
    else:
        missing = (0.0, 0.0)
    return Coefficients(mode, dense, p1, orders, per_order, missing_row=missing, b1=b1)
