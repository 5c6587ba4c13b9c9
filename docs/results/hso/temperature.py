"""hso against prompting at matched fluency, with the sampling temperature as the common fluency knob.

At temperature 1 every hso cell is less fluent than prompting (compare.csv), and prompting has no knob
of its own, so "at matched base perplexity" has only one prompting point to match. Cooling the
sampler lowers the base perplexity of any method, so the same knob traces a fluency/style curve for
both: ``smollm2-sample`` holds the temperature-1 cells, ``smollm2-sample-t0.8`` prompting and hso
sampled at temperature 0.8 and ``smollm2-sample-t0.9`` prompting at 0.9 (everything else equal).

The runs' own judges differ slightly (the classifier's chunk lengths follow each run's unsteered
texts), so every text of every run is re-judged here by one classifier, built exactly as the
temperature-1 run built its own (checked: it reproduces that run's stored hits sample for sample).
Base perplexity is the stored per-sample NLL under the unsteered model (no temperature enters it).

For every hso cell and every prompting cell of the same corpus: the paired hit difference (95 %
bootstrap interval over prompts) and the base perplexity ratio (paired interval). The two are
*matched* when the ratio's interval holds 1; the hso cell is of *no worse fluency* when the interval
reaches down to 1 or lies below it. It *wins at matched* (or *no worse*) *fluency* when it judges
higher (interval above 0) than a prompting cell so placed and no prompting cell at least as fluent
(ratio >= 1) judges as high; ``goal_met``: wins at matched fluency on at least 2 corpora.
Writes temperature.csv, temperature.json and temperature.png (hit against base perplexity) beside
this file.

    python docs/results/hso/temperature.py        # the temperature-1 run's judge (the headline)
    python docs/results/hso/temperature.py 0.8    # the same with the 0.8 run's judge: temperature_judge0.8.*
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from steer.catalog import style_names

from steer.corpora import load_corpus
from steer.judges.panel import JudgePanel, word_lengths
from steer.judges.stats import bootstrap_mean_ci, paired_diff_ci, paired_ppl_ratio_ci, per_prompt_means
from steer.plots import plot_pareto

HERE = Path(__file__).resolve().parent
RUNS = {1.0: HERE / "smollm2-sample", 0.9: HERE / "smollm2-sample-t0.9", 0.8: HERE / "smollm2-sample-t0.8"}


def read_samples(run: Path) -> dict:
    cells = defaultdict(list)
    # A finished sweep writes samples.jsonl; the committed runs hold it gzipped.
    path = run / "samples.jsonl.gz"
    with (gzip.open(path, "rt", encoding="utf-8") if path.exists()
          else open(run / "samples.jsonl", encoding="utf-8")) as f:
        for line in f:
            s = json.loads(line)
            # prior at 0 is the unsteered model; hso at 0 steps is prompting (the same texts).
            keep = (s["method"] == "prompt" or (s["method"] == "prior" and s["lam"] == 0.0)
                    or (s["method"] == "hso" and s["knob"] > 0))
            if keep:
                cells[(s["corpus"], s["method"], s["knob"])].append(s)
    for samples in cells.values():
        samples.sort(key=lambda s: (s["sample"], s["prompt_index"]))
    return cells


def read_distinct2(run: Path) -> dict:
    """Each cell's distinct-2 (a property of its texts alone, so each run's own figure stands)."""
    with open(run / "cells.jsonl", encoding="utf-8") as f:
        return {(c["corpus"], c["method"], c["knob"]): c["distinct_2"] for c in map(json.loads, f)}


def build_panel(config: dict, unsteered: list[str]) -> JudgePanel:
    """The classifier the sweep of ``config`` built (same corpora, splits and chunk lengths)."""
    sweep = config["sweep"]
    load = lambda name: load_corpus(name, judge_fraction=sweep["judge_fraction"], encoding=sweep["encoding"])  # noqa: E731
    targets = {name: load(name) for name in sweep["corpora"]}
    classes = {name: targets.get(name) or load(name) for name in style_names()}
    return JudgePanel(targets, classes, load(sweep["neutral"]), lengths=word_lengths(unsteered),
                      kinds=("classifier",), classifier_options=sweep["classifier"])


def main(judge: float = 1.0) -> dict:
    """Re-judge every run with the classifier of the run at temperature ``judge`` and compare."""
    runs = {t: read_samples(path) for t, path in RUNS.items()}
    ref = json.loads((RUNS[judge] / "config.json").read_text(encoding="utf-8"))
    corpora = ref["sweep"]["corpora"]
    # The sweep drew its chunk lengths from the unsteered texts in (sample, prompt) order, all corpora
    # sharing one unsteered generation; any corpus's prior-0 cell holds those texts.
    unsteered = [s["text"] for s in runs[judge][(corpora[0], "prior", 0.0)]]
    panel = build_panel(ref, unsteered)

    for t, cells in runs.items():
        for (corpus, _, _), samples in cells.items():
            hits = panel.score(corpus, [s["prompt"] for s in samples], [s["text"] for s in samples])["judge_hit"]
            if t == judge and not np.array_equal(hits, [s["judge_hit"] for s in samples]):
                raise RuntimeError(f"the rebuilt judge does not reproduce the stored hits of {corpus} at {t}")
            for s, h in zip(samples, hits, strict=True):
                s["hit"] = float(h)

    def per_prompt(samples, key):
        return per_prompt_means([s[key] for s in samples], [s["prompt_index"] for s in samples])

    distinct2 = {t: read_distinct2(path) for t, path in RUNS.items()}
    points, rows = [], []
    for corpus in corpora:
        mine = {(t, m, k): v for t, cells in runs.items() for (c, m, k), v in cells.items() if c == corpus}
        for (t, m, k), samples in sorted(mine.items()):
            hit, lo, hi = bootstrap_mean_ci(per_prompt(samples, "hit"))
            nll, n = sum(s["base_nll"] for s in samples), sum(s["base_tokens"] for s in samples)
            points.append({"corpus": corpus, "temperature": t, "method": m, "knob": k, "hit": round(hit, 4),
                           "hit_lo": round(lo, 4), "hit_hi": round(hi, 4),
                           "base_ppl": round(float(np.exp(nll / n)), 2),
                           "distinct_2": round(distinct2[t][(corpus, m, k)], 4),
                           "degenerate": round(float(np.mean([s["degenerate"] for s in samples])), 4)})
        prompts = {key: v for key, v in mine.items() if key[1] == "prompt"}
        for (t, m, k), samples in sorted(mine.items()):
            if m != "hso":
                continue
            versus = []
            for (tp, _, _), ref_samples in sorted(prompts.items()):
                d, lo, hi = paired_diff_ci(per_prompt(samples, "hit"), per_prompt(ref_samples, "hit"))
                r, r_lo, r_hi = paired_ppl_ratio_ci(per_prompt(samples, "base_nll"), per_prompt(samples, "base_tokens"),
                                                    per_prompt(ref_samples, "base_nll"),
                                                    per_prompt(ref_samples, "base_tokens"))
                versus.append({"corpus": corpus, "temperature": t, "method": m, "knob": k,
                               "prompt_temperature": tp, "hit_minus_prompt": round(d, 4), "lo": round(lo, 4),
                               "hi": round(hi, 4), "base_ppl_x_prompt": round(r, 3), "ppl_lo": round(r_lo, 3),
                               "ppl_hi": round(r_hi, 3)})
            for v in versus:
                v["matched"] = v["ppl_lo"] <= 1 <= v["ppl_hi"]
                v["no_worse_fluency"] = v["ppl_lo"] <= 1
                v["beats"] = v["no_worse_fluency"] and v["lo"] > 0
            # A win also needs every prompting cell at least as fluent to judge lower in style, so that a
            # cooler prompting cell does not dominate it.
            undominated = all(v["hit_minus_prompt"] > 0 for v in versus if v["base_ppl_x_prompt"] >= 1)
            verdict = {"wins_at_no_worse_fluency": undominated and any(v["beats"] for v in versus),
                       "wins_at_matched_fluency": undominated and any(v["beats"] and v["matched"] for v in versus)}
            for v in versus:
                v.update(verdict)
            rows += versus

    name = "temperature" if judge == 1.0 else f"temperature_judge{judge:g}"
    with open(HERE / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    wins = sorted({r["corpus"] for r in rows if r["wins_at_no_worse_fluency"]})
    matched_wins = sorted({r["corpus"] for r in rows if r["wins_at_matched_fluency"]})
    out = {"judge": f"the classifier of the run at temperature {judge:g}, rebuilt (reproduces its stored hits)",
           "runs": {str(t): str(p.relative_to(HERE)) for t, p in RUNS.items()},
           "points": points, "corpora_won": wins, "corpora_won_matched": matched_wins,
           "goal_met": len(matched_wins) >= 2}
    (HERE / f"{name}.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    if judge == 1.0:
        label = lambda p: f"{'unsteered' if p['method'] == 'prior' else p['method']} (T {p['temperature']:g})"  # noqa: E731
        plot_pareto([{**p, "method": label(p), "judge_hit": p["hit"], "judge_hit_lo": p["hit_lo"],
                      "judge_hit_hi": p["hit_hi"], "lam": 0.0} for p in points], HERE / "temperature.png",
                    title="hso and prompting at sampling temperatures 1, 0.9 and 0.8 (SmolLM2, one judge)")
    for p in points:
        print(p)
    for r in rows:
        print(r)
    print(json.dumps({"corpora_won": wins, "corpora_won_matched": matched_wins, "goal_met": out["goal_met"]}))
    return out


if __name__ == "__main__":
    import sys

    main(*(float(a) for a in sys.argv[1:2]))
