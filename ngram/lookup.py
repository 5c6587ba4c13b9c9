"""The per-step path: contexts [B, T] -> next-token log-probabilities [B, V], in about twenty tensor ops.

:class:`StepPlan` is built once per table, options and device from the
coefficients of :mod:`ngram.estimators`, and then answers every decoding step
with one fixed sequence of torch ops: no Python loop over rows or orders, no
host-device sync and only static shapes, so the same code runs on CPU and
CUDA and compiles with ``torch.compile(fullgraph=True)``.

At build time every stored entry gets the estimate of the token it covers with
all lower orders folded in (:func:`ngram.estimators.chain_values`), so that a
row's estimate at w is a per-row number plus the *largest* such value among its
contexts' entries at w (or the no-context row where none stored w). Contexts
with the widest fan-outs get that whole row precomputed (a dense row), so no
window has to be wide. One step, top to bottom (B rows, c orders, F_k the
widest fan-out of order k among contexts without a dense row):

1. keys: the last N-1 ids of every row become one key per order with a
   single matrix product (all orders' keys live in one sorted array);
2. slots: one ``searchsorted`` finds each key's slot in a layout where seen
   contexts sit at odd slots and "not seen" at even ones (see :func:`_interleave`);
3. the row starts as the dense row of its deepest context that has one (the
   no-context row otherwise): one ``index_select``;
4. each remaining context contributes a window of F_k entries (next ids,
   values), all windows side by side, the slots past a context's end reading
   a separator whose value is -inf; one max-scatter lands them all;
5. the estimator's finish: add the per-row number (Kneser-Ney: log G of the
   longest context; logsum: the contexts' terms), or for the mixture divide
   and log.

The mixture's finish is a log over every entry of the [B, V] rows, which costs
more than the rest of the step. Where the table stored few of the vocabulary's
tokens (a style corpus of a few MB against a 49k vocabulary), every row holds
one value of its own at all the tokens no context stored; the plan then works
on the stored tokens' columns plus one column for that value and widens the
rows at the end (:meth:`StepPlan._widen`), with the same values.

On a CPU, a batch whose windows would hold many slots (most of them past
their contexts' ends) gathers each context's actual entries instead
(:meth:`StepPlan._scatter_ragged`): a few more ops and one read of the
lengths, which costs no sync there, for a fraction of the work.

:class:`ContrastPlan` runs two tables' Kneser-Ney plans as one (a contrastive
bonus needs both every step). :func:`prepare_tail` and :func:`find_contexts`
serve the table's count queries.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch

from ngram import keys
from ngram.estimators import Coefficients, chain_values, context_tokens

_INT63 = 2**63 - 1
# On a CPU, batches whose windows would hold more slots than this gather each
# context's actual entries instead (reading their lengths costs no sync there).
RAGGED_MIN_SLOTS = 32768
# float64 holds every integer up to 2**53 exactly.
_FLOAT_EXACT = 2**53
# Point queries whose windows would hold at most this many slots compare every window slot
# with the target (a dozen ops); larger batches search each context's entries instead.
SCORE_WINDOW_SLOTS = 32768
# Bytes a plan may spend on dense rows (float32 [rows, V]) for the contexts with
# the widest fan-outs; they cost no work per step (every row starts from one).
DENSE_ROWS_BYTES = 64 * 2**20
# Contexts with at most this many next ids always go through the windows.
MIN_DENSE_FAN = 16
# The mixture works on the stored tokens' columns when they are at most this share of the vocabulary.
COMPACT_MAX_SHARE = 0.5


@dataclass(frozen=True)
class OrderMeta:
    """Host-side facts about one order k >= 2 (no device reads needed)."""

    k: int
    hashed: bool
    n_ctx: int


def prepare_tail(contexts: torch.Tensor, order: int, vocab_size: int):
    """The last N-1 ids of every row, clamped into [0, V), and where each suffix is entirely in range.

    Returns:
        (ids long [B, w], ok_from bool [B, w]) with w = min(T, N-1); ok_from[:, j]
        says every id from column j to the end was in range.
    """
    w = min(contexts.shape[1], order - 1)
    tail = contexts[:, contexts.shape[1] - w :].long()  # (B, w)
    ok = (tail >= 0) & (tail < vocab_size)
    # A suffix is valid when all of it is: cumulative product from the right.
    ok_from = ok.flip(1).cumprod(1).flip(1).bool()
    return tail.clamp(0, vocab_size - 1), ok_from


def find_contexts(tensors: dict, meta: OrderMeta, ids: torch.Tensor, ok_from: torch.Tensor, vocab_size: int,
                  seed: int):
    """(found bool [B], index long [B]) of every row's last k-1 ids among order k's contexts; None if none can match."""
    k = meta.k
    w = ids.shape[1]
    if w < k - 1 or meta.n_ctx == 0:
        return None
    p = f"o{k}."
    hist = ids[:, w - (k - 1) :]  # (B, k-1)
    key = keys.pack(hist.unbind(1), vocab_size, meta.hashed, seed).contiguous()  # (B,)
    ctx_keys = tensors[p + "ctx_keys"]
    # Sorted keys: searchsorted gives the insertion point; a hit is where the
    # key stored there equals ours.
    idx = torch.searchsorted(ctx_keys, key).clamp_(max=meta.n_ctx - 1)
    found = ok_from[:, w - (k - 1)] & (ctx_keys[idx] == key)
    if meta.hashed:
        # A hashed key may belong to another context: compare the stored tokens.
        found &= (tensors[p + "ctx_tokens"][idx] == hist).all(dim=1)
    return found, idx


def _interleave(sorted_keys: np.ndarray) -> np.ndarray:
    """[2K_0, 2K_0+1, 2K_1, 2K_1+1, ...]: with a query 2q, ``searchsorted(right=True)`` is odd iff q is a key.

    If q = K_i the insertion point is just past 2K_i, slot 2i+1; if
    K_{i-1} < q < K_i it is just past 2K_{i-1}+1, slot 2i. So one search both
    finds a context and says whether it is there, and slot 2i+1 addresses
    context i's data while every even slot addresses "not seen".
    """
    out = np.empty(2 * sorted_keys.size, dtype=np.int64)
    out[0::2] = 2 * sorted_keys
    out[1::2] = 2 * sorted_keys + 1
    return out


class StepPlan:
    """One estimate of one table, laid out for the per-step path on one device.

    Call it with contexts [B, T] (any T; ids outside [0, V) never match) to
    get float32 [B, V]: natural-log probabilities (Kneser-Ney, mixture, a
    single order) or the logsum score. Tables build theirs with :meth:`ngram.NGramTable.plan`.
    ``dense_bytes`` bounds the dense rows (default :data:`DENSE_ROWS_BYTES`).
    """

    def __init__(self, coeffs: Coefficients, stored: dict, order: int, vocab_size: int, hashed_orders,
                 seed: int, device: torch.device, accelerator: bool | None = None,
                 dense_bytes: int = DENSE_ROWS_BYTES):
        self.kind = coeffs.kind
        self.vocab_size = v = vocab_size
        self.b1 = coeffs.b1
        self.device = device
        self.orders = coeffs.orders
        self.width = max(self.orders) - 1 if self.orders else 0  # ids of context the plan reads
        put = _mover(device)
        self.p1 = put(coeffs.unigram)
        # The accelerator layout (default off the CPU): float64 keys where they
        # are exact (integer matmul is missing there) and never the ragged gather.
        self.accelerator = device.type != "cpu" if accelerator is None else bool(accelerator)
        self.ragged_min_slots = None if self.accelerator else RAGGED_MIN_SLOTS
        if not self.orders:
            self.constant = put(_finish_np(coeffs))
            return

        tokens = [context_tokens(stored, k, v, hashed_orders) for k in self.orders]
        sizes = [t.shape[0] for t in tokens]
        n = sum(sizes)
        base, full, parent = chain_values(coeffs, stored, v, hashed_orders, seed,
                                          dict(zip(self.orders, tokens, strict=True)))
        fan = [np.diff(stored[f"o{k}.offsets"].numpy().astype(np.int64)) for k in self.orders]
        dense_ids, rows = _dense_rows(base, full, parent, fan, stored, self.orders, dense_bytes)
        self.dense_count = rows.shape[0] - 1

        # Keys. Exact: the context of suffix length m (order m+1), ids t (oldest
        # first) made digits t+1 in base P = V+2 (so -1 and V, where out-of-range
        # ids are clamped, are digits no stored context has), offset into a range
        # of its own per order: off_m + sum_j (t_j+1) P^(m-1-j), off_1 = 0,
        # off_{m+1} = off_m + P^m. All orders then share one sorted array.
        base_p = v + 2
        offs = [0]
        for m in range(1, self.width + 1):
            offs.append(offs[-1] + base_p**m)
        # Doubled keys (see _interleave) find a context and say whether it is there in one search;
        # where only the keys themselves fit int64 (order 5 at V = 49,152), a search and one compare.
        self.exact = offs[-1] <= _INT63
        self.doubled = 2 * offs[-1] + 1 <= _INT63
        scale = 2 if self.doubled else 1
        self.key_limit = scale * offs[-1] + 2  # every query key lies below it
        perms, new_keys = [], []
        for k, tok in zip(self.orders, tokens, strict=True):
            if not self.exact:  # the table's own order
                perms.append(np.arange(tok.shape[0]))
                continue
            key = np.zeros(tok.shape[0], np.int64)
            for j in range(k - 1):
                key = key * base_p + tok[:, j] + 1
            perm = np.argsort(key, kind="stable")  # hashed orders are stored in hash order
            perms.append(perm)
            new_keys.append(key[perm] + offs[k - 2])

        # Entries of all orders in one array: slot 0 and one slot after every
        # context hold a separator (next id 0, value -inf), so a window that runs
        # past a context's end reads separators and the max-scatter ignores them.
        # Contexts with a dense row keep their entries but get an empty window.
        fan_new = np.concatenate([f[perm] for f, perm in zip(fan, perms, strict=True)])
        is_dense = np.concatenate([ids[perm] > 0 for ids, perm in zip(dense_ids, perms, strict=True)])
        start = 1 + np.cumsum(fan_new + 1) - (fan_new + 1)  # exclusive prefix sum: one slot per context
        end = start + fan_new
        total = 1 + int(fan_new.sum()) + n
        cols = np.zeros(total, np.int64)
        vals = np.full(total, -np.inf)
        first = 0
        for k, f, perm, values in zip(self.orders, fan, perms, full, strict=True):
            where = np.empty_like(perm)
            where[perm] = np.arange(perm.size)  # stored context -> its place in the layout
            ctx = np.repeat(np.arange(f.size), f)  # stored context of every entry
            rank = np.arange(ctx.size) - (np.cumsum(f) - f)[ctx]  # entry's rank within its context
            dest = start[first + where[ctx]] + rank
            cols[dest] = stored[f"o{k}.next_ids"].numpy()
            vals[dest] = values
            first += f.size
        self.support = self.column_of = None
        if self.kind == "mixture" and not self.accelerator:  # on an accelerator the launches cost more
            support = _compact_support(rows, cols, coeffs.unigram if self.b1 == 0 else None)
            if support is not None:
                # Columns outside the support equal column `rest` in every row: they become one
                # column (index nU), repeated up to a multiple of 64 so that every row is whole
                # vectors for the elementwise kernels (the same kernel path, so the same values, as
                # the full rows). column_of maps a token to its column (rest -> nU).
                keep, rest = support
                width = -(-(keep.size + 1) // 64) * 64
                column_of = np.full(v, keep.size, np.int64)
                column_of[keep] = np.arange(keep.size)
                take = np.concatenate([keep, np.full(width - keep.size, rest)])
                rows, cols = rows[:, take], column_of[cols]
                self.p1_columns = put(coeffs.unigram[take])
                self.support, self.column_of = put(keep), put(column_of)
        self.rows = put(rows)  # (1 + M, V or the support's width): row 0 has no context
        self.cols, self.full = put(cols), put(vals)
        start[is_dense] = end[is_dense] = 0
        # Each order gets a window as wide as its widest context without a dense
        # row, F_k; the windows of all orders sit side by side in one row of
        # S = sum_k F_k slots: slot j reads order column[j] at offset window[j].
        widths, first = [], 0
        for f in fan:
            open_fan = fan_new[first : first + f.size][~is_dense[first : first + f.size]]
            widths.append(max(int(open_fan.max()) if open_fan.size else 0, 1))
            first += f.size
        self.halvings = _halvings(max(widths))
        self.column = torch.tensor(np.repeat(np.arange(len(widths)), widths), device=device)  # (S,)
        self.window = torch.from_numpy(np.concatenate([np.arange(w) for w in widths])).to(device)  # (S,)

        # Per-slot data, 2n+1 slots: context i at slot 2i+1, "not seen" at even slots.
        def slots(per_ctx: np.ndarray, missing) -> np.ndarray:
            out = np.empty((2 * n + 1,) + per_ctx.shape[1:], per_ctx.dtype)
            out[0::2] = missing
            out[1::2] = per_ctx
            return out

        rows_ = np.concatenate([oc.row[perm] for oc, perm in zip(coeffs.per_order, perms, strict=True)])
        self.start = put(slots(start, 0))  # (2n+1,)
        self.end = put(slots(end, 0))
        self.dense_id = put(slots(np.concatenate([ids[perm] for ids, perm in zip(dense_ids, perms, strict=True)]), 0))
        self.row = put(slots(rows_, np.asarray(coeffs.missing_row)))  # (2n+1, r)
        # Kneser-Ney's per-row number is log G(h_K) = min over the found contexts of log G.
        self.row_1d = (self.row[:, 0].log() if self.kind == "kneser_ney" else self.row[:, 0]).contiguous()  # (2n+1,)

        if self.exact:
            # Query: 2 * key (or the key) as a matrix product of the clamped ids [B, w] with
            # W[r, col] = 2 P^(w-1-r) for the last m columns, plus a per-order
            # bias that holds the +1 of every digit and the order offset.
            weight = np.zeros((self.width, len(self.orders)), dtype=object)
            bias = np.zeros(len(self.orders), dtype=object)
            for col, k in enumerate(self.orders):
                m = k - 1
                for i in range(m):  # i-th id from the end
                    weight[self.width - 1 - i, col] = scale * base_p**i
                bias[col] = scale * (offs[m - 1] + sum(base_p**i for i in range(m)))
            float_keys = self.accelerator and device.type != "mps" and scale * offs[-1] + 1 <= _FLOAT_EXACT
            self.matmul = device.type == "cpu" or float_keys
            kdtype = torch.float64 if float_keys else torch.int64
            self.q_weight = torch.tensor(weight.astype(np.float64 if float_keys else np.int64), dtype=kdtype,
                                         device=device)
            self.q_bias = torch.tensor(bias.astype(np.float64 if float_keys else np.int64), dtype=kdtype,
                                       device=device)
            keys_np = np.concatenate(new_keys) if new_keys else np.zeros(0, np.int64)
            # Undoubled keys end with offs[-1], above every query key, so a search never runs off the end.
            keys_np = _interleave(keys_np) if self.doubled else np.append(keys_np, offs[-1])
            self.keys = torch.from_numpy(keys_np).to(device=device, dtype=kdtype)
        else:
            # Orders whose contexts do not fit one int64 range: one search per order
            # in the table's own keys (hashed ones check the stored tokens).
            self.seed = seed
            self.per_order = []
            slot0 = 0
            for k, size in zip(self.orders, sizes, strict=True):
                p = f"o{k}."
                arrays = {p + "ctx_keys": put(stored[p + "ctx_keys"].numpy())}
                if k in hashed_orders:
                    arrays[p + "ctx_tokens"] = put(stored[p + "ctx_tokens"].numpy())
                self.per_order.append((OrderMeta(k=k, hashed=k in hashed_orders, n_ctx=size), arrays, slot0))
                slot0 += 2 * size

    # ------------------------------------------------------------------ step
    def __call__(self, contexts: torch.Tensor) -> torch.Tensor:
        if not self.orders:
            return self.constant.expand(contexts.shape[0], -1).clone()
        return self.step(self.tail(contexts))

    def tail(self, contexts: torch.Tensor) -> torch.Tensor:
        """The last N-1 ids of every row, [B, N-1]; rows shorter than that are padded with -1 (matches nothing)."""
        return last_ids(contexts, self.width)

    def step(self, tail: torch.Tensor) -> torch.Tensor:
        """The estimate from exactly the last N-1 ids of every row, ``tail`` [B, N-1] (static shapes)."""
        # 1-2. Every order's key (one matrix product) and its slot (one search).
        slot = self.slots(tail)
        # 3. Dense-row ids grow with the order, so the largest id among a row's
        # contexts is its deepest context with a dense row (0: none).
        out = self.rows.index_select(0, torch.take(self.dense_id, slot).amax(dim=1))  # (B, V)
        if not self.windows_fit(tail.shape[0]):
            self._scatter_ragged(out, slot)
        else:
            # 4. Every context's window of entries; where several orders stored w, the
            # highest one's value is the largest and already holds the lower orders'
            # terms (see chain_values), so one max-scatter lands them all.
            pos = _window_positions(self, slot)  # (B, S)
            out.scatter_reduce_(1, torch.take(self.cols, pos), torch.take(self.full, pos), "amax")
        # 5. The estimator's per-row part, in place on ``out`` (which the step owns).
        if self.kind == "kneser_ney":
            # log G(h_K): the longest context's G is the smallest G found (G <= 1, 1 where not seen).
            return out.add_(torch.take(self.row_1d, slot).amin(dim=1, keepdim=True))
        if self.kind == "logsum":
            return out.add_(torch.take(self.row_1d, slot).sum(dim=1, keepdim=True))
        out = self._finish_mixture(out, slot)
        return out if self.support is None else self._widen(out)

    def score(self, tail: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The estimate at one next id per row, float32 [B]: ``step(tail)`` gathered at ``targets`` [B].

        Never builds a [B, V] row. A row's value at w is its start row's entry
        at w (the deepest context with a dense row) or, if larger, the entry for
        w of any deeper context it matched (a binary search within that
        context's entries), then the estimator's per-row finish, op for op as in :meth:`step`.
        """
        targets = targets.long()
        if not self.orders:
            return self.constant[targets]
        slot = self.slots(tail)
        columns = targets if self.column_of is None else self.column_of[targets]
        val = self.rows[torch.take(self.dense_id, slot).amax(dim=1), columns]  # (B,)
        found = _entry_values(self, slot, columns[:, None].expand_as(slot)).amax(dim=1)  # (B,)
        val = torch.maximum(val, found)
        if self.kind == "kneser_ney":
            return val + torch.take(self.row_1d, slot).amin(dim=1)
        if self.kind == "logsum":
            return val + torch.take(self.row_1d, slot).sum(dim=1)
        s = self.row[slot].sum(dim=1)  # (B, 2): as in _finish_mixture
        val = val + s[:, 0]
        z = s[:, 1] + self.b1
        if self.b1 == 0:
            none = z == 0
            val = val + none.float() * self.p1[targets]
            z = z + none
        return (val / z).log()

    def windows_fit(self, rows: int) -> bool:
        """Whether ``rows`` rows take the static windows (always off the CPU, and when compiling)."""
        return _windows_fit(self, rows)

    def _finish_mixture(self, out: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """The mixture's finish: add the matched orders' smoothing mass, divide by their weights, log."""
        s = self.row[slot].sum(dim=1)  # (B, 2)
        out.add_(s[:, :1])
        z = s[:, 1:] + self.b1
        if self.b1 == 0:  # b_1 = 0 and nothing matched: fall back to p_1
            none = z == 0
            out.addcmul_(none.float(), self.p1 if self.support is None else self.p1_columns)
            z = z + none
        return out.div_(z).log_()

    def _widen(self, out: torch.Tensor) -> torch.Tensor:
        """[B, V] from the support's columns: column nU (the rest) everywhere, then the support scattered in."""
        n = self.support.shape[0]
        full = out[:, n : n + 1].expand(-1, self.vocab_size).contiguous()  # (B, V): a fill, no log
        return full.scatter_(1, self.support.expand(out.shape[0], -1), out[:, :n])

    def _scatter_ragged(self, out: torch.Tensor, slot: torch.Tensor) -> None:
        """The windows' max-scatter from each context's actual entries (CPU, large batches): more ops, less work."""
        c = slot.shape[1]
        start = torch.take(self.start, slot).view(-1)  # (P,) one per (row, order)
        length = torch.take(self.end, slot).view(-1) - start
        total = int(length.sum())
        # Pair p owns slots [first_p, first_p + length_p) of a flat array of all
        # entries; slot j of pair p reads entry start_p + j - first_p.
        pair = torch.repeat_interleave(length, output_size=total)  # (L,): each entry's pair
        shift = start - (torch.cumsum(length, 0) - length)
        pos = torch.take(shift, pair) + torch.arange(total)
        flat = (pair // c) * out.shape[1] + torch.take(self.cols, pos)  # (L,) into the [B, W] rows
        out.view(-1).scatter_reduce_(0, flat, torch.take(self.full, pos), "amax")

    def slots(self, tail: torch.Tensor) -> torch.Tensor:
        """Every row's slot per order, [B, c]: 2i+1 for context i, an even slot where the context is not stored."""
        if not self.exact:
            return self._slots_per_order(tail)
        q = _query(self, tail)
        if self.doubled:
            return torch.searchsorted(self.keys, q, right=True)
        # Undoubled keys: the first key >= q is K_i; slot 2i+1 where it equals q, else 2i (as doubled keys give).
        idx = torch.searchsorted(self.keys, q)
        return 2 * idx + (torch.take(self.keys, idx) == q)

    def _slots_per_order(self, tail: torch.Tensor) -> torch.Tensor:
        """Slots of tables whose keys do not fit one int64 range: one search per order."""
        ids, ok_from = prepare_tail(tail, self.width + 1, self.vocab_size)
        out = []
        for meta, arrays, slot0 in self.per_order:
            hit = find_contexts(arrays, meta, ids, ok_from, self.vocab_size, self.seed)
            if hit is None:
                out.append(torch.zeros(tail.shape[0], dtype=torch.long, device=tail.device))
                continue
            found, idx = hit
            out.append(torch.where(found, slot0 + 2 * idx + 1, 0))
        return torch.stack(out, dim=1)


class ContrastPlan:
    """Two tables' Kneser-Ney estimates in one pass: [B, 2, V] = (log p_a, log p_b) per row.

    Built from two plans of the same vocabulary, number of orders and device
    (:meth:`combine`): their keys share one sorted array (b's shifted above a's,
    with one unused context between them so that "not seen" slots stay apart),
    their dense rows one table and their entries one array whose b part lands
    in columns V..2V-1; the step is :meth:`StepPlan.step`'s, once, over both.
    Values equal the two plans' own, bit for bit.
    """

    def __init__(self, a: StepPlan, b: StepPlan):
        v, c = a.vocab_size, len(a.orders)
        self.vocab_size, self.orders, self.width = v, c, max(a.width, b.width)
        off = a.key_limit + 2  # even: b's keys keep their parity (odd slot = seen)
        kdtype = a.keys.dtype
        self.keys = torch.cat([a.keys, torch.tensor([a.key_limit, a.key_limit + 1], dtype=kdtype,
                                                    device=a.keys.device), b.keys + off])

        def top_rows(w):  # a plan's key weights sit in the rows of its own (latest) positions
            return torch.nn.functional.pad(w, (0, 0, self.width - w.shape[0], 0))

        self.q_weight = torch.cat([top_rows(a.q_weight), top_rows(b.q_weight)], dim=1)  # (w, 2c)
        self.q_bias = torch.cat([a.q_bias, b.q_bias + off])
        self.matmul, self.ragged_min_slots = a.matmul, a.ragged_min_slots
        n_a = a.cols.shape[0]
        zero = a.start.new_zeros(1)
        self.dense_id = torch.cat([a.dense_id, zero, b.dense_id + a.rows.shape[0]])
        self.log_g = torch.cat([a.row_1d, a.row_1d.new_zeros(1), b.row_1d])
        self.start = torch.cat([a.start, zero, b.start + n_a])
        self.end = torch.cat([a.end, zero, b.end + n_a])
        self.cols = torch.cat([a.cols, b.cols + v])
        self.full = torch.cat([a.full, b.full])
        self.rows = torch.cat([a.rows, b.rows])
        self.column = torch.cat([a.column, b.column + c])
        self.window = torch.cat([a.window, b.window])
        self.device = a.device
        self.halvings = max(a.halvings, b.halvings)
        # b's entries sit in columns V..2V-1: score's targets move up by V in b's orders.
        self.target_shift = torch.arange(2, device=a.device).repeat_interleave(c) * v  # (2c,)

    @classmethod
    def combine(cls, a: StepPlan, b: StepPlan) -> ContrastPlan | None:
        """The joint plan of ``a`` and ``b``, or None where one pass cannot hold both."""
        ok = (a.kind == b.kind == "kneser_ney" and a.orders and b.orders and len(a.orders) == len(b.orders)
              and a.doubled and b.doubled and a.vocab_size == b.vocab_size and a.device == b.device
              and a.keys.dtype == b.keys.dtype and a.matmul == b.matmul)
        if not ok:
            return None
        limit = _FLOAT_EXACT if a.keys.dtype == torch.float64 else _INT63
        if a.key_limit + 2 + b.key_limit > limit:
            return None
        # Built once per pair of plans (a copy of both; ~0.1 s on SmolLM2's tables): processors
        # that differ only in strength share it. Weak keys: the pair goes with either plan.
        pairs = _PAIRS.setdefault(a, weakref.WeakKeyDictionary())
        if b not in pairs:
            pairs[b] = cls(a, b)
        return pairs[b]

    def __call__(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.step(last_ids(contexts, self.width))

    def windows_fit(self, rows: int) -> bool:
        """Whether ``rows`` rows stay within the windows' slot budget (there is no ragged gather here)."""
        return _windows_fit(self, rows)

    def score(self, tail: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Both estimates at one next id per row, float32 [P, 2]: ``step(tail)`` gathered at ``targets`` [P].

        :meth:`StepPlan.score` over both tables in one pass: one search for the
        contexts of both, one bounded search in the entries of both, values bit for bit the
        two plans' own.
        """
        p, c = tail.shape[0], self.orders
        targets = targets.long()
        slot = torch.searchsorted(self.keys, _query(self, tail), right=True)  # (P, 2c): a's orders, then b's
        per_table = slot.view(p, 2, c)
        val = self.rows[torch.take(self.dense_id, per_table).amax(dim=2), targets[:, None]]  # (P, 2)
        wanted = targets[:, None] + self.target_shift  # (P, 2c): b's orders look for target + V
        found = _entry_values(self, slot, wanted).view(p, 2, c).amax(dim=2)  # (P, 2)
        return torch.maximum(val, found) + torch.take(self.log_g, per_table).amin(dim=2)

    def step(self, tail: torch.Tensor) -> torch.Tensor:
        """float32 [B, 2, V] from exactly the last ``width`` ids of every row."""
        b, c = tail.shape[0], self.orders
        slot = torch.searchsorted(self.keys, _query(self, tail), right=True)  # (B, 2c): a's orders, then b's
        per_table = slot.view(b, 2, c)
        out = self.rows[torch.take(self.dense_id, per_table).amax(dim=2)]  # (B, 2, V): each table's start row
        pos = _window_positions(self, slot)  # (B, S_a + S_b)
        out.view(b, 2 * self.vocab_size).scatter_reduce_(1, torch.take(self.cols, pos), torch.take(self.full, pos),
                                                         "amax")
        return out.add_(torch.take(self.log_g, per_table).amin(dim=2, keepdim=True))


_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # plan a -> {plan b: ContrastPlan}


def _windows_fit(plan, rows: int) -> bool:
    return (plan.ragged_min_slots is None or rows * plan.window.shape[0] <= plan.ragged_min_slots
            or torch.compiler.is_compiling())


def _query(plan, tail: torch.Tensor) -> torch.Tensor:
    """2 * key of every order's context, [B, c]: a matrix product of the clamped ids (see StepPlan)."""
    digits = tail.clamp(-1, plan.vocab_size).to(plan.keys.dtype)  # (B, w)
    if plan.matmul:
        return torch.addmm(plan.q_bias, digits, plan.q_weight)
    # integer keys where integer matmul is missing
    return (digits[:, :, None] * plan.q_weight).sum(dim=1) + plan.q_bias


def _halvings(width: int) -> int:
    """Halvings a binary search needs to narrow a range of ``width`` entries down to one."""
    return max(width - 1, 0).bit_length()


def _entry_values(plan, slot: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """The stored value of (each slot's context, the column ``wanted`` of it), -inf where none is stored, [P, k].

    A context's entries fill [start, end) of the entry arrays with their columns ascending (contexts
    with a dense row, and unseen ones, have an empty range: the start row holds theirs). A few rows
    compare every slot of their windows with the wanted column; more rows run a binary search
    bounded to each context's own range, the same number of halvings for all (enough for the widest
    range): a few cache lines per pair, never a search over every entry of the table. It is
    branch-free: the range [base, base + n) keeps the last column <= wanted.
    """
    p, k = slot.shape
    if p * plan.window.shape[0] <= SCORE_WINDOW_SLOTS:
        pos = _window_positions(plan, slot)  # (P, S); past a context's end: its separator (-inf)
        hit = torch.take(plan.cols, pos) == wanted.index_select(1, plan.column)
        values = torch.where(hit, torch.take(plan.full, pos), -torch.inf)
        return values.new_full((p, k), -torch.inf).scatter_reduce_(1, plan.column.expand(p, -1), values, "amax")
    base = torch.take(plan.start, slot)  # (P, k)
    n = torch.take(plan.end, slot) - base
    if plan.ragged_min_slots is not None and not torch.compiler.is_compiling():
        # On a CPU (where reading which pairs have entries costs no sync) search only those: about
        # half of them in held-out text, the others' contexts being unseen or held in a dense row.
        live = n.view(-1).nonzero().squeeze(1)
        out = torch.full((n.numel(),), -torch.inf, dtype=plan.full.dtype)
        out[live] = _search_entries(plan, base.view(-1)[live], n.view(-1)[live], wanted.reshape(-1)[live])
        return out.view(n.shape)
    return _search_entries(plan, base, n, wanted)


def _search_entries(plan, base: torch.Tensor, n: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """The value of column ``wanted`` among the ``n`` entries from ``base`` (ascending columns), -inf if absent."""
    for _ in range(plan.halvings):
        half = n >> 1
        base = base + half * (torch.take(plan.cols, base + half) <= wanted)
        n = n - half
    hit = (n > 0) & (torch.take(plan.cols, base) == wanted)
    return torch.where(hit, torch.take(plan.full, base), -torch.inf)


def _window_positions(plan, slot: torch.Tensor) -> torch.Tensor:
    """Entry positions [B, S] of every window slot: a window from each context's start, the slots
    past its end all reading its separator. torch.take: a flat gather for any index shape."""
    slot_s = slot.index_select(1, plan.column)  # (B, S): each window slot's context
    return torch.minimum(torch.take(plan.start, slot_s) + plan.window, torch.take(plan.end, slot_s))


def last_ids(contexts: torch.Tensor, width: int) -> torch.Tensor:
    """The last ``width`` ids of every row, [B, width]; shorter rows are padded with -1 (matches nothing)."""
    t = contexts.shape[1]
    if t >= width:
        return contexts[:, t - width :]
    return torch.nn.functional.pad(contexts, (width - t, 0), value=-1)


def _dense_rows(base: np.ndarray, full: list, parent: list, fan: list, stored: dict, orders: list,
                dense_bytes: int):
    """(per order: each context's dense-row id, 0 for none; the rows float32 [1 + M, V], row 0 = ``base``).

    The contexts with the widest fan-outs, as many as ``dense_bytes`` allows,
    get their whole row: ``base`` with every entry of every context on their
    suffix chain written over it, lowest order first. A context's suffix has at
    least its fan-out, so a chosen context's suffix is chosen too; ids are
    numbered order by order, so a deeper context's id is larger.
    """
    v = base.size
    budget = int(dense_bytes) // (4 * v) - 1
    fans = np.concatenate(fan) if fan else np.zeros(0, np.int64)
    if budget <= 0 or fans.size == 0:
        threshold = np.inf
    elif np.count_nonzero(fans > MIN_DENSE_FAN) <= budget:
        threshold = MIN_DENSE_FAN
    else:
        threshold = np.sort(fans)[::-1][budget]  # at most `budget` fan-outs lie above it
    ids, blocks, next_id, below = [], [base.astype(np.float32)[None]], 1, None
    for k, f, values, up in zip(orders, fan, full, parent, strict=True):
        chosen = np.flatnonzero(f > threshold)
        own = np.zeros(f.size, np.int64)
        own[chosen] = np.arange(next_id, next_id + chosen.size)
        if below is None:
            block = np.repeat(base.astype(np.float32)[None], chosen.size, axis=0)
        else:
            prev_ids, prev_block, prev_first = below
            assert np.all(prev_ids[up[chosen]] > 0)  # the suffix has a row too
            block = prev_block[prev_ids[up[chosen]] - prev_first]
        off = stored[f"o{k}.offsets"].numpy().astype(np.int64)
        nxt = stored[f"o{k}.next_ids"].numpy().astype(np.int64)
        lens = f[chosen]
        row = np.repeat(np.arange(chosen.size), lens)  # block row of every chosen entry
        entry = np.repeat(off[chosen] - (np.cumsum(lens) - lens), lens) + np.arange(row.size)
        block[row, nxt[entry]] = values[entry]  # the context's own entries over its suffix's row
        ids.append(own)
        blocks.append(block)
        below = (own, block, next_id)
        next_id += chosen.size
    return ids, np.concatenate(blocks)


def _compact_support(rows: np.ndarray, cols: np.ndarray, p1: np.ndarray | None):
    """(the columns a mixture must compute, sorted; a column standing for all others), or None.

    A column outside the support has, in every dense row (and in ``p1`` when the
    finish reads it), the value of the returned column, and no stored entry:
    every row's estimate there is that column's. None when the support is more
    than :data:`COMPACT_MAX_SHARE` of the vocabulary (nothing to gain).
    """
    v = rows.shape[1]
    stored = np.zeros(v, bool)
    stored[cols] = True  # slot 0 and the separators read column 0: kept like a stored token
    if stored.all():
        return None
    rest = int(np.flatnonzero(~stored)[np.argmin(rows[0, ~stored])])
    keep = stored | (rows != rows[:, rest : rest + 1]).any(axis=0)
    if p1 is not None:
        keep |= p1.astype(np.float32) != np.float32(p1[rest])
    if keep.sum() > COMPACT_MAX_SHARE * v:
        return None
    return np.flatnonzero(keep), rest


def _mover(device: torch.device):
    """numpy -> torch on ``device``: floats as float32, integers as int64."""
    def put(a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a)
        dtype = torch.float32 if a.dtype.kind == "f" else torch.int64
        return torch.from_numpy(a).to(device=device, dtype=dtype)
    return put


def _finish_np(coeffs: Coefficients) -> np.ndarray:
    """The row every context gets when no order above 1 takes part."""
    if coeffs.kind == "logsum":
        return coeffs.dense
    return np.log(coeffs.unigram)  # Kneser-Ney, or a mixture of p_1 alone
