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
REFERENCE_STYLES = {"prompt": "--", "lora": "-."}


def plot_metrics_vs_lambda(rows: list[dict], path: Path) -> None:
    """One panel per metric, one line per corpus, x = lam (symlog), y = relative change vs lam = 0.

    The prior is a solid line, prior + prompt a dotted one; the prompting and
    LoRA baselines (no lam) are horizontal reference lines in the corpus's colour.
    """
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    colours = {c: f"C{i}" for i, c in enumerate(corpora)}
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for corpus in corpora:
            mine = [r for r in rows if r["corpus"] == corpus]
            for method, style, label in [("prior", "-o", corpus), ("prior+prompt", ":x", None)]:
                pts = sorted((r["lam"], r[key]) for r in mine if r.get("method", "prior") == method)
                if method == "prior+prompt":
                    prompt = [r[key] for r in mine if r.get("method") == "prompt"]
                    pts = [(0.0, prompt[0])] + pts if prompt and pts else pts
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colours[corpus],
                            label=label, ms=4)
            for method, ls in REFERENCE_STYLES.items():
                for r in mine:
                    if r.get("method") == method:
                        ax.axhline(r[key], color=colours[corpus], ls=ls, lw=1)
        ax.set_xscale("symlog", linthresh=0.02)
        ax.set_xlim(left=-0.002)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("λ")
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if any(r.get("method", "prior") != "prior" for r in rows):
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], color="k", ls=":", marker="x", ms=4), Line2D([], [], color="k", ls="--"),
                    Line2D([], [], color="k", ls="-.")]
        labels += ["prior + prompt", "prompt (ref.)", "LoRA (ref.)"]
    axes.flat[0].legend(handles, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
