"""Brute-force pure-Python n-gram estimates, written from the formulas in the docstrings."""

from __future__ import annotations

import math
from collections import Counter


class BruteNGram:
    def __init__(self, docs, vocab_size: int, order: int):
        self.v = vocab_size
        self.n = order
        self.c = Counter()  # tuple -> count, all orders
        for doc in docs:
            doc = list(doc)
            for k in range(1, order + 1):
                for i in range(len(doc) - k + 1):
                    self.c[tuple(doc[i : i + k])] += 1
        self.total = sum(len(list(d)) for d in docs)
        # continuation counts: distinct u with c(u, *g) > 0
        self.cont = Counter()
        for g in self.c:
            if len(g) >= 2:
                self.cont[g[1:]] += 1

    def ctx_total(self, h, table):
        return sum(table[h + (w,)] for w in range(self.v))

    def p_add(self, ctx, w, k, a):
        if k == 1:
            return (self.c[(w,)] + a) / (self.total + a * self.v)
        if len(ctx) < k - 1:
            return 1 / self.v
        h = tuple(ctx[len(ctx) - (k - 1):])
        return (self.c[h + (w,)] + a) / (self.ctx_total(h, self.c) + a * self.v)

    def matches(self, ctx, k):
        if k == 1:
            return True
        if len(ctx) < k - 1:
            return False
        return self.ctx_total(tuple(ctx[len(ctx) - (k - 1):]), self.c) > 0

    def combine(self, ctx, w, weights, a, mode):
        ks = [k for k in range(1, self.n + 1) if self.matches(ctx, k) and weights[k - 1] > 0]
        if mode == "logsum":
            return sum(weights[k - 1] * math.log(self.p_add(ctx, w, k, a)) for k in ks)
        z = sum(weights[k - 1] for k in ks)
        if z == 0:
            return math.log(self.p_add(ctx, w, 1, a))
        return math.log(sum(weights[k - 1] * self.p_add(ctx, w, k, a) for k in ks) / z)

    def p_kn(self, ctx, w, k, d):
        table = self.c if k == self.n else self.cont
        if k == 1:
            c1 = [table[(x,)] for x in range(self.v)]
            tot = sum(c1)
            if tot == 0:
                return 1 / self.v
            n1 = sum(1 for x in c1 if x > 0)
            return max(c1[w] - d, 0) / tot + d * n1 / tot / self.v
        if len(ctx) < k - 1:
            return self.p_kn(ctx, w, k - 1, d)
        h = tuple(ctx[len(ctx) - (k - 1):])
        lower = self.p_kn(ctx, w, k - 1, d)
        tot = self.ctx_total(h, table)
        if tot == 0:
            return lower
        n = sum(1 for x in range(self.v) if table[h + (x,)] > 0)
        return max(table[h + (w,)] - d, 0) / tot + d * n / tot * lower
