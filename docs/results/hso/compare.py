"""Each hso cell against prompting with the same exemplars, paired by prompt (from samples.jsonl.gz).

Per corpus and cell: the judge hit rate minus prompting's (mean over prompts of the per-prompt
difference, 95 % bootstrap interval over prompts) and its base perplexity as a multiple of prompting's
(pooled, prompts resampled in pairs). Writes compare.csv beside this file and prints it.

    python docs/results/hso/compare.py
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path

from steer.judges.stats import paired_diff_ci, paired_ppl_ratio_ci, per_prompt_means

HERE = Path(__file__).resolve().parent
RUN = HERE / "smollm2-sample"
METHODS = ("hso", "hso+contrastive+plausible")


def main() -> list[dict]:
    cells = defaultdict(list)
    with gzip.open(RUN / "samples.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            if s["method"] in (*METHODS, "prompt"):
                cells[(s["corpus"], s["method"], s["knob"])].append(s)

    def per_prompt(samples, key):
        idx = [s["prompt_index"] for s in samples]
        return per_prompt_means([s[key] for s in samples], idx)

    out = []
    for (corpus, method, knob), samples in sorted(cells.items()):
        if method == "prompt":
            continue
        ref = cells[(corpus, "prompt", 0.0)]
        d, lo, hi = paired_diff_ci(per_prompt(samples, "judge_hit"), per_prompt(ref, "judge_hit"))
        a_nll, a_n = per_prompt(samples, "base_nll"), per_prompt(samples, "base_tokens")
        b_nll, b_n = per_prompt(ref, "base_nll"), per_prompt(ref, "base_tokens")

        r, r_lo, r_hi = paired_ppl_ratio_ci(a_nll, a_n, b_nll, b_n)
        out.append({"corpus": corpus, "method": method, "knob": knob, "hit_minus_prompt": round(d, 4),
                    "lo": round(lo, 4), "hi": round(hi, 4), "base_ppl_x_prompt": round(r, 3),
                    "ppl_lo": round(r_lo, 3), "ppl_hi": round(r_hi, 3)})
    with open(HERE / "compare.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)
    for row in out:
        print(row)
    return out


if __name__ == "__main__":
    main()
