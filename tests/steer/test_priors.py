"""Steering variants: each option against a brute-force reference of its formula, and the invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ngram import NGramTable
from steer.priors import KL_BISECTION_STEPS, SUPPORT_BLOCK, TEMPER_MAX, GuidedStylePrior, entropy, support_pairs
from tests.conftest import tiny_llama, within_unfused_rounding

V = 12
STYLE = NGramTable.from_token_ids([[1, 2, 3, 1, 2, 4, 5, 1, 2, 3, 6, 7, 1, 2, 3]], V, 3)
BACKGROUND = NGramTable.from_token_ids([[1, 8, 9, 2, 10, 1, 2, 11, 3, 9, 8, 1, 0, 2]], V, 3)


def _kn(table, ids):
    return table.logprobs(ids, smoothing="kneser_ney").double().numpy()


def _entropy(x):
    q = np.exp(x - np.logaddexp.reduce(x))
    return float(-(q[q > 0] * np.log(q[q > 0])).sum())


def _repeats(row, n):
    """The tokens that would repeat an n-gram of ``row`` if drawn next, by a plain scan."""
    row = row.tolist()
    ctx = row[len(row) - (n - 1):] if n > 1 else []
    return {row[j + n - 1] for j in range(len(row) - n + 1) if row[j:j + n - 1] == ctx}


def _reference(scores, ids, lam, background=None, clip=None, plausibility=None, strength="constant", eps=None,
               centre=False, mask=False, temper=False, fresh=None):
    """Row by row, in float64 numpy, straight from the docstring's formulas."""
    s = scores.double().numpy()
    b_all = _kn(STYLE, ids) - (_kn(BACKGROUND, ids) if background else 0.0)
    out = s.copy()
    for r in range(s.shape[0]):
        b = b_all[r].copy()
        if clip is not None:
            b = np.clip(b, -clip, clip)
        if fresh is not None:
            for w in _repeats(ids[r], fresh):
                b[w] = min(b[w], 0.0)
        if plausibility is not None:
            p = np.exp(s[r] - np.logaddexp.reduce(s[r]))
            support = p >= plausibility * p.max()
            if centre:
                b = b - (p[support] * b[support]).sum() / p[support].sum()
            b = np.where(support, b, 0.0)
            outside = ~support
        b = np.where(np.isneginf(s[r]), 0.0, b)
        logp = s[r] - np.logaddexp.reduce(s[r])
        if strength == "constant":
            lt = lam
        elif strength == "entropy":
            p = np.exp(logp)
            lt = lam * -(p[p > 0] * logp[p > 0]).sum() / math.log(len(p))
        else:
            def kl(x, logp=logp, b=b):
                t = logp + x * b
                q = np.exp(t - np.logaddexp.reduce(t))
                ok = np.isfinite(logp)
                return float(np.sum(q[ok] * (t[ok] - np.logaddexp.reduce(t) - logp[ok])))

            grid = np.linspace(0, lam, 20001)
            ok = [x for x in grid if kl(x) <= eps]
            lt = max(ok)
        out[r] = s[r] + lt * b
        if mask:
            out[r][outside] = -np.inf
        if temper:  # the largest tau on a fine grid whose entropy stays within the model's
            grid = np.exp(np.linspace(-math.log(TEMPER_MAX), math.log(TEMPER_MAX), 20001))
            ok = [tau for tau in grid if _entropy(out[r] / tau) <= _entropy(s[r])]
            out[r] = out[r] / (max(ok) if ok else grid[0])
    return out


@pytest.fixture
def batch():
    torch.manual_seed(0)
    scores = torch.randn(4, V) * 2
    scores[1, 5] = -math.inf
    ids = torch.tensor([[0, 1, 2], [1, 2, 3], [7, 1, 2], [4, 4, 9]])
    return scores, ids


@pytest.mark.parametrize("opts", [
    dict(),
    dict(background=True),
    dict(background=True, clip=1.0),
    dict(background=True, plausibility=0.1),
    dict(plausibility=0.3),
    dict(plausibility=0.3, centre=True),
    dict(plausibility=0.3, mask=True),
    dict(background=True, plausibility=0.1, centre=True, clip=1.0),
    dict(background=True, strength="entropy"),
])
def test_matches_brute_force(batch, opts):
    scores, ids = batch
    lam = 1.5
    kw = {**opts, "background": BACKGROUND if opts.get("background") else None}
    got = GuidedStylePrior(STYLE, lam, **kw)(ids, scores)
    want = _reference(scores, ids, lam, **opts)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got.numpy()[finite], want[finite], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.isneginf(got.numpy()), np.isneginf(want))
    assert torch.isneginf(got[1, 5])  # -inf kept


@pytest.mark.parametrize("opts", [
    dict(background=True, plausibility=0.1, mask=True),
    dict(background=True, plausibility=0.3),
    dict(background=True),
    dict(background=True, strength="entropy", clip=1.0),
])
def test_temper_finds_the_largest_temperature_within_the_models_entropy(batch, opts):
    scores, ids = batch
    for lam in (0.5, 3.0):
        kw = {**opts, "background": BACKGROUND}
        got = GuidedStylePrior(STYLE, lam, temper=True, **kw)(ids, scores)
        want = _reference(scores, ids, lam, temper=True, **opts)
        finite = np.isfinite(want)
        # the bisection's resolution: a factor exp(2 log 4 / 2**steps) on tau, times the scores' size
        np.testing.assert_allclose(got.numpy()[finite], want[finite], rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(np.isneginf(got.numpy()), np.isneginf(want))
        # never more certain than the model, within the resolution, where the bracket allows
        untempered = GuidedStylePrior(STYLE, lam, **kw)(ids, scores)
        tau = untempered[:, 0:1] / got[:, 0:1]
        inside = (tau > 1 / TEMPER_MAX * 1.01) & (tau < TEMPER_MAX * 0.99)
        h_got, h_model = entropy(got), entropy(scores)
        assert (h_got <= h_model + 1e-4).all()
        assert ((h_model - h_got)[inside] <= 5e-3).all()
        assert torch.equal(got.argmax(-1), untempered.argmax(-1))  # greedy decoding is unaffected
    lone = torch.full((2, V), -math.inf)
    lone[0, 3], lone[1, 3:6] = 1.0, 0.5  # one finite score; three equal ones
    out = GuidedStylePrior(STYLE, 2.0, background=BACKGROUND, temper=True)(ids[:2], lone)
    assert not out.isnan().any() and torch.equal(torch.isfinite(out), torch.isfinite(lone))


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.3])
def test_kl_budget_finds_the_largest_strength_within_the_budget(batch, eps):
    scores, ids = batch
    lam = 6.0
    proc = GuidedStylePrior(STYLE, lam, background=BACKGROUND, plausibility=0.1, strength="kl", kl_budget=eps)
    got = proc(ids, scores)
    want = _reference(scores, ids, lam, background=True, plausibility=0.1, strength="kl", eps=eps)
    # the bisection's resolution: lam / 2**steps, times the bonus size
    tol = lam / 2**KL_BISECTION_STEPS * 12
    finite = np.isfinite(want)
    np.testing.assert_allclose(got.numpy()[finite], want[finite], atol=tol)


def test_kl_of_the_result_is_within_budget_on_random_rows():
    torch.manual_seed(1)
    scores = torch.randn(64, V) * 3
    ids = torch.randint(0, V, (64, 2))
    for eps in (0.02, 0.06):
        out = GuidedStylePrior(STYLE, 8.0, background=BACKGROUND, strength="kl", kl_budget=eps)(ids, scores)
        p, q = torch.log_softmax(scores.double(), -1), torch.log_softmax(out.double(), -1)
        kl = (q.exp() * (q - p)).sum(-1)
        assert kl.max() <= eps + 1e-4


@pytest.mark.parametrize("opts", [dict(), dict(background=BACKGROUND, plausibility=0.1, strength="kl", kl_budget=0.1),
                                  dict(strength="entropy"), dict(plausibility=0.1, mask=True, temper=True)])
def test_lam_zero_is_the_identity_and_inputs_are_not_mutated(batch, opts):
    scores, ids = batch
    before = scores.clone()
    out = GuidedStylePrior(STYLE, 0.0, **opts)(ids, scores)
    assert torch.equal(out, scores) and out is not scores and torch.equal(scores, before)


def test_padded_vocabulary_and_half_precision(batch):
    scores, ids = batch
    wide = torch.cat([scores, torch.zeros(4, 3)], dim=1)
    out = GuidedStylePrior(STYLE, 1.0, background=BACKGROUND)(ids, wide)
    assert torch.equal(out[:, V:], wide[:, V:])  # padded columns get no bonus
    half = GuidedStylePrior(STYLE, 1.0, plausibility=0.2)(ids, scores.half())
    assert half.dtype == torch.float16


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="`strength`"):
        GuidedStylePrior(STYLE, 1.0, strength="adaptive")
    with pytest.raises(ValueError, match="`kl_budget`"):
        GuidedStylePrior(STYLE, 1.0, strength="kl")
    with pytest.raises(ValueError, match="`kl_budget` applies only"):
        GuidedStylePrior(STYLE, 1.0, kl_budget=0.1)
    with pytest.raises(ValueError, match="`plausibility`"):
        GuidedStylePrior(STYLE, 1.0, plausibility=0.0)
    with pytest.raises(ValueError, match="`centre` applies to a support"):
        GuidedStylePrior(STYLE, 1.0, centre=True)
    with pytest.raises(TypeError, match="`centre`"):
        GuidedStylePrior(STYLE, 1.0, plausibility=0.1, centre="yes")
    with pytest.raises(ValueError, match="`mask` applies to a support"):
        GuidedStylePrior(STYLE, 1.0, mask=True)
    with pytest.raises(TypeError, match="`temper`"):
        GuidedStylePrior(STYLE, 1.0, temper=1)
    for bad in (0, True, 2.0, "2"):
        with pytest.raises(ValueError, match="`fresh`"):
            GuidedStylePrior(STYLE, 1.0, fresh=bad)
    with pytest.raises(ValueError, match="`clip`"):
        GuidedStylePrior(STYLE, 1.0, clip=-1)
    with pytest.raises(ValueError, match="`lam`"):
        GuidedStylePrior(STYLE, -1.0)
    with pytest.raises(ValueError, match="vocabulary"):
        GuidedStylePrior(STYLE, 1.0, background=NGramTable.from_token_ids([[1, 2]], V + 1, 2))
    with pytest.raises(TypeError, match="`background`"):
        GuidedStylePrior(STYLE, 1.0, background="books")


@pytest.mark.parametrize("gen", [dict(do_sample=False), dict(do_sample=True, top_p=0.9), dict(num_beams=3)])
def test_through_generate(gen):
    model = tiny_llama(V)
    ids = torch.tensor([[1, 2, 3], [1, 4, 5]])
    proc = GuidedStylePrior(STYLE, 4.0, background=BACKGROUND, plausibility=0.1, strength="kl", kl_budget=0.05)
    torch.manual_seed(0)
    out = model.generate(ids, max_new_tokens=6, logits_processor=[proc], pad_token_id=0, **gen)
    assert out.shape[0] == 2 and 4 <= out.shape[1] <= 9
    torch.manual_seed(0)
    plain = model.generate(ids, max_new_tokens=6, pad_token_id=0, **gen)
    torch.manual_seed(0)
    zero = model.generate(ids, max_new_tokens=6, pad_token_id=0,
                          logits_processor=[GuidedStylePrior(STYLE, 0.0, background=BACKGROUND)], **gen)
    assert torch.equal(plain, zero)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_contrastive_bonus_in_one_lookup_equals_two_lookups_within_the_op_budget(batch, clip):
    from tests.ngram.test_lookup import MAX_OPS, CountOps

    scores, ids = batch
    joint = GuidedStylePrior(STYLE, 1.5, background=BACKGROUND, clip=clip)
    got = joint(ids, scores)
    assert joint._pairs[ids.device] is not None
    with CountOps() as count:
        joint(ids, scores)
    assert len(count.ops) <= MAX_OPS, count.ops
    separate = GuidedStylePrior(STYLE, 1.5, background=BACKGROUND, clip=clip)
    separate._pairs[ids.device] = None  # tables that do not combine: two lookups
    torch.testing.assert_close(got, separate(ids, scores))


def _forty_tokens(opts, tables_seed: int, seed: int, rows: int, extra_columns: int, scale: float = 3.0):
    """A prior of ``opts`` over random tables of 40 tokens (books: the background), logits [rows, 40 +
    extra_columns] with -inf at row 0's first five tokens, and contexts [rows, 6] whose last row is
    padded and out of range."""
    rng = np.random.default_rng(tables_seed)
    style = NGramTable.from_token_ids([rng.integers(0, 40, 400).tolist()], 40, 3)
    books = NGramTable.from_token_ids([rng.integers(0, 40, 600).tolist()], 40, 3)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, 40 + extra_columns, generator=g) * scale
    scores[0, :5] = -math.inf
    ids = torch.cat([torch.randint(0, 40, (rows - 1, 6), generator=g), torch.tensor([[-1, 3, 40, 2, 2, 2]])])
    prior = GuidedStylePrior(style, 2.0, **{**opts, "background": books if opts.get("background") else None})
    return prior, scores, ids


@pytest.mark.parametrize("opts", [
    dict(plausibility=0.1),
    dict(background=True, plausibility=0.1),
    dict(background=True, plausibility=0.02, clip=1.0),
    dict(background=True, plausibility=0.1, mask=True),
    dict(background=True, plausibility=0.02, mask=True, temper=True),
    dict(background=True, plausibility=0.3, temper=True),
], ids=str)
@pytest.mark.parametrize("extra_columns", [0, 3])
def test_bonus_on_the_support_only_equals_the_dense_bonus(opts, extra_columns, monkeypatch):
    prior, scores, ids = _forty_tokens(opts, 1, 2, 16, extra_columns)
    assert prior._sparse_support(scores)
    sparse = prior(ids, scores)
    monkeypatch.setattr(GuidedStylePrior, "_sparse_support", lambda self, s: False)
    dense = prior(ids, scores)
    torch.testing.assert_close(sparse, dense, rtol=1e-6, atol=1e-6)
    assert torch.equal(torch.isneginf(sparse), torch.isneginf(dense))
    assert torch.equal(sparse.argmax(1), dense.argmax(1))


@pytest.mark.parametrize("width", [5, SUPPORT_BLOCK, 3 * SUPPORT_BLOCK, 3 * SUPPORT_BLOCK + 7])
@pytest.mark.parametrize("alpha", [1.0, 0.1, 1e-6])
def test_support_pairs_are_the_nonzero_of_the_dense_support(width, alpha):
    g = torch.Generator().manual_seed(width)
    s = torch.randn(6, width, generator=g) * 4
    s[1, : width // 2] = -math.inf  # half a row masked
    s[2] = -math.inf  # a row with nothing left: every token is "plausible", as on the dense path
    s[3, ::3] = s[3].max()  # ties at the top across blocks
    rows, cols, top = support_pairs(s, math.log(alpha))
    torch.testing.assert_close(top, s.amax(dim=-1, keepdim=True))
    want_rows, want_cols = (s >= s.amax(dim=-1, keepdim=True) + math.log(alpha)).nonzero(as_tuple=True)
    assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)  # same pairs, same (row-major) order


# Rows that repeat themselves: 1 2 follows 1 2 3 earlier, 4 4 4 repeats, 2 ends a row that holds 2 3 twice.
REPEATING = torch.tensor([[1, 2, 3, 5, 1, 2], [4, 4, 4, 9, 4, 4], [2, 3, 7, 2, 3, 2], [6, 1, 2, 5, 0, 1]])


@pytest.mark.parametrize("fresh", [1, 2, 3])
@pytest.mark.parametrize("opts", [
    dict(),
    dict(background=True),
    dict(background=True, plausibility=0.3),
    dict(background=True, plausibility=0.3, centre=True, clip=1.0),
    dict(background=True, strength="kl", eps=0.3),
], ids=str)
def test_fresh_withholds_the_bonus_from_repeats_only(batch, opts, fresh):
    scores, _ = batch
    ids = REPEATING
    opts = dict(opts)
    eps = opts.pop("eps", None)
    kw = {**opts, "background": BACKGROUND if opts.get("background") else None, "kl_budget": eps}
    lam = 1.5
    got = GuidedStylePrior(STYLE, lam, fresh=fresh, **kw)(ids, scores)
    want = _reference(scores, ids, lam, fresh=fresh, eps=eps, **opts)
    finite = np.isfinite(want)
    # The KL bisection's resolution (lam / 2**steps, times the bonus size), else float32 rounding.
    tol = lam / 2**KL_BISECTION_STEPS * 12 if eps is not None else 1e-5
    np.testing.assert_allclose(got.numpy()[finite], want[finite], rtol=1e-5, atol=tol)
    if not opts.get("centre") and eps is None:
        # Off the repeats the bonus is the plain one; on them it never raises a score.
        plain = GuidedStylePrior(STYLE, lam, **kw)(ids, scores)
        for r in range(ids.shape[0]):
            rep = sorted(_repeats(ids[r], fresh))
            others = [w for w in range(V) if w not in rep]
            torch.testing.assert_close(got[r, others], plain[r, others])
            assert bool((got[r, rep] <= scores[r, rep] + 1e-6).all())


def test_fresh_on_a_row_shorter_than_n_is_the_plain_bonus(batch):
    scores, ids = batch  # rows of 3 tokens
    plain = GuidedStylePrior(STYLE, 2.0, background=BACKGROUND)(ids, scores)
    torch.testing.assert_close(GuidedStylePrior(STYLE, 2.0, background=BACKGROUND, fresh=4)(ids, scores), plain)


@pytest.mark.parametrize("fresh", [1, 2])
def test_fresh_on_the_support_only_equals_the_dense_path(fresh, monkeypatch):
    rng = np.random.default_rng(3)
    style = NGramTable.from_token_ids([rng.integers(0, 12, 300).tolist()], 12, 3)
    books = NGramTable.from_token_ids([rng.integers(0, 12, 500).tolist()], 12, 3)
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(16, 12, generator=g) * 3
    ids = torch.randint(0, 5, (16, 10), generator=g)  # five ids over ten places: many repeats
    prior = GuidedStylePrior(style, 3.0, background=books, plausibility=0.05, fresh=fresh)
    assert prior._sparse_support(scores)
    sparse = prior(ids, scores)
    monkeypatch.setattr(GuidedStylePrior, "_sparse_support", lambda self, s: False)
    torch.testing.assert_close(sparse, prior(ids, scores), rtol=1e-6, atol=1e-6)
    assert not torch.equal(sparse, GuidedStylePrior(style, 3.0, background=books, plausibility=0.05)(ids, scores))


@pytest.mark.parametrize("opts", [
    dict(),
    dict(background=True, plausibility=0.1),
    dict(plausibility=0.3),
    dict(background=True, plausibility=0.1, clip=1.0),
    dict(background=True, plausibility=0.1, mask=True),
    dict(plausibility=0.3, centre=True),
    dict(background=True, plausibility=0.1, fresh=2),
    dict(background=True, strength="kl", kl_budget=0.05),
], ids=str)
@pytest.mark.parametrize("rows", [1, 4])
def test_add_to_steers_in_place_to_the_calls_values(batch, opts, rows):
    scores, ids = batch
    scores, ids = scores[:rows].clone(), ids[:rows]
    prior = GuidedStylePrior(STYLE, 1.5, **{**opts, "background": BACKGROUND if opts.get("background") else None})
    want = prior(ids, scores)
    strided = torch.zeros(rows, V, 3)[:, :, 1]  # every third float, as llama-cpp-python's records hold a row
    strided.copy_(scores)
    for target in (scores.clone(), strided):
        assert prior.add_to(ids, target) is target
        torch.testing.assert_close(target, want, rtol=0, atol=1e-6)
        assert torch.equal(torch.isneginf(target), torch.isneginf(want))
    zero = scores.clone()
    assert torch.equal(GuidedStylePrior(STYLE, 0.0).add_to(ids, zero), scores)  # lam 0 is the identity
    with pytest.raises(TypeError, match="float32"):
        prior.add_to(ids, scores.double())


@pytest.mark.parametrize("opts", [
    dict(),
    dict(background=True),
    dict(background=True, clip=1.0),
    dict(plausibility=0.3),
    dict(background=True, plausibility=0.1),
    dict(background=True, plausibility=0.02, clip=1.0),
    dict(background=True, plausibility=0.1, fresh=2),
    dict(background=True, plausibility=0.1, mask=True),
], ids=str)
@pytest.mark.parametrize("extra_columns", [0, 3])
def test_one_row_on_the_host_equals_the_batched_path_bit_for_bit(opts, extra_columns, monkeypatch):
    prior, scores, ids = _forty_tokens(opts, 4, 6, 8, extra_columns)
    scores[1] = -math.inf  # nothing left to draw: the support is every token
    assert prior._host_for(ids[:1]) is not None and prior._host_for(ids) is None  # one row on the CPU only

    def each_row():
        out = []
        for i in range(scores.shape[0]):
            strided = torch.zeros(1, scores.shape[1], 3)[:, :, 1]  # as llama-cpp-python's records hold a row
            strided.copy_(scores[i : i + 1])
            out.append((prior(ids[i : i + 1], scores[i : i + 1]), prior.add_to(ids[i : i + 1], strided)))
        return out

    host = each_row()
    monkeypatch.setattr(GuidedStylePrior, "_host", lambda self: None)
    for (call, added), (want_call, want_added) in zip(host, each_row(), strict=True):
        assert torch.equal(call, want_call) and torch.equal(added, want_added)


@pytest.mark.parametrize("opts", [
    dict(plausibility=0.3),
    dict(background=True, plausibility=0.1),
    dict(background=True, plausibility=0.02, clip=1.0),
    dict(background=True, plausibility=0.1, fresh=2),
    dict(background=True, plausibility=0.1, mask=True),
    dict(background=True),
], ids=str)
@pytest.mark.parametrize("extra_columns", [0, 3])
def test_add_to_row_steers_a_numpy_row_as_add_to_does(opts, extra_columns):
    prior, scores, ids = _forty_tokens(opts, 4, 9, 8, extra_columns, scale=8.0)
    on_support = opts.get("plausibility") and not (opts.get("fresh") or opts.get("mask"))
    assert prior.rows_on_host == bool(on_support)  # the others go through add_to
    for i in range(scores.shape[0]):
        want = prior.add_to(ids[i : i + 1], scores[i : i + 1].clone())[0].numpy()
        records = np.zeros(scores.shape[1], dtype=[("id", np.intc), ("logit", np.single), ("p", np.single)])
        row = records["logit"]  # every third float, as llama-cpp-python hands a row over
        row[:] = scores[i].numpy()
        assert prior.add_to_row(ids[i].numpy().astype(np.intc), row) is row
        # The same pairs and bonus; the sum rounded once more where numpy adds what torch fuses.
        changed = row != scores[i].numpy()
        assert np.array_equal(changed, want != scores[i].numpy()) or not on_support
        assert within_unfused_rounding(row, want, scores[i].numpy())
    row = scores[1].numpy().copy()
    assert np.array_equal(GuidedStylePrior(prior.table, 0.0).add_to_row([1, 2], row), scores[1].numpy())
