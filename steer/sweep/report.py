"""A sweep's results: the cell schema, results.csv and comparisons.csv from the finished cells and samples."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import fields
from pathlib import Path

from steer import metrics as M
from steer.methods import REFERENCE, is_unsteered
from steer.runs import RunLock, read_jsonl
from steer.sweep.config import SweepConfig

# Judge figures (held-out, independent of every method), then the older
# figures: steer_table_ppl and overlap_n use the steering table itself and
# so favour the prior by construction.
JUDGE_METRICS = ["judge_hit", "judge_hit_lo", "judge_hit_hi", "judge_p_target", "heldout_style_ppl",
                 "degenerate_rate", "distinct_1", "distinct_2", "self_bleu"]

# 95 % bootstrap intervals over prompts, computed from samples.jsonl when results are written.
INTERVALS = ["judge_p_target", "heldout_style_ppl", "degenerate_rate", "base_ppl", "cross_ppl"]

METRICS = [*JUDGE_METRICS, "base_ppl", "cross_ppl", "steer_table_ppl", "js_div", "overlap_1", "overlap_2", "overlap_3",
           "jaccard_vs_unsteered", "prefix_vs_unsteered", "mean_len",
           *[f"{m}_{end}" for m in INTERVALS for end in ("lo", "hi")]]

COSTS = ["train_s", "infer_ms_per_token", "extra_mem_mb"]

# Relative change vs the unsteered cell. Not for JS divergence (0 at lam = 0 by
# definition) nor for interval bounds.
REL_METRICS = ["judge_hit", "judge_p_target", "heldout_style_ppl", "base_ppl", "cross_ppl", "steer_table_ppl",
               "degenerate_rate", "distinct_2", "self_bleu", "overlap_3"]

COLUMNS = ["corpus", "method", "lam", "knob", "n_samples", *METRICS, *COSTS, *[f"{m}_rel" for m in REL_METRICS]]

# Every comparison at matched fluency and against the constraints, one row each, its table named in `kind`.
COMPARISONS = "comparisons.csv"

SUPERSEDED = ("results.json", "matched.csv", "matched_variants.csv", "matched_methods.csv", "no_worse_fluency.csv",
              "constraints.csv", "holding.csv")

# Per-sample values kept in samples.jsonl (judges, fluency), for paired comparisons.
SAMPLE_VALUES = ["judge_hit", "judge_p_target", "heldout_nll", "heldout_words", "degenerate", "base_nll",
                 "base_tokens", "cross_nll", "cross_tokens"]


def _mean(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def _key(row: dict) -> tuple:
    return row["corpus"], row["method"], row["knob"]


def _read_rows(path: Path) -> list[dict]:
    """A run's cells or samples, normalised once as read: rows written before a sweep ran several
    methods name none (they are the reference method's, at knob lam)."""
    return [{"method": REFERENCE, "knob": r["lam"], **r} if "method" not in r or "knob" not in r else r
            for r in read_jsonl(path)]


def read_cells(out_dir) -> list[dict]:
    """A run folder's finished cells (cells.jsonl, normalised as read): its result rows without intervals."""
    path = Path(out_dir) / "cells.jsonl"
    if not path.exists() and not path.with_name("cells.jsonl.gz").exists():
        raise FileNotFoundError(f"{str(out_dir)!r} holds no sweep cells (no cells.jsonl)")
    return _read_rows(path)


def judge_columns(samples: list[dict], summary: dict) -> dict:
    """A cell's judge figures from its samples' per-sample values, with 95 % bootstrap intervals over prompts."""
    from steer.judges.stats import bootstrap_mean_ci

    nan = float("nan")
    out = {m: nan for m in JUDGE_METRICS}
    idx = [s["prompt_index"] for s in samples]
    if samples and "judge_hit" in samples[0]:
        out["judge_hit"], out["judge_hit_lo"], out["judge_hit_hi"] = bootstrap_mean_ci(
            [s["judge_hit"] for s in samples], idx)
        out["judge_p_target"] = _mean([s["judge_p_target"] for s in samples])
    if samples and "heldout_nll" in samples[0]:
        out["heldout_style_ppl"] = M.pooled_perplexity([s["heldout_nll"] for s in samples],
                                              [s["heldout_words"] for s in samples])
    if samples and "degenerate" in samples[0]:
        out["degenerate_rate"] = _mean([s["degenerate"] for s in samples])
    out.update(summary)
    return out


def report_sweep(out_dir, figures: bool = True) -> tuple[list[dict], int, int]:
    """Write the results files of a run folder from the cells finished so far, running nothing.

    For a long sweep that was stopped and will be resumed later (a sweep still
    running holds the folder's lock, so this refuses until it stops). The
    settings come from the folder's config.json.

    Returns:
        (rows, finished cells, all cells of the sweep).
    """
    out = Path(out_dir)
    path = out / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{str(out)!r} holds no sweep (no config.json)")
    stored = json.loads(path.read_text(encoding="utf-8")).get("sweep")
    if not isinstance(stored, dict):
        raise ValueError(f"{str(path)!r} is not a steer sweep config")
    known = {f.name for f in fields(SweepConfig)}
    config = SweepConfig(**{k: v for k, v in stored.items() if k in known})
    with RunLock(out):
        cells = _read_rows(out / "cells.jsonl")
        rows = _with_relative(cells, config)
        rows = _write_results(out, rows, config, figures=figures)
    return rows, len(cells), len(config.cells())


def _with_relative(cells: list[dict], config: SweepConfig) -> list[dict]:
    base = {c["corpus"]: c for c in cells if is_unsteered(c["method"], c["lam"])}
    # The relative change of a variant is against the same unsteered cell as the prior's.
    order = {cell: i for i, cell in enumerate(config.cells())}
    rows = []
    for c in sorted(cells, key=lambda c: order.get(_key(c), 1e9)):
        row = dict(c)
        for m in REL_METRICS:
            b = base.get(c["corpus"], {}).get(m, float("nan"))
            row[f"{m}_rel"] = M.relative_change(c.get(m, float("nan")), b)  # runs before a column: NaN
        rows.append(row)
    return rows


def _with_intervals(rows: list[dict], samples: list[dict]) -> list[dict]:
    """Each row's judge figures from its samples' per-sample values, with 95 % bootstrap intervals over prompts.

    samples.jsonl is the single source of the judge figures: the point
    estimates are recomputed here too, so results always match the samples.
    """
    from steer.judges.stats import bootstrap_mean_ci, bootstrap_pooled_ppl_ci

    by_cell: dict[tuple, list[dict]] = {}
    for smp in samples:
        by_cell.setdefault(_key(smp), []).append(smp)
    for row in rows:
        mine = by_cell.get(_key(row), [])
        idx = [smp["prompt_index"] for smp in mine]
        for m in INTERVALS:
            row[f"{m}_lo"] = row[f"{m}_hi"] = float("nan")
        if not mine:
            continue
        row.update({k: v for k, v in judge_columns(mine, {}).items() if v == v})
        for m, key in [("judge_p_target", "judge_p_target"), ("degenerate_rate", "degenerate")]:
            if key in mine[0]:
                _, row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_mean_ci([smp[key] for smp in mine], idx)
        for m, nll, n in [("heldout_style_ppl", "heldout_nll", "heldout_words"),
                          ("base_ppl", "base_nll", "base_tokens"), ("cross_ppl", "cross_nll", "cross_tokens")]:
            if nll in mine[0]:
                _, row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_pooled_ppl_ci(
                    [smp[nll] for smp in mine], [smp[n] for smp in mine], idx)
    return rows


def _write_results(out: Path, rows: list[dict], config: SweepConfig, figures: bool = True) -> list[dict]:
    from steer.matched import (
        CONSTRAINT_COLUMNS,
        FLUENCY_COLUMNS,
        HOLDING_COLUMNS,
        MATCHED_COLUMNS,
        METHOD_COLUMNS,
        VARIANT_COLUMNS,
        at_no_worse_fluency,
        constraint_table,
        holding_vs_baselines,
        matched_methods,
        matched_table,
        matched_variants,
    )

    samples = _read_rows(out / "samples.jsonl")
    rows = _with_intervals(rows, samples)
    tables = [("matched", MATCHED_COLUMNS, matched_table(rows, samples))]
    if config.methods:
        tables.append(("matched_variants", VARIANT_COLUMNS, matched_variants(rows, samples)))
        tables.append(("matched_methods", METHOD_COLUMNS, matched_methods(rows, samples)))
    if config.baselines:
        tables.append(("no_worse_fluency", FLUENCY_COLUMNS, at_no_worse_fluency(rows, samples)))
    if all(k in r for r in rows for k in ("judge_hit", "base_ppl", "distinct_2", "degenerate_rate")):
        # only with every judge the constraints need (the style classifier may have refused to judge)
        tables.append(("constraints", CONSTRAINT_COLUMNS, constraint_table(rows)))
        if config.baselines:
            tables.append(("holding", HOLDING_COLUMNS, holding_vs_baselines(rows, samples)))
    columns = ["kind", *dict.fromkeys(c for _, cols, _ in tables for c in cols)]
    _write_csv(out / COMPARISONS, columns, [{"kind": kind, **r} for kind, _, table in tables for r in table])
    _write_csv(out / "results.csv", COLUMNS, [{k: v for k, v in r.items() if k in COLUMNS} for r in rows])
    for name in SUPERSEDED:  # the files these two replace, from runs written before them
        (out / name).unlink(missing_ok=True)
    try:
        from steer.plots import plot_metrics_vs_lambda, plot_pareto
    except ImportError:
        return rows
    if figures:
        plot_metrics_vs_lambda(rows, out / "metrics_vs_lambda.png", title=plot_title(config))
        plot_pareto(rows, out / "pareto.png", title=plot_title(config))
    return rows


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def read_comparisons(out, kind: str) -> list[dict]:
    """The rows of one kind of comparison of a run folder (as text), from comparisons.csv or, for runs
    written before it, from that kind's own file (``KIND.csv``); [] where the run has none."""
    out = Path(out)
    if (out / COMPARISONS).exists():
        with open(out / COMPARISONS, encoding="utf-8") as f:
            return [{k: v for k, v in r.items() if k != "kind" and v != ""} for r in csv.DictReader(f)
                    if r["kind"] == kind]
    if (out / f"{kind}.csv").exists():
        with open(out / f"{kind}.csv", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return []


def plot_title(config: SweepConfig) -> str:
    """The figure title: model, decoding and how many continuations each cell holds."""
    decoding = {"greedy": "greedy decoding", "beam": f"beam search ({config.num_beams} beams)",
                "sample": f"sampling (T = {config.temperature:g}, top-p {config.top_p:g})"}[config.decoding]
    n = len(config.prompts) * config.samples
    return (f"{Path(config.model).name or config.model}, {decoding}, {len(config.prompts)} prompts x "
            f"{config.samples} sample{'s' if config.samples > 1 else ''} = {n} continuations per cell, "
            f"{config.max_new_tokens} new tokens")
