"""Where distinct-2 goes: repeats inside a continuation, or the same bigrams across continuations.

distinct-2 of a cell is U / T, unique word bigrams over all bigrams, pooled over its continuations
(``steer.judges.diversity.DiversityJudge``, on the judges' words). With u_i the unique bigrams of
continuation i and W = sum_i u_i,

    1 - U / T  =  (T - W) / T  +  (W - U) / T
                  `-- within --'   `-- across --'

the share of bigrams that repeat one already in the same continuation (loops, refrains) plus the
share that repeat one of another continuation only (every continuation reaching for the same
phrases). The two add up exactly to 1 - distinct-2; set beside the unsteered cell's, they say
which of the two a steering method costs.

The words are the judges' own (``steer.judges.heldout.split_context`` of the committed ``prompt`` and
``text``), so ``pooled`` equals results.csv's ``distinct_2``, printed beside it. Reads the SmolLM2 run
folders named below; writes diversity_split.csv beside this file and prints it.

    python docs/results/steering_variants/diversity_split.py
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path

from steer.judges.heldout import split_context

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
RUNS = ("steering_variants/smollm2-sample-ban", "steering_variants/smollm2-sample-ban-kl",
        "steering_variants/smollm2-sample-ban-other3", "activation/smollm2-sample",
        "steering_variants/smollm2-sample-ban-fresh", "steering_variants/smollm2-sample-ban-kl-fresh",
        "steering_variants/smollm2-sample-ban-kl-other3",
        "steering_variants/smollm2-sample-ban-mask-temper-alpha0.02-other3")


def split(conts: list[list[str]]) -> dict:
    """Pooled distinct-2 and its loss split into within- and across-continuation repeats."""
    total = unique_within = 0
    pooled = set()
    for words in conts:
        grams = list(zip(words, words[1:], strict=False))
        total += len(grams)
        unique_within += len(set(grams))
        pooled.update(grams)
    if total == 0:
        return {"pooled": float("nan"), "within": float("nan"), "across": float("nan")}
    return {"pooled": len(pooled) / total, "within": (total - unique_within) / total,
            "across": (unique_within - len(pooled)) / total}


def main() -> list[dict]:
    rows, seen = [], set()
    for run in RUNS:
        folder = RESULTS / run
        with open(folder / "results.csv", encoding="utf-8") as f:
            reported = {(r["corpus"], r["method"], float(r["knob"])): float(r["distinct_2"]) for r in csv.DictReader(f)}
        options = json.dumps(json.loads((folder / "config.json").read_text(encoding="utf-8"))["sweep"]["guided"],
                             sort_keys=True)
        cells = defaultdict(list)
        with gzip.open(folder / "samples.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                s = json.loads(line)
                cells[(s["corpus"], s["method"], float(s["knob"]))].append(split_context(s["prompt"], s["text"])[1])
        for key, conts in sorted(cells.items()):
            # A cell carried over into a later folder is counted once: the baselines by name, the
            # variants by name and options (the same knob with other options is another cell).
            ident = key if key[1] in ("prior", "prompt", "lora") else (*key, options)
            if ident in seen:
                continue
            seen.add(ident)
            corpus, method, knob = key
            rows.append({"run": run, "corpus": corpus, "method": method, "knob": knob,
                         "options": "" if ident == key else options, "n": len(conts),
                         "distinct_2": reported.get(key, float("nan")),
                         **{k: round(v, 4) for k, v in split(conts).items()}})
    out = HERE / "diversity_split.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['corpus']:<18} {r['method']:<34} {r['knob']:>6g} {r['options']:<14} "
              f"distinct-2 {r['distinct_2']:.3f} pooled {r['pooled']:.3f}  within {r['within']:.3f}  "
              f"across {r['across']:.3f}")
    return rows


if __name__ == "__main__":
    main()
