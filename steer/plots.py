"""Plots of sweep results (needs the optional extra `steer[plot]`, matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

from steer.corpora import corpus_label  # noqa: E402
from steer.methods import REFERENCE, get_method, method_of  # noqa: E402

# (column, title, is it a change vs lam = 0 in percent, which direction is better)
PANELS = [
    ("judge_hit", "judged in-style (held-out classifier)", False, "higher = more in style"),
    ("heldout_style_ppl_rel", "held-out style perplexity (judge split)", True, "lower = closer to the style"),
    ("base_ppl_rel", "base-model perplexity", True, "lower = more fluent"),
    ("degenerate_rate", "degenerate continuations (share)", False, "lower = fewer loops / empty / copies"),
    ("distinct_2_rel", "distinct-2 (words)", True, "higher = more diverse"),
    ("steer_table_ppl_rel", "perplexity under the steering table itself", True, "favours the prior by construction"),
]
REFERENCE_STYLES = {"prompt": "--", "lora": "-."}
# The methods swept over lambda, drawn as curves in the lambda figure, with their line styles.
LAMBDA_CURVES = {REFERENCE: "-o", "prior+prompt": ":x"}
LINTHRESH = 0.02


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def _legend_below(fig, handles, labels, title: str | None = None) -> float:
    """One legend for the whole figure, centred below the panels; returns the height to keep free for it.

    The room is reckoned in inches (about 0.2 per row of entries, and the title's line) and given as a
    fraction of the figure, so a legend of many methods never runs into the panels' axis labels.
    """
    ncol = max(1, min(len(handles), 6))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False, title=title,
               title_fontsize=8)
    inches = 0.1 + 0.2 * math.ceil(len(handles) / ncol) + (0.2 if title else 0.0)
    return min(0.45, inches / fig.get_figheight())


def plot_metrics_vs_lambda(rows: list[dict], path: Path, title: str | None = None) -> None:
    """One panel per metric, one line per corpus, x = lam (symlog).

    Relative panels show the change in percent vs lam = 0 of the same corpus,
    as the printed table does. The prior is a solid line, prior + prompt a
    dotted one; the prompting and LoRA baselines (no lam) are horizontal
    reference lines in the corpus's colour. One legend serves every panel.
    """
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.2))
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    colours = {c: f"C{i}" for i, c in enumerate(corpora)}
    lams = sorted({r["lam"] for r in rows if method_of(r) == REFERENCE})
    for ax, (key, name, percent, better) in zip(axes.flat, PANELS, strict=True):
        scale = 100.0 if percent else 1.0
        for corpus in corpora:
            mine = [r for r in rows if r["corpus"] == corpus]
            for method, style in LAMBDA_CURVES.items():
                pts = sorted((r["lam"], r[key]) for r in mine if method_of(r) == method and _finite(r.get(key)))
                origin = get_method(method).origin
                if origin is not None:  # the curve starts at the cell that is its knob 0
                    start = [r[key] for r in mine if method_of(r) == origin and _finite(r.get(key))]
                    pts = [(0.0, start[0])] + pts if start and pts else pts
                if pts:
                    ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], style, color=colours[corpus], ms=4)
            for method, ls in REFERENCE_STYLES.items():
                for r in mine:
                    if method_of(r) == method and _finite(r.get(key)):
                        ax.axhline(scale * r[key], color=colours[corpus], ls=ls, lw=1)
        ax.set_xscale("symlog", linthresh=LINTHRESH)
        # Ticks at the swept values only: symlog's default puts empty decades
        # (1e-1, 1e0 with nothing near them) and unlabeled minor ticks.
        ax.xaxis.set_major_locator(FixedLocator(lams))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{lam:g}" for lam in lams], fontsize=8)
        ax.set_xlim(left=-0.002)
        ax.set_title(f"{name}\n({better})", fontsize=9.5)
        ax.set_xlabel("λ")
        ax.set_ylabel("% change vs λ = 0" if percent else name.split(" (")[0], fontsize=8.5)
        ax.axhline(0 if percent else (1 if key == "jaccard_vs_unsteered" else 0), color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[c], marker="o", ms=4) for c in corpora]
    labels = [corpus_label(c) for c in corpora]
    methods = {method_of(r) for r in rows}
    for method, handle, label in [
        ("prior+prompt", Line2D([], [], color="k", ls=":", marker="x", ms=4), "prior + prompt"),
        ("prompt", Line2D([], [], color="k", ls="--"), "prompt (reference)"),
        ("lora", Line2D([], [], color="k", ls="-."), "LoRA (reference)"),
    ]:
        if method in methods:
            handles.append(handle)
            labels.append(label)
    if len(handles) > len(corpora):
        handles.insert(len(corpora), Line2D([], [], color="k", marker="o", ms=4))
        labels.insert(len(corpora), "prior (solid)")
    bottom = _legend_below(fig, handles, labels)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 0.95 if title else 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


METHOD_STYLES = {REFERENCE: ("-o", "prior"), "prior+prompt": (":s", "prior + prompt"),
                 "prompt": ("D", "prompt"), "lora": ("^", "LoRA")}
VARIANT_STYLES = ["--v", "-.P", "--X", ":*", "-.h", "--p", ":<"]


def _styles(rows: list[dict]) -> dict:
    """Line style and label of every method in the rows: the fixed ones, then the variants in order."""
    styles = dict(METHOD_STYLES)
    variants = [m for m in dict.fromkeys(method_of(r) for r in rows) if m not in styles]
    for i, m in enumerate(variants):
        styles[m] = (VARIANT_STYLES[i % len(VARIANT_STYLES)], m)
    return {m: st for m, st in styles.items() if any(method_of(r) == m for r in rows)}


def plot_pareto(rows: list[dict], path: Path, title: str | None = None) -> None:
    """Per corpus: x = base-model perplexity (log), y = judge hit rate with its 95 % interval.

    One curve per method with lambda as points (the prompting and LoRA
    baselines are single points); marker area follows distinct-2, so a
    method that buys style with repetition shows small markers. Up and to
    the left is better.
    """
    corpora = [c for c in dict.fromkeys(r["corpus"] for r in rows)
               if any(_finite(r.get("judge_hit")) for r in rows if r["corpus"] == c)]
    if not corpora:
        return
    cols = min(3, len(corpora))
    nrows = math.ceil(len(corpora) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.3 * nrows), squeeze=False)
    for ax, corpus in zip(axes.flat, corpora, strict=False):
        mine = [r for r in rows if r["corpus"] == corpus and _finite(r.get("judge_hit"))]
        for i, (method, (style, label)) in enumerate(_styles(rows).items()):
            pts = sorted((r for r in mine if method_of(r) == method),
                         key=lambda r: r.get("knob", r["lam"]))
            if not pts:
                continue
            x = [r["base_ppl"] for r in pts]
            y = [r["judge_hit"] for r in pts]
            err = [[max(0.0, r["judge_hit"] - r["judge_hit_lo"]) if _finite(r.get("judge_hit_lo")) else 0 for r in pts],
                   [max(0.0, r["judge_hit_hi"] - r["judge_hit"]) if _finite(r.get("judge_hit_hi")) else 0 for r in pts]]
            colour = f"C{i}"
            ax.errorbar(x, y, yerr=err, fmt=style[:-1] if len(style) > 1 else "none", color=colour, lw=1,
                        alpha=0.8, capsize=2)
            sizes = [12 + 120 * (r["distinct_2"] if _finite(r.get("distinct_2")) else 0.5) for r in pts]
            ax.scatter(x, y, s=sizes, marker=style[-1], color=colour, label=label, zorder=3, edgecolor="k", lw=0.4)
            if len(pts) > 1:  # a knob curve: label each point with its knob value
                for r in pts:
                    ax.annotate(f"{r.get('knob', r['lam']):g}", (r["base_ppl"], r["judge_hit"]), fontsize=6.5,
                                xytext=(3, 3), textcoords="offset points", color=colour)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(corpus_label(corpus), fontsize=10)
        ax.set_xlabel("base-model perplexity of the continuations", fontsize=8.5)
        ax.set_ylabel("judged in-style (share)", fontsize=8.5)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(corpora):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    bottom = _legend_below(fig, handles, labels, "numbers: the knob (λ, or ε for KL budgets); marker area: "
                           "distinct-2; bars: 95 % bootstrap interval over prompts")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 0.95 if title else 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
