"""One context at a time on the CPU: a plan's row and point values with Python control flow.

A batched step (:class:`ngram.lookup.StepPlan`) is about twenty torch ops whatever the batch; at
one row on a CPU each op's fixed cost is most of the step, and more so in an engine's per-token
callback, where the engine's own work has just left the caches cold (llama.cpp: 0.35-0.45 ms for
the step there against 0.07 ms warm, ``docs/serving.md``). :class:`HostLookup` answers the same
questions for one context from the plan's own arrays, seen as numpy: the keys of its few orders
in Python integers, one ``searchsorted`` for their slots, then the start row and each found
context's entries by slicing. Values equal the plan's bit for bit (tests/ngram/test_host.py).

It serves the plans whose per-row finish is one number (Kneser-Ney, logsum) on exact keys;
:func:`host_lookup` says None for the others (the mixture, keys searched order by order, a plan
with no context), which keep the batched step.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from ngram.lookup import ContrastPlan, StepPlan

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # plan -> its HostLookup


def host_lookup(plan: StepPlan | ContrastPlan) -> HostLookup | None:
    """The one-context lookup of ``plan`` (built once per plan), or None where it does not apply."""
    if plan not in _CACHE:
        _CACHE[plan] = HostLookup(plan) if _servable(plan) else None
    return _CACHE[plan]


def _servable(plan) -> bool:
    if plan.device.type != "cpu" or not plan.orders:
        return False
    if isinstance(plan, ContrastPlan):
        return True  # built only from two exact Kneser-Ney plans
    return plan.exact and plan.kind in ("kneser_ney", "logsum")


class HostLookup:
    """A CPU plan's arrays as numpy views and its key weights as Python numbers.

    A :class:`ngram.lookup.ContrastPlan` holds two tables: its orders sit side by side in the slots
    (a's, then b's) and b's entries in columns V..2V-1 of the joint entry arrays, so the values
    come back as [k, 2]; a :class:`ngram.lookup.StepPlan` gives [k, 1].
    """

    def __init__(self, plan: StepPlan | ContrastPlan):
        contrast = isinstance(plan, ContrastPlan)
        self.vocab_size, self.width = plan.vocab_size, plan.width
        self.tables = 2 if contrast else 1
        self.logsum = not contrast and plan.kind == "logsum"
        self.doubled = contrast or plan.doubled
        self.keys = plan.keys.numpy()
        self.weight, self.bias = plan.q_weight.tolist(), plan.q_bias.tolist()  # [w][c'], [c']
        self.dense_id, self.start, self.end = plan.dense_id.numpy(), plan.start.numpy(), plan.end.numpy()
        self.cols, self.full, self.rows = plan.cols.numpy(), plan.full.numpy(), plan.rows.numpy()
        self.per_row = (plan.log_g if contrast else plan.row_1d).numpy()  # the finish's number per slot

    def slots(self, tail: Sequence[int]) -> list[int]:
        """The slot of every order's context (a's orders, then b's), from exactly the last ``width`` ids."""
        q = list(self.bias)
        for digit, weights in zip(tail, self.weight, strict=True):
            digit = min(max(int(digit), -1), self.vocab_size)  # clamped as the batched query clamps
            for j, w in enumerate(weights):
                q[j] += w * digit
        if self.doubled:
            return np.searchsorted(self.keys, q, side="right").tolist()
        # Undoubled keys: slot 2i+1 where the first key >= q equals it, else 2i (see StepPlan.slots).
        idx = np.searchsorted(self.keys, q).tolist()
        return [2 * i + int(self.keys[i] == k) for i, k in zip(idx, q, strict=True)]

    def _finish(self, slots: list[int]) -> np.float32:
        """The per-row number: the min of log G over the orders (Kneser-Ney) or the sum of their terms
        (logsum), summed one by one in float32 as the batched step's reduction does."""
        values = [self.per_row[s] for s in slots]
        if not self.logsum:
            return min(values)
        total = np.float32(0)
        for v in values:
            total = np.float32(total + v)
        return total

    def _spans(self, slots: list[int]):
        """(start, end) of the entries of every found context without a dense row."""
        for s in slots:
            a, b = int(self.start[s]), int(self.end[s])
            if b > a:
                yield a, b

    def row(self, tail: Sequence[int], out: np.ndarray) -> np.ndarray:
        """The estimate for the context ``tail`` (its last ``width`` ids), written into float32 ``out``
        [tables, V] (a contrast plan's two tables: [2, V]) and returned."""
        slots = self.slots(tail)
        c = len(slots) // self.tables
        flat = out.reshape(-1)  # a view: b's entries land in columns V..2V-1 of it
        for t in range(self.tables):
            mine = slots[t * c : (t + 1) * c]
            finish = self._finish(mine)
            np.add(self.rows[max(int(self.dense_id[s]) for s in mine)], finish, out=out[t])
            # The batched step takes the max of the start row and every entry, then adds the finish;
            # rounding is monotonic, so max(row + f, entry + f) is the same float.
            for a, b in self._spans(mine):
                cols = self.cols[a:b]
                flat[cols] = np.maximum(flat[cols], self.full[a:b] + finish)
        return out

    def values(self, tail: Sequence[int], targets: np.ndarray) -> np.ndarray:
        """The estimate at the next ids ``targets`` [k] for the context ``tail``, float32 [k, tables]."""
        targets = np.asarray(targets, dtype=np.int64)
        slots = self.slots(tail)
        c = len(slots) // self.tables
        out = np.empty((targets.shape[0], self.tables), np.float32)
        for t in range(self.tables):
            mine = slots[t * c : (t + 1) * c]
            val = self.rows[max(int(self.dense_id[s]) for s in mine), targets]  # the start row's values
            wanted = targets + t * self.vocab_size  # b's entries sit in columns V..2V-1
            for a, b in self._spans(mine):
                cols = self.cols[a:b]  # ascending
                i = np.minimum(np.searchsorted(cols, wanted), b - a - 1)
                val = np.where(cols[i] == wanted, np.maximum(val, self.full[a + i]), val)
            out[:, t] = val + self._finish(mine)
        return out


def tail_of(ids, width: int) -> list[int]:
    """The last ``width`` ids of one sequence (a list, a 1-D array or tensor), padded on the left with -1
    as :func:`ngram.lookup.last_ids` pads."""
    tail = ids[max(len(ids) - width, 0) :] if width else ids[:0]
    tail = tail.tolist() if hasattr(tail, "tolist") else list(tail)
    return [-1] * (width - len(tail)) + tail
