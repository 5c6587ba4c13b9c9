"""One context at a time on the host: the batched plans' values, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ngram import ContrastPlan, NGramTable, last_ids
from ngram import lookup as ngram_lookup
from ngram.host import host_lookup, tail_of

SERVED = [dict(mode="logsum", weights=(0.2, 0.3, 0.5)), dict(smoothing="kneser_ney"),
          dict(smoothing="kneser_ney", discount=0.4), dict(order=2), dict(mode="logsum", weights=(1, 0, 1))]


def _table(seed: int, docs: int = 6) -> NGramTable:
    rng = np.random.default_rng(seed)
    return NGramTable.from_token_ids([np.minimum(rng.zipf(1.3, size=400), 300) - 1 for _ in range(docs)], 300, 3)


@pytest.fixture(scope="module")
def table():
    return _table(0)


def _cases(seed=7, n=48):
    g = torch.Generator().manual_seed(seed)
    frequent = torch.randint(0, 12, (n, 7), generator=g)  # seen contexts
    rare = torch.randint(0, 300, (n, 7), generator=g)
    odd = torch.tensor([[-1, 5, 2, 1, 300, 1, 2], [3, 1, 2, 1, 2, -5, 10**6], [0, 0, 0, 0, 0, 1, 299]])
    ctx = torch.cat([frequent, rare, odd])
    targets = torch.randint(0, 300, (ctx.shape[0], 5), generator=g)
    targets[:n, :3] = torch.randint(0, 12, (n, 3), generator=g)  # ids those contexts stored
    return ctx, targets


def _check(plan, ctx, targets):
    host = host_lookup(plan)
    assert host is not None
    rows = plan(ctx)
    for i in range(ctx.shape[0]):
        tail = plan.tail(ctx[i : i + 1])[0].tolist()
        out = np.full((1, plan.vocab_size), np.nan, np.float32)
        assert np.array_equal(host.row(tail, out)[0], rows[i].numpy())
        want = plan.score(plan.tail(ctx[i : i + 1]).expand(targets.shape[1], -1), targets[i])
        assert np.array_equal(host.values(tail, targets[i].numpy())[:, 0], want.numpy())


@pytest.mark.parametrize("opts", SERVED, ids=str)
@pytest.mark.parametrize("dense_bytes", [0, 4 * 300 * 8, None])
@pytest.mark.parametrize("accelerator", [False, True])
def test_one_context_equals_the_batched_step_and_point_query(table, opts, dense_bytes, accelerator):
    plan = table.plan(table.options(**opts), "cpu", accelerator=accelerator, dense_bytes=dense_bytes)
    _check(plan, *_cases())


@pytest.mark.parametrize("opts", SERVED, ids=str)
def test_undoubled_keys_on_the_host(table, opts, monkeypatch):
    # Order 5 at V = 49,152: the keys fit int64 only undoubled (test_lookup forces it the same way).
    doubled = table.plan(table.options(**opts), "cpu")
    monkeypatch.setattr(ngram_lookup, "_INT63", (doubled.key_limit - 2) // 2)
    table._plans.clear()
    try:
        plain = table.plan(table.options(**opts), "cpu")
        assert plain.exact and not plain.doubled
        _check(plain, *_cases(seed=8))
    finally:
        table._plans.clear()


@pytest.mark.parametrize("accelerator", [False, True])
def test_contrast_plan_rows_and_values_on_the_host(table, accelerator):
    o = table.options(smoothing="kneser_ney")
    other = _table(3, docs=5)
    pair = ContrastPlan.combine(table.plan(o, "cpu", accelerator=accelerator),
                                other.plan(o, "cpu", accelerator=accelerator, dense_bytes=4 * 300 * 20))
    host = host_lookup(pair)
    ctx, targets = _cases(seed=9)
    both = pair(ctx)  # (B, 2, V)
    for i in range(ctx.shape[0]):
        tail = last_ids(ctx[i : i + 1], pair.width)[0].tolist()
        got = host.values(tail, targets[i].numpy())  # (k, 2)
        assert np.array_equal(got, both[i][:, targets[i]].T.numpy())
        assert np.array_equal(host.row(tail, np.empty((2, 300), np.float32)), both[i].numpy())


def test_plans_the_host_does_not_serve(table, monkeypatch):
    assert host_lookup(table.plan(table.options(mode="mixture"), "cpu")) is None
    assert host_lookup(table.plan(table.options(order=1), "cpu")) is None  # no context: a constant row
    plan = table.plan(table.options(smoothing="kneser_ney"), "cpu")
    assert host_lookup(plan) is host_lookup(plan)  # built once per plan
    monkeypatch.setattr(ngram_lookup, "_INT63", 0)  # keys that do not fit one int64 range: per-order searches
    table._plans.clear()
    try:
        assert host_lookup(table.plan(table.options(smoothing="kneser_ney"), "cpu")) is None
    finally:
        table._plans.clear()


def test_tail_of_pads_as_last_ids():
    ctx = torch.tensor([[4, 5, 6, 7]])
    for width in (0, 2, 4, 6):
        want = last_ids(ctx, width)[0].tolist()
        assert tail_of(ctx[0], width) == tail_of(ctx[0].numpy(), width) == tail_of([4, 5, 6, 7], width) == want
    assert tail_of([], 3) == [-1, -1, -1]
