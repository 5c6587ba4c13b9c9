"""Uncertainty of judge figures: bootstrap intervals over prompts, per cell and paired between cells."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_RESAMPLES = 2000
CONFIDENCE = 0.95


def per_prompt_means(values: Sequence[float], prompt_index: Sequence[int]) -> np.ndarray:
    """Mean of the values of each prompt (its samples), in prompt order; NaN values are ignored."""
    v = np.asarray(values, dtype=float)
    idx = np.asarray(prompt_index, dtype=int)
    if v.shape != idx.shape:
        raise ValueError(f"{v.size} values but {idx.size} prompt indices")
    ok = ~np.isnan(v)
    sums = np.bincount(idx[ok], weights=v[ok], minlength=idx.max() + 1 if idx.size else 0)
    counts = np.bincount(idx[ok], minlength=idx.max() + 1 if idx.size else 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return means[counts > 0]


def bootstrap_mean_ci(values: Sequence[float], prompt_index: Sequence[int] | None = None,
                      confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile bootstrap interval (``scipy.stats.bootstrap``).

    With ``prompt_index``, samples of one prompt move together (a cluster
    bootstrap over prompts): two continuations of one prompt are not two
    independent observations. The mean is that of the per-prompt means.
    Constant data give a zero-width interval; fewer than 2 prompts give NaN bounds.
    """
    from scipy.stats import bootstrap

    x = per_prompt_means(values, prompt_index) if prompt_index is not None else np.asarray(values, float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    if np.all(x == x[0]):
        return mean, mean, mean
    res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_pooled_ppl_ci(nll: Sequence[float], counts: Sequence[float], prompt_index: Sequence[int],
                            confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                            seed: int = 0) -> tuple[float, float, float]:
    """(perplexity, low, high) of pooled perplexity exp(sum NLL / sum counts), bootstrapping prompts.

    Each resample draws prompts with replacement and pools their samples'
    NLL and token (or word) counts, as the point estimate does.
    """
    from scipy.stats import bootstrap

    idx = np.asarray(prompt_index, dtype=int)
    nll, n = np.asarray(nll, float), np.asarray(counts, float)
    if nll.shape != idx.shape or n.shape != idx.shape:
        raise ValueError("`nll`, `counts` and `prompt_index` must have one length")
    if n.sum() <= 0:
        return float("nan"), float("nan"), float("nan")
    p_nll = np.bincount(idx, weights=nll)  # per prompt
    p_n = np.bincount(idx, weights=n)
    keep = np.bincount(idx) > 0
    p_nll, p_n = p_nll[keep], p_n[keep]
    point = float(np.exp(p_nll.sum() / p_n.sum()))
    if p_n.size < 2:
        return point, float("nan"), float("nan")

    def stat(a, b, axis=-1):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.exp(a.sum(axis=axis) / b.sum(axis=axis))

    res = bootstrap((p_nll, p_n), stat, paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_ppl_ratio_ci(nll_a: Sequence[float], n_a: Sequence[float], nll_b: Sequence[float], n_b: Sequence[float],
                        confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                        seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): pooled perplexity of a over that of b, units (prompts, passages) resampled in pairs.

    ``nll_*`` and ``n_*`` hold one summed NLL and one token count per unit, the same units in the same
    order; the ratio is exp(sum nll_a / sum n_a - sum nll_b / sum n_b).
    """
    from scipy.stats import bootstrap

    arrays = [np.asarray(x, float) for x in (nll_a, n_a, nll_b, n_b)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("`nll_a`, `n_a`, `nll_b` and `n_b` must have one length")

    def stat(a, na, b, nb, axis=-1):
        return np.exp(a.sum(axis) / na.sum(axis) - b.sum(axis) / nb.sum(axis))

    point = float(stat(*arrays))
    if arrays[0].size < 2:
        return point, float("nan"), float("nan")
    res = bootstrap(arrays, stat, paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(mean of a - b, low, high) over paired per-prompt values, bootstrapping prompts.

    ``a`` and ``b`` hold one value per prompt (the same prompts, in the same
    order), e.g. two methods' per-prompt hit rates; pairs with a NaN are dropped.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one shape, got {a.shape} and {b.shape}")
    d = a - b
    return bootstrap_mean_ci(d[~np.isnan(d)], confidence=confidence, n_resamples=n_resamples, seed=seed)


def interpolate_at(x: Sequence[float], ys: Sequence[np.ndarray], x0: float) -> tuple[np.ndarray, tuple] | None:
    """Linear interpolation along a curve in log x: the y (per-prompt arrays) where the curve crosses x0.

    The points (x[i], ys[i]) are taken in order (e.g. increasing lambda). The
    first segment whose x range contains x0 is used, interpolating in log x.
    Returns (interpolated ys, (i, i + 1, weight)) or None when x0 lies outside
    every segment (the curve never reaches that fluency: no matched value).
    """
    for i in range(len(x) - 1):
        lo, hi = x[i], x[i + 1]
        if any(math.isnan(v) or v <= 0 for v in (lo, hi, x0)):
            continue
        if min(lo, hi) <= x0 <= max(lo, hi):
            w = 0.0 if hi == lo else (math.log(x0) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return (1 - w) * np.asarray(ys[i], float) + w * np.asarray(ys[i + 1], float), (i, i + 1, w)
    return None
