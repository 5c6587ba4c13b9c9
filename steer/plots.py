"""Plots of sweep results (needs the optional extra `steer[plot]`, matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("style_ppl_rel", "style perplexity (rel. change)"),
    ("base_ppl_rel", "base perplexity (rel. change)"),
    ("js_div", "JS divergence (bits)"),
    ("overlap_3_rel", "3-gram overlap with corpus (rel. change)"),
    ("distinct_2_rel", "distinct-2 (rel. change)"),
    ("jaccard_vs_unsteered", "unigram Jaccard vs unsteered"),
]


def plot_metrics_vs_lambda(rows: list[dict], path: Path) -> None:
    """One panel per metric, one line per corpus, x = lam (symlog), y = relative change vs lam = 0."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for corpus in corpora:
            pts = sorted((r["lam"], r[key]) for r in rows if r["corpus"] == corpus)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=corpus)
        ax.set_xscale("symlog", linthresh=0.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("λ")
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
