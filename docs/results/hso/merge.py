"""perplexity.json from the runs beside it (a re-arrangement; nothing is recomputed).

perplexity_all.json: the seven sets, every 512-token passage of each judge split up to 200 (spread
evenly over the split), 1 step, two threads, run alone; perplexity_part1.json: the earlier Don
Quixote run, whose 2-step figure (on its first 16 passages) is kept under ``by_steps``;
perplexity_part2.json: the earlier 32-passage run of the other six sets (kept for reference, not
merged); cost.json: the wall time per scored token measured alone on steer-split passages (plain,
1 and 2 steps), which ``ms_per_token`` reports (each run's own timing is ``ms_per_token_in_run``).

    python docs/results/hso/merge.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    cost = json.loads((HERE / "cost.json").read_text())["sets"]["don_quixote"]
    runs = json.loads((HERE / "perplexity_all.json").read_text())["sets"]
    earlier = json.loads((HERE / "perplexity_part1.json").read_text())["sets"]["don_quixote"]
    out = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to float32)", "passage_tokens": 512,
           "segment": 64, "lr": 0.03, "optimiser": "adam", "scored": "every token after the first segment",
           "passages": "every passage of the judge split, at most 200, spread evenly",
           "interval": "95 % percentile bootstrap over passages, paired",
           "ms_per_token_plain": round(cost["steps0"]["ms_per_token"], 3), "sets": {}}
    for name, rows in runs.items():
        main_row = rows["steps1"]
        entry = {k: main_row[k] for k in ("ppl_plain", "ppl_hso", "ratio", "ratio_lo", "ratio_hi", "steps",
                                          "passages", "passages_available", "scored_tokens")}
        entry["ms_per_token"] = round(cost["steps1"]["ms_per_token"], 3)
        entry["ms_per_token_in_run"] = round(main_row["ms_per_token"], 3)
        by_steps = dict(rows)
        if name == "don_quixote":
            by_steps["steps2"] = {**earlier["steps2"], "note": "the earlier run's first 16 passages"}
        entry["by_steps"] = {k: {**v, "ms_per_token": round(cost[k]["ms_per_token"], 3)} for k, v in by_steps.items()}
        out["sets"][name] = entry
    (HERE / "perplexity.json").write_text(json.dumps(out, indent=1) + "\n")
    for name, e in out["sets"].items():
        print(f"{name:18s} {e['ppl_plain']:8.2f} -> {e['ppl_hso']:8.2f}  ratio {e['ratio']:.4f} "
              f"[{e['ratio_lo']:.4f}, {e['ratio_hi']:.4f}]  n={e['passages']}")


if __name__ == "__main__":
    main()
