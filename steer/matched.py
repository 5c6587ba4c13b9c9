"""Methods compared at matched fluency: the prior's judge hit rate where its base perplexity equals a baseline's."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from steer import checks
from steer.judges.stats import interpolate_at, paired_diff_ci, per_prompt_means
from steer.methods import REFERENCE, baseline_names, is_unsteered, method_of
from steer.options import Options, option

MATCHED_COLUMNS = ["corpus", "baseline", "baseline_lam", "baseline_base_ppl", "baseline_hit", "prior_hit_at_ppl",
                   "prior_lam_low", "prior_lam_high", "diff", "diff_lo", "diff_hi", "n_prompts"]
BASELINE_METHODS = baseline_names()


def _knob(row: dict) -> float:
    return row.get("knob", row["lam"])


def _per_prompt(samples: list[dict], key: str, n_prompts: int) -> np.ndarray:
    idx = [s["prompt_index"] for s in samples]
    vals = [s.get(key, float("nan")) for s in samples]
    full = np.full(n_prompts, np.nan)
    means = per_prompt_means(vals, idx)
    present = sorted(set(idx))
    full[present] = means
    return full


def _baseline_hits(rows: list[dict], by_cell: dict, corpus: str, against: tuple, n_prompts: int) -> list:
    """(row, per-prompt judge hits) of each judged baseline cell of ``corpus`` whose method is in ``against``."""
    out = []
    for b in rows:
        cell = by_cell.get((corpus, method_of(b), _knob(b)))
        if b["corpus"] == corpus and method_of(b) in against and cell:
            out.append((b, _per_prompt(cell, "judge_hit", n_prompts)))
    return out


def _judged_cells(samples: list[dict]) -> tuple[dict, int]:
    """(corpus, method, knob) -> that cell's judged samples, and the number of prompts."""
    by_cell = defaultdict(list)
    for s in samples:
        if "judge_hit" in s:
            by_cell[(s["corpus"], s["method"], _knob(s))].append(s)
    n_prompts = 1 + max((s["prompt_index"] for cell in by_cell.values() for s in cell), default=-1)
    return by_cell, n_prompts


def matched_table(rows: list[dict], samples: list[dict], curve: str = REFERENCE,
                  against: tuple = BASELINE_METHODS) -> list[dict]:
    """One row per corpus and baseline cell: the ``curve`` method at the baseline's fluency, and the paired difference.

    For each corpus the curve method's cells (the prior by default; any
    method with a knob, which then starts from the unsteered cell as its knob
    0), in increasing knob, trace a curve of
    (base perplexity, per-prompt judge hit rate). At a baseline's base
    perplexity b the curve is interpolated linearly in log perplexity on the
    first lambda segment that spans b, per prompt; ``diff`` = prior's hit
    rate there minus the baseline's, with a 95 % paired bootstrap interval
    over prompts (``diff_lo``, ``diff_hi``). When no segment spans b (the
    prior never reaches the baseline's fluency) the prior's figures are NaN:
    no matched comparison exists, and none is invented. ``against`` names the
    methods whose cells are the baselines (prompting, prior + prompt, LoRA).
    """
    by_cell, n_prompts = _judged_cells(samples)
    if not by_cell:
        return []
    out = []
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        prior = sorted((r for r in rows if r["corpus"] == corpus and method_of(r) == curve
                        and (corpus, curve, _knob(r)) in by_cell), key=_knob)
        cells = [by_cell[(corpus, curve, _knob(r))] for r in prior]
        if curve != REFERENCE:  # every method starts from the unsteered cell: knob 0 of the reference
            start = [r for r in rows if r["corpus"] == corpus and is_unsteered(method_of(r), r["lam"])
                     and (corpus, REFERENCE, 0.0) in by_cell]
            prior = [{**r, "knob": 0.0} for r in start] + prior
            cells = [by_cell[(corpus, REFERENCE, 0.0)] for _ in start] + cells
        x = [r["base_ppl"] for r in prior]
        ys = [_per_prompt(cell, "judge_hit", n_prompts) for cell in cells]
        for r in rows:
            if r["corpus"] != corpus or method_of(r) not in against:
                continue
            cell = by_cell.get((corpus, r["method"], _knob(r)))
            if not cell:
                continue
            base_hits = _per_prompt(cell, "judge_hit", n_prompts)
            row = {"corpus": corpus, "baseline": r["method"], "baseline_lam": r["lam"],
                   "baseline_base_ppl": r["base_ppl"], "baseline_hit": float(np.nanmean(base_hits)),
                   "prior_hit_at_ppl": math.nan, "prior_lam_low": math.nan, "prior_lam_high": math.nan,
                   "diff": math.nan, "diff_lo": math.nan, "diff_hi": math.nan, "n_prompts": int(n_prompts)}
            hit = interpolate_at(x, ys, r["base_ppl"]) if len(prior) >= 2 else None
            if hit is not None:
                at_ppl, (i, j, _) = hit
                diff, lo, hi = paired_diff_ci(at_ppl, base_hits)
                row.update(prior_hit_at_ppl=float(np.nanmean(at_ppl)), prior_lam_low=_knob(prior[i]),
                           prior_lam_high=_knob(prior[j]), diff=diff, diff_lo=lo, diff_hi=hi)
            out.append(row)
    return out


VARIANT_COLUMNS = ["method", "corpus", "baseline", "baseline_lam", "baseline_base_ppl", "baseline_hit",
                   "method_hit_at_ppl", "knob_low", "knob_high", "diff", "diff_lo", "diff_hi", "n_prompts"]


def matched_variants(rows: list[dict], samples: list[dict]) -> list[dict]:
    """:func:`matched_table` for every method with a knob curve other than the prior (columns VARIANT_COLUMNS)."""
    out = []
    curves = [m for m in dict.fromkeys(method_of(r) for r in rows)
              if m != REFERENCE and m not in BASELINE_METHODS]
    for m in curves:
        for r in matched_table(rows, samples, curve=m):
            out.append({"method": m, **{k: v for k, v in r.items() if not k.startswith("prior_")},
                        "method_hit_at_ppl": r["prior_hit_at_ppl"], "knob_low": r["prior_lam_low"],
                        "knob_high": r["prior_lam_high"]})
    return [{k: r[k] for k in VARIANT_COLUMNS} for r in out]


FLUENCY_COLUMNS = ["method", "corpus", "knob", "method_base_ppl", "method_hit", "baseline", "baseline_lam",
                   "baseline_base_ppl", "baseline_hit", "diff", "diff_lo", "diff_hi", "n_prompts"]


def at_no_worse_fluency(rows: list[dict], samples: list[dict], methods: list[str] | None = None,
                        against: tuple = BASELINE_METHODS) -> list[dict]:
    """Every knob method against every baseline cell, at the method's cell closest in fluency but no less fluent.

    Where a method's curve never reaches a baseline's base perplexity (it stays
    more fluent, so :func:`matched_table` has nothing to interpolate), the
    comparison that still holds is this one: the method's cell with the
    largest base perplexity not above the baseline's (chosen by fluency
    alone, never by hit rate), and its hit rate minus the baseline's with a
    95 % paired bootstrap interval over prompts. A positive interval there
    means the method is both more fluent and more in style. Columns FLUENCY_COLUMNS. ``methods``
    (default: every knob method) are compared with the cells of the methods in ``against``.
    """
    by_cell, n_prompts = _judged_cells(samples)
    if not by_cell:
        return []
    if methods is None:
        methods = [m for m in dict.fromkeys(method_of(r) for r in rows) if m not in BASELINE_METHODS]
    out = []
    for m in methods:
        for corpus in dict.fromkeys(r["corpus"] for r in rows):
            mine = [r for r in rows if r["corpus"] == corpus and method_of(r) == m
                    and not is_unsteered(m, r["lam"]) and (corpus, m, _knob(r)) in by_cell]
            for b, base_hits in _baseline_hits(rows, by_cell, corpus, against, n_prompts):
                fluent = [r for r in mine if r["base_ppl"] <= b["base_ppl"]]
                if not fluent:
                    continue
                r = max(fluent, key=lambda r: r["base_ppl"])
                hits = _per_prompt(by_cell[(corpus, m, _knob(r))], "judge_hit", n_prompts)
                diff, lo, hi = paired_diff_ci(hits, base_hits)
                out.append({"method": m, "corpus": corpus, "knob": _knob(r), "method_base_ppl": r["base_ppl"],
                            "method_hit": float(np.nanmean(hits)), "baseline": b["method"],
                            "baseline_lam": b["lam"], "baseline_base_ppl": b["base_ppl"],
                            "baseline_hit": float(np.nanmean(base_hits)), "diff": diff, "diff_lo": lo,
                            "diff_hi": hi, "n_prompts": int(n_prompts)})
    return out


METHOD_COLUMNS = ["method", "corpus", "other", "other_knob", "other_base_ppl", "other_hit", "how", "method_knob_low",
                  "method_knob_high", "method_base_ppl", "method_hit", "diff", "diff_lo", "diff_hi", "n_prompts"]


def matched_methods(rows: list[dict], samples: list[dict]) -> list[dict]:
    """Every knob method against every cell of every other knob method, at matched fluency.

    For each cell of the other method (its knob > 0), up to two rows:
    ``how="interpolated"``, the method's curve (from the unsteered cell)
    interpolated at that cell's base perplexity, as :func:`matched_table` does
    (NaN where the curve does not span it: nothing is made up); and
    ``how="no_worse_fluency"``, the method's own cell closest in fluency but no
    less fluent, as :func:`at_no_worse_fluency` (no row where every cell of the
    method is less fluent). The second needs no interpolation, so it stays
    meaningful where a curve turns back in perplexity (a strong bonus can lower
    it). ``diff`` is the method's hit rate minus the other's, with a 95 % paired
    bootstrap interval over prompts. The prior counts as a knob method where
    it has cells at lam > 0. Columns METHOD_COLUMNS.
    """
    names = [m for m in dict.fromkeys(method_of(r) for r in rows) if m not in BASELINE_METHODS
             and any(method_of(r) == m and _knob(r) > 0 for r in rows)]
    corpora = {c: i for i, c in enumerate(dict.fromkeys(r["corpus"] for r in rows))}
    knob_of = {(r["corpus"], method_of(r), r["lam"], r["base_ppl"]): _knob(r) for r in rows}
    out = []
    for m in names:
        for other in names:
            if other == m:
                continue
            for r in matched_table(rows, samples, curve=m, against=(other,)):
                knob = knob_of[(r["corpus"], other, r["baseline_lam"], r["baseline_base_ppl"])]
                if knob == 0.0:
                    continue
                out.append({"method": m, "corpus": r["corpus"], "other": other, "other_knob": knob,
                            "other_base_ppl": r["baseline_base_ppl"], "other_hit": r["baseline_hit"],
                            "how": "interpolated", "method_knob_low": r["prior_lam_low"],
                            "method_knob_high": r["prior_lam_high"], "method_base_ppl": r["baseline_base_ppl"],
                            "method_hit": r["prior_hit_at_ppl"], "diff": r["diff"], "diff_lo": r["diff_lo"],
                            "diff_hi": r["diff_hi"], "n_prompts": r["n_prompts"]})
            for r in at_no_worse_fluency(rows, samples, methods=[m], against=(other,)):
                knob = knob_of[(r["corpus"], other, r["baseline_lam"], r["baseline_base_ppl"])]
                if knob == 0.0:
                    continue
                out.append({"method": m, "corpus": r["corpus"], "other": other, "other_knob": knob,
                            "other_base_ppl": r["baseline_base_ppl"], "other_hit": r["baseline_hit"],
                            "how": "no_worse_fluency", "method_knob_low": r["knob"], "method_knob_high": r["knob"],
                            "method_base_ppl": r["method_base_ppl"], "method_hit": r["method_hit"],
                            "diff": r["diff"], "diff_lo": r["diff_lo"], "diff_hi": r["diff_hi"],
                            "n_prompts": r["n_prompts"]})
    order = {m: i for i, m in enumerate(names)}
    out.sort(key=lambda r: (order[r["method"]], order[r["other"]], corpora[r["corpus"]], r["other_knob"], r["how"]))
    return out


# ---------------------------------------------------------------- where a method holds a set of constraints
@dataclass(frozen=True)
class Constraints(Options):
    """What a steered cell must hold against the unsteered cell of its corpus.

    The defaults are the bar steer's real-model study sets (SmolLM2-135M):
    a judged style gain of 0.30 at no more than 10 % extra perplexity, 10 %
    less diversity and one point more degenerate continuations.

    Each option's meaning is its field's help; as options (:class:`steer.options.Options`) they
    round-trip through JSON and give ``steer tune`` its flags.
    """

    family: ClassVar[str] = "constraints"
    min_hit_gain: float = option(0.30, "judge hit rate at least the unsteered one plus this")
    max_ppl_ratio: float = option(1.10, "perplexity (--fluency) at most this times the unsteered one")
    min_distinct2_ratio: float = option(0.90, "distinct-2 at least this times the unsteered one")
    max_extra_degenerate: float = option(0.01, "degenerate rate at most the unsteered one plus this")
    fluency: Literal["base_ppl", "cross_ppl"] = option(
        "base_ppl", "the perplexity max_ppl_ratio bounds: base_ppl (under the steered model itself, unsteered; every "
        "committed study's) or cross_ppl (under a model of another family, one the method does not use)")

    def __post_init__(self):
        for name in ("min_hit_gain", "max_ppl_ratio", "min_distinct2_ratio", "max_extra_degenerate"):
            checks.number(name, getattr(self, name))
        checks.choice("fluency", self.fluency, ("base_ppl", "cross_ppl"))
        if self.max_ppl_ratio <= 0 or self.min_distinct2_ratio < 0:
            raise ValueError(f"`max_ppl_ratio` must be > 0 and `min_distinct2_ratio` >= 0, got "
                             f"{self.max_ppl_ratio!r} and {self.min_distinct2_ratio!r}")


CONSTRAINT_COLUMNS = ["corpus", "method", "knob", "judge_hit", "hit_gain", "ppl_ratio", "distinct2_ratio",
                      "degenerate_rate", "unsteered_degenerate_rate", "holds", "failed"]


def constraint_table(rows: list[dict], limits: Constraints = Constraints()) -> list[dict]:
    """Every steered cell (any method with a knob but the baselines) checked against ``limits``.

    ``failed`` names the constraints a cell misses ("hit", "ppl", "distinct2", "degenerate"); the
    unsteered reference is the corpus's prior cell at lam = 0.
    """
    base = {r["corpus"]: r for r in rows if is_unsteered(method_of(r), r["lam"])}
    if limits.fluency == "cross_ppl" and any(math.isnan(r.get("cross_ppl", math.nan)) for r in base.values()):
        raise ValueError(f"`fluency` {limits.fluency!r} bounds a column these cells do not have: cross_ppl needs a "
                         "sweep with a fluency judge (SweepConfig.fluency_judge, --fluency-judge)")
    out = []
    for r in rows:
        method = method_of(r)
        ref = base.get(r["corpus"])
        if ref is None or method in BASELINE_METHODS or is_unsteered(method, r["lam"]):
            continue
        row = {"corpus": r["corpus"], "method": method, "knob": _knob(r), "judge_hit": r["judge_hit"],
               "hit_gain": r["judge_hit"] - ref["judge_hit"], "ppl_ratio": r[limits.fluency] / ref[limits.fluency],
               "distinct2_ratio": r["distinct_2"] / ref["distinct_2"], "degenerate_rate": r["degenerate_rate"],
               "unsteered_degenerate_rate": ref["degenerate_rate"]}
        failed = [name for name, ok in [
            ("hit", row["hit_gain"] >= limits.min_hit_gain),
            ("ppl", row["ppl_ratio"] <= limits.max_ppl_ratio),
            ("distinct2", row["distinct2_ratio"] >= limits.min_distinct2_ratio),
            ("degenerate", r["degenerate_rate"] <= ref["degenerate_rate"] + limits.max_extra_degenerate + 1e-12),
        ] if not ok]
        out.append({**row, "holds": not failed, "failed": "+".join(failed)})
    return out


def widest_holding_range(table: list[dict], corpus: str, method: str) -> tuple[float, float, float] | None:
    """(lowest knob, highest knob, their ratio) of the widest run of consecutive knob values of one method
    and corpus where every constraint holds, or None when none holds. A single knob value has ratio 1."""
    cells = sorted((r for r in table if r["corpus"] == corpus and r["method"] == method), key=lambda r: r["knob"])
    best, start = None, None
    for i, r in enumerate(cells + [{"holds": False}]):
        if r["holds"] and start is None:
            start = i
        if not r["holds"] and start is not None:
            lo, hi = cells[start]["knob"], cells[i - 1]["knob"]
            ratio = hi / lo if lo > 0 else math.inf if hi > lo else 1.0
            if best is None or ratio > best[2]:
                best = (lo, hi, ratio)
            start = None
    return best


HOLDING_COLUMNS = ["corpus", "method", "knob", "method_base_ppl", "method_hit", "baseline", "baseline_lam",
                   "baseline_base_ppl", "baseline_hit", "no_less_fluent", "diff", "diff_lo", "diff_hi", "n_prompts"]


def holding_vs_baselines(rows: list[dict], samples: list[dict], limits: Constraints = Constraints(),
                         against: tuple = BASELINE_METHODS) -> list[dict]:
    """Every cell that holds ``limits`` (:func:`constraint_table`) against every baseline cell of its corpus.

    The question a steering goal asks ("where the method holds its
    constraints, is it more in style than prompting and LoRA?"): one row per
    holding cell and baseline cell, with the hit-rate difference and its 95 %
    paired bootstrap interval over prompts, and ``no_less_fluent`` (the cell's
    base perplexity is at most the baseline's, so the comparison is at no
    worse fluency). Cells that hold nothing give no row. Columns HOLDING_COLUMNS.
    """
    by_cell, n_prompts = _judged_cells(samples)
    cells = {(r["corpus"], method_of(r), _knob(r)): r for r in rows}
    baselines = {}  # corpus -> its baseline cells' per-prompt hits, computed once per corpus
    out = []
    for held in (t for t in constraint_table(rows, limits) if t["holds"]):
        corpus = held["corpus"]
        mine = by_cell.get((corpus, held["method"], held["knob"]))
        if not mine:
            continue
        hits = _per_prompt(mine, "judge_hit", n_prompts)
        cell = cells[(corpus, held["method"], held["knob"])]
        if corpus not in baselines:
            baselines[corpus] = _baseline_hits(rows, by_cell, corpus, against, n_prompts)
        for b, base_hits in baselines[corpus]:
            diff, lo, hi = paired_diff_ci(hits, base_hits)
            out.append({"corpus": corpus, "method": held["method"], "knob": held["knob"],
                        "method_base_ppl": cell["base_ppl"], "method_hit": float(np.nanmean(hits)),
                        "baseline": b["method"], "baseline_lam": b["lam"], "baseline_base_ppl": b["base_ppl"],
                        "baseline_hit": float(np.nanmean(base_hits)),
                        "no_less_fluent": bool(cell["base_ppl"] <= b["base_ppl"]),
                        "diff": diff, "diff_lo": lo, "diff_hi": hi, "n_prompts": int(n_prompts)})
    return out
