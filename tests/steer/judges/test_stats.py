"""Bootstrap intervals: coverage on simulated data, clusters of samples, paired differences, interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steer.judges.stats import (
    bootstrap_mean_ci,
    interpolate_at,
    paired_diff_ci,
    paired_ppl_ratio_ci,
    per_prompt_means,
)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_p, n, trials = 0.3, 240, 300
    covered = 0
    for t in range(trials):
        x = (rng.random(n) < true_p).astype(float)
        _, lo, hi = bootstrap_mean_ci(x, n_resamples=1000, seed=t)
        covered += lo <= true_p <= hi
    assert 0.91 <= covered / trials <= 0.985


def test_cluster_bootstrap_over_prompts_is_wider_for_correlated_samples():
    rng = np.random.default_rng(1)
    prompts = 120
    per_prompt = rng.random(prompts) < 0.4  # both samples of a prompt agree: 120 observations, not 240
    values = np.repeat(per_prompt, 2).astype(float)
    idx = np.repeat(np.arange(prompts), 2)
    _, lo_c, hi_c = bootstrap_mean_ci(values, idx)
    _, lo_i, hi_i = bootstrap_mean_ci(values)
    assert hi_c - lo_c > 1.25 * (hi_i - lo_i)
    np.testing.assert_allclose(per_prompt_means(values, idx), per_prompt.astype(float))


def test_degenerate_inputs():
    assert bootstrap_mean_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    m, lo, hi = bootstrap_mean_ci([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))


def test_paired_difference_sees_what_unpaired_intervals_miss():
    rng = np.random.default_rng(2)
    base = rng.random(200)  # prompts differ a lot ...
    a, b = base + 0.05, base  # ... but a beats b by 0.05 on every prompt
    d, lo, hi = paired_diff_ci(a, b)
    assert d == pytest.approx(0.05) and lo > 0
    with pytest.raises(ValueError, match="one shape"):
        paired_diff_ci([1.0, 2.0], [1.0])


def test_interpolation_in_log_perplexity():
    x = [10.0, 20.0, 40.0]
    ys = [np.array([0.0, 0.0]), np.array([1.0, 0.5]), np.array([1.0, 1.0])]
    got, (i, j, w) = interpolate_at(x, ys, math.sqrt(10 * 20))
    assert (i, j) == (0, 1) and w == pytest.approx(0.5)
    np.testing.assert_allclose(got, [0.5, 0.25])
    assert interpolate_at(x, ys, 5.0) is None and interpolate_at(x, ys, 80.0) is None
    # a curve that comes back: the first crossing in lambda order is used
    got, (i, j, _) = interpolate_at([10.0, 30.0, 15.0], [np.zeros(1), np.ones(1), np.zeros(1)], 20.0)
    assert (i, j) == (0, 1)


def test_pooled_perplexity_interval_brackets_the_point_and_follows_prompts():
    from steer.judges.stats import bootstrap_pooled_ppl_ci

    rng = np.random.default_rng(3)
    idx = np.repeat(np.arange(100), 2)
    n = rng.integers(5, 40, size=200).astype(float)
    nll = n * rng.normal(3.0, 0.3, size=200)
    ppl, lo, hi = bootstrap_pooled_ppl_ci(nll, n, idx)
    assert ppl == pytest.approx(math.exp(nll.sum() / n.sum()))
    assert lo < ppl < hi and hi / lo < 1.3
    with pytest.raises(ValueError, match="one length"):
        bootstrap_pooled_ppl_ci([1.0], [1.0, 2.0], [0])


def test_paired_ppl_ratio_is_one_for_identical_units_and_brackets_the_pooled_ratio():
    rng = np.random.default_rng(0)
    nll, n = rng.uniform(100, 200, 30), np.full(30, 40.0)
    assert paired_ppl_ratio_ci(nll, n, nll, n) == (1.0, 1.0, 1.0)
    r, lo, hi = paired_ppl_ratio_ci(0.9 * nll, n, nll, n)
    assert math.isclose(r, math.exp(-0.1 * nll.sum() / n.sum())) and lo <= r <= hi
    with pytest.raises(ValueError, match="one length"):
        paired_ppl_ratio_ci(nll, n, nll[:3], n[:3])
