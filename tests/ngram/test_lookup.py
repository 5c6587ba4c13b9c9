"""The per-step path: op budget, layouts that agree, compilation, and the slot trick."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from ngram import NGramTable
from ngram import lookup as ngram_lookup
from ngram.lookup import ContrastPlan, _interleave, last_ids
from steer.style import NGramStylePrior

# torch._dynamo imports torch.jit internals that warn about their own deprecation.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

MODES = [dict(mode="logsum", weights=(0.2, 0.3, 0.5)), dict(mode="mixture"), dict(smoothing="kneser_ney")]
ALL_OPTIONS = MODES + [dict(order=1), dict(order=2), dict(order=3), dict(mode="mixture", weights=(0, 1, 1)),
                       dict(mode="logsum", weights=(1, 0, 1))]
# Ops of one prior call, views included (each is a dispatch; on a GPU most are a
# kernel launch).
MAX_OPS = 25


class CountOps(TorchDispatchMode):
    """Every ATen op dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    # Zipf-like ids so that contexts have fan-outs of very different sizes.
    docs = [np.minimum(rng.zipf(1.3, size=400), 300) - 1 for _ in range(6)]
    return NGramTable.from_token_ids(docs, 300, 3)


def _contexts(b=6, t=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, 12, (b, t), generator=g)  # frequent ids: seen contexts
    ctx[-1, -1] = 299  # a rare one
    return ctx


@pytest.mark.parametrize("opts", MODES, ids=lambda o: o.get("smoothing", o.get("mode")))
def test_one_prior_call_stays_within_the_op_budget(table, opts):
    prior = NGramStylePrior(table, 0.5, **opts)
    ids, scores = _contexts(), torch.randn(6, 300)
    prior(ids, scores)  # the plan is built on first use
    with CountOps() as count:
        prior(ids, scores)
    assert len(count.ops) <= MAX_OPS, count.ops
    assert not any("item" in op or "_local_scalar_dense" in op or "nonzero" in op for op in count.ops)


def test_the_mixture_on_the_stored_columns_stays_within_the_op_budget(narrow):
    prior = NGramStylePrior(narrow, 0.5, mode="mixture")
    ids, scores = _contexts(), torch.randn(6, 300)
    prior(ids, scores)
    assert prior._plans[torch.device("cpu")].support is not None
    with CountOps() as count:
        prior(ids, scores)
    assert len(count.ops) <= MAX_OPS + 6, count.ops  # + widening the rows: a fill and a scatter


@pytest.mark.parametrize("opts", MODES, ids=lambda o: o.get("smoothing", o.get("mode")))
def test_accelerator_layout_stays_within_the_op_budget_and_never_syncs(table, opts):
    plan = table.plan(table.options(**opts), "cpu", accelerator=True)
    tail = plan.tail(_contexts())
    with CountOps() as count:
        plan.step(tail)
    assert len(count.ops) + 1 <= MAX_OPS, count.ops  # + the processor's add
    assert not any("_local_scalar_dense" in op or "nonzero" in op for op in count.ops)


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
def test_cpu_and_accelerator_layouts_agree(table, opts):
    ctx = torch.cat([_contexts(), torch.tensor([[-1, 5, 2, 1, 300, 1, 2]])])
    o = table.options(**opts)
    cpu = table.plan(o, "cpu")(ctx)
    acc = table.plan(o, "cpu", accelerator=True)(ctx)
    torch.testing.assert_close(acc, cpu, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(cpu, table.logprobs(ctx, validate=False, **opts))


@pytest.mark.parametrize("accelerator", [False, True])
@pytest.mark.parametrize("opts", MODES, ids=lambda o: o.get("smoothing", o.get("mode")))
def test_step_compiles_without_graph_breaks(table, opts, accelerator):
    torch._dynamo.reset()
    plan = table.plan(table.options(**opts), "cpu", accelerator=accelerator)
    tail = plan.tail(_contexts())
    compiled = torch.compile(plan.step, fullgraph=True, dynamic=False, backend="eager")
    torch.testing.assert_close(compiled(tail), plan.step(tail))


def test_compiled_prior_matches_the_eager_one(table):
    torch._dynamo.reset()
    ids, scores = _contexts(), torch.randn(6, 300)
    eager = NGramStylePrior(table, 0.5, mode="logsum")(ids, scores)
    compiled = NGramStylePrior(table, 0.5, mode="logsum", compile=True)
    torch.testing.assert_close(compiled(ids, scores), eager, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(compiled(ids[:, :1], scores), NGramStylePrior(table, 0.5, mode="logsum")(
        ids[:, :1], scores), rtol=1e-6, atol=1e-5)  # shorter than N-1: padded, same answer
    longer = torch.cat([ids, ids, ids], 1)
    for rows in (slice(0, 6), slice(0, 1)):  # one row: its tail slice counts as contiguous
        for t in range(3, longer.shape[1]):  # as in generate: one more token per step, no recompilation
            compiled(longer[rows, :t], scores[rows])


def test_compile_flag_is_checked(table):
    with pytest.raises(TypeError, match="`compile`"):
        NGramStylePrior(table, 0.5, compile="yes")


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(st.integers(0, 2**40), max_size=30), queries=st.lists(st.integers(-5, 2**40 + 5), max_size=30))
def test_one_search_finds_and_says_whether_found(keys, queries):
    sorted_keys = np.array(sorted(keys), dtype=np.int64)
    doubled = torch.from_numpy(_interleave(sorted_keys))
    q = torch.tensor(queries + sorted(keys), dtype=torch.long)
    slot = torch.searchsorted(doubled, 2 * q, right=True)
    for query, s in zip(q.tolist(), slot.tolist(), strict=True):
        assert (s % 2 == 1) == (query in keys)
        if s % 2:
            assert sorted_keys[(s - 1) // 2] == query


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
def test_dense_rows_change_the_speed_not_the_values(table, opts):
    ctx = torch.cat([_contexts(), torch.tensor([[-1, 5, 2, 1, 300, 1, 2]]), _contexts(seed=4)])
    o = table.options(**opts)
    none = table.plan(o, "cpu", dense_bytes=0)
    some = table.plan(o, "cpu", dense_bytes=4 * 300 * 8)  # room for 7 rows: only the widest contexts
    every = table.plan(o, "cpu")
    if none.orders:
        assert none.dense_count == 0 < some.dense_count <= min(7, every.dense_count)
        assert every.window.numel() <= some.window.numel() < none.window.numel()  # narrower windows
    for plan in (some, every, table.plan(o, "cpu", accelerator=True, dense_bytes=4 * 300 * 8)):
        torch.testing.assert_close(plan(ctx), none(ctx), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="`dense_bytes`"):
        table.plan(o, "cpu", dense_bytes=-1)


@pytest.mark.parametrize("accelerator", [False, True])
@pytest.mark.parametrize("window_slots", [0, 10**9], ids=["search", "windows"])
def test_contrast_plan_gives_both_tables_estimates_bit_for_bit(table, accelerator, window_slots, monkeypatch):
    monkeypatch.setattr(ngram_lookup, "SCORE_WINDOW_SLOTS", window_slots)
    rng = np.random.default_rng(3)
    other = NGramTable.from_token_ids([np.minimum(rng.zipf(1.2, size=500), 300) - 1 for _ in range(5)], 300, 3)
    o = table.options(smoothing="kneser_ney")
    a = table.plan(o, "cpu", accelerator=accelerator)
    b = other.plan(o, "cpu", accelerator=accelerator, dense_bytes=4 * 300 * 20)
    pair = ContrastPlan.combine(a, b)
    for ctx in (torch.cat([_contexts(), torch.tensor([[-1, 5, 2, 1, 300, 1, 2]])]), _contexts()[:, :1]):
        both = pair(ctx)
        assert torch.equal(both[:, 0], a(ctx)) and torch.equal(both[:, 1], b(ctx))
        # Point queries: both tables at given next ids in one pass, the two plans' own scores bit for bit.
        targets = torch.from_numpy(rng.integers(0, 300, size=ctx.shape[0]))
        targets[:3] = both[:3, 0].argmax(dim=-1)  # ids that some contexts of each table did store
        targets[3:6] = both[3:6, 1].argmax(dim=-1)
        pair_scores = pair.score(last_ids(ctx, pair.width), targets)
        assert torch.equal(pair_scores[:, 0], a.score(last_ids(ctx, a.width), targets))
        assert torch.equal(pair_scores[:, 1], b.score(last_ids(ctx, b.width), targets))
        assert torch.equal(pair_scores, both[torch.arange(ctx.shape[0]), :, targets])
    assert pair.score(last_ids(ctx, pair.width)[:0], targets[:0]).shape == (0, 2)
    small = NGramTable.from_token_ids([[1, 2, 3, 4]], 300, 2)
    assert ContrastPlan.combine(a, small.plan(small.options(smoothing="kneser_ney"), "cpu")) is None  # 1 order vs 2
    assert ContrastPlan.combine(table.plan(table.options(mode="logsum"), "cpu"), b) is None


def test_contrast_plan_is_built_once_per_pair_of_plans(table):
    rng = np.random.default_rng(4)
    other = NGramTable.from_token_ids([np.minimum(rng.zipf(1.2, size=500), 300) - 1 for _ in range(5)], 300, 3)
    o = table.options(smoothing="kneser_ney")
    a, b = table.plan(o, "cpu"), other.plan(o, "cpu")
    pair = ContrastPlan.combine(a, b)
    assert ContrastPlan.combine(a, b) is pair  # processors of one pair of tables share it
    assert ContrastPlan.combine(b, a) is not pair  # (b, a) is another lookup
    c = other.plan(o, "cpu", dense_bytes=0)
    assert ContrastPlan.combine(a, c) is not pair
    ctx = _contexts()
    assert torch.equal(ContrastPlan.combine(a, c)(ctx), pair(ctx))  # same values, another layout


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
def test_per_order_search_agrees_with_the_joint_keys(table, opts, monkeypatch):
    ctx = torch.cat([_contexts(), torch.tensor([[-1, 5, 2, 1, 300, 1, 2]])])
    joint = table.plan(table.options(**opts), "cpu")
    # Contexts that do not pack into one int64 range (order 6 and up at V = 32,000) search each
    # order in the table's own keys; force that path on this small table.
    monkeypatch.setattr(ngram_lookup, "_INT63", 0)
    table._plans.clear()
    per_order = table.plan(table.options(**opts), "cpu")
    assert not per_order.orders or not per_order.exact
    torch.testing.assert_close(per_order(ctx), joint(ctx), rtol=1e-6, atol=1e-5)
    table._plans.clear()


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
def test_keys_that_fit_int64_only_undoubled_agree_with_the_doubled_ones(table, opts, monkeypatch):
    # Order 5 at V = 49,152: every context's key fits int64, twice the key does not. The plan then
    # searches the plain keys and compares once; force that on this small table.
    ctx, targets = _score_cases()
    doubled = table.plan(table.options(**opts), "cpu")
    if not doubled.orders:
        return
    monkeypatch.setattr(ngram_lookup, "_INT63", (doubled.key_limit - 2) // 2)
    table._plans.clear()
    try:
        plain = table.plan(table.options(**opts), "cpu")
        assert plain.exact and not plain.doubled
        assert torch.equal(plain.slots(plain.tail(ctx)), doubled.slots(doubled.tail(ctx)))
        assert torch.equal(plain(ctx), doubled(ctx))
        assert torch.equal(plain.score(plain.tail(ctx), targets), doubled.score(doubled.tail(ctx), targets))
    finally:
        table._plans.clear()


def test_plans_are_cached_per_device_and_options(table):
    o = table.options(smoothing="kneser_ney")
    assert table.plan(o, "cpu") is table.plan(o, "cpu")
    assert table.plan(o, "cpu") is not table.plan(table.options(smoothing="kneser_ney", discount=0.5), "cpu")


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
def test_exact_cpu_gather_for_large_batches_agrees_with_the_windows(table, opts):
    ctx = torch.cat([_contexts(), torch.tensor([[-1, 5, 2, 1, 300, 1, 2]]), _contexts(seed=4), _contexts(seed=5)])
    plan = table.plan(table.options(**opts), "cpu")
    windows = plan(ctx)
    plan.ragged_min_slots = 0  # every batch takes the exact gather
    try:
        ragged = plan(ctx)
    finally:
        plan.ragged_min_slots = ngram_lookup.RAGGED_MIN_SLOTS
    torch.testing.assert_close(ragged, windows, rtol=1e-6, atol=1e-5)
    assert torch.isfinite(ragged).all() or opts.get("mode") == "logsum"


@pytest.fixture(scope="module")
def narrow():
    """A table that stores a third of its vocabulary (a small style corpus against a large vocabulary)."""
    rng = np.random.default_rng(5)
    return NGramTable.from_token_ids([np.minimum(rng.zipf(1.3, size=400), 100) - 1 for _ in range(6)], 300, 3)


MIXTURES = [dict(mode="mixture"), dict(mode="mixture", weights=(0, 1, 1)), dict(mode="mixture", alpha=0.5)]


@pytest.mark.parametrize("opts", MIXTURES, ids=str)
@pytest.mark.parametrize("dense_bytes", [0, 4 * 300 * 8, None])
def test_mixture_on_the_stored_columns_equals_the_full_rows_bit_for_bit(narrow, opts, dense_bytes, monkeypatch):
    g = torch.Generator().manual_seed(2)
    odd = torch.tensor([[-1, 5, 2, 1, 300, 1, 2]])
    ctx = torch.cat([_contexts(), odd, torch.randint(0, 300, (40, 7), generator=g)])
    targets = torch.randint(0, 300, (ctx.shape[0],), generator=g)
    o = narrow.options(**opts)
    monkeypatch.setattr(ngram_lookup, "COMPACT_MAX_SHARE", 0.0)
    full = narrow.plan(o, "cpu", dense_bytes=dense_bytes)
    narrow._plans.clear()
    monkeypatch.setattr(ngram_lookup, "COMPACT_MAX_SHARE", 1.0)
    try:
        compact = narrow.plan(o, "cpu", dense_bytes=dense_bytes)
    finally:
        narrow._plans.clear()
    assert full.support is None and compact.support.shape[0] <= 100  # ids >= 100 never stored
    assert compact.rows.shape[1] % 64 == 0 and compact.rows.shape[1] < 300
    assert torch.equal(compact(ctx), full(ctx))  # the ragged gather (40+ rows) ...
    assert torch.equal(compact(ctx[:6]), full(ctx[:6]))  # ... and the windows
    assert torch.equal(compact.score(compact.tail(ctx), targets), full.score(full.tail(ctx), targets))
    compiled = torch.compile(compact.step, fullgraph=True, dynamic=False, backend="eager")
    assert torch.equal(compiled(compact.tail(ctx[:6])), full(ctx[:6]))
    assert torch.allclose(compact(ctx).exp().sum(-1), torch.ones(ctx.shape[0]))  # still distributions


def test_the_stored_columns_are_left_to_the_full_rows_where_they_are_most_of_the_vocabulary(table, narrow):
    assert table.plan(table.options(mode="mixture"), "cpu").support is None  # the fixture stores most ids
    assert narrow.plan(narrow.options(mode="mixture"), "cpu").support is not None
    assert narrow.plan(narrow.options(mode="mixture"), "cpu", accelerator=True).support is None  # launches
    assert narrow.plan(narrow.options(smoothing="kneser_ney"), "cpu").support is None  # no log to save


def _score_cases(seed=7, n=64):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.cat([_contexts(), torch.tensor([[-1, 5, 2, 1, 300, 1, 2]]), torch.randint(0, 300, (n, 7), generator=g)])
    targets = torch.randint(0, 300, (ctx.shape[0],), generator=g)
    targets[: _contexts().shape[0]] = torch.randint(0, 12, (_contexts().shape[0],), generator=g)  # seen entries
    return ctx, targets


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
@pytest.mark.parametrize("accelerator", [False, True])
@pytest.mark.parametrize("dense_bytes", [0, 4 * 300 * 8, None])
@pytest.mark.parametrize("window_slots", [0, 10**9], ids=["search", "windows"])
def test_point_query_equals_the_gathered_dense_rows(table, opts, accelerator, dense_bytes, window_slots,
                                                    monkeypatch):
    # Each context's entries are found by a bounded binary search, or for few rows by its window.
    monkeypatch.setattr(ngram_lookup, "SCORE_WINDOW_SLOTS", window_slots)
    ctx, targets = _score_cases()
    plan = table.plan(table.options(**opts), "cpu", accelerator=accelerator, dense_bytes=dense_bytes)
    dense = plan(ctx).gather(1, targets[:, None])[:, 0]
    assert torch.equal(plan.score(plan.tail(ctx), targets), dense)


@pytest.mark.parametrize("opts", ALL_OPTIONS, ids=str)
def test_point_query_equals_the_dense_rows_on_the_per_order_search(table, opts, monkeypatch):
    ctx, targets = _score_cases()
    monkeypatch.setattr(ngram_lookup, "_INT63", 0)  # as in test_per_order_search_agrees_with_the_joint_keys
    table._plans.clear()
    try:
        plan = table.plan(table.options(**opts), "cpu")
        assert torch.equal(plan.score(plan.tail(ctx), targets), plan(ctx).gather(1, targets[:, None])[:, 0])
    finally:
        table._plans.clear()
