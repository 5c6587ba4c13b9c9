"""perplexity.json from the runs beside it (a re-arrangement; nothing is recomputed).

perplexity_part1.json: Don Quixote, 64 passages, 1 step (and 2 steps on the first 16);
perplexity_part2.json: the other six sets, 32 passages each, 1 step (one thread each, beside the
steering run); cost.json: the wall time per scored token measured alone (2 threads), plain and 1-2
steps, which ``ms_per_token`` reports (the runs' own timings shared the CPU and are kept as
``ms_per_token_in_run``).

    python docs/results/hso/merge.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    cost = json.loads((HERE / "cost.json").read_text())["sets"]["don_quixote"]
    sets = {}
    for part in ("perplexity_part1.json", "perplexity_part2.json"):
        sets.update(json.loads((HERE / part).read_text())["sets"])
    out = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised to float32)", "passage_tokens": 512,
           "segment": 64, "lr": 0.03, "optimiser": "adam", "scored": "every token after the first segment",
           "interval": "95 % percentile bootstrap over passages, paired",
           "ms_per_token_plain": round(cost["steps0"]["ms_per_token"], 3), "sets": {}}
    for name, rows in sets.items():
        main_row = rows["steps1"]
        entry = {k: main_row[k] for k in ("ppl_plain", "ppl_hso", "ratio", "ratio_lo", "ratio_hi", "steps",
                                          "passages", "passages_available", "scored_tokens")}
        entry["ms_per_token"] = round(cost["steps1"]["ms_per_token"], 3)
        entry["ms_per_token_in_run"] = round(main_row["ms_per_token"], 3)
        entry["by_steps"] = {k: {**v, "ms_per_token": round(cost[k]["ms_per_token"], 3)} for k, v in rows.items()}
        sets[name] = entry
        out["sets"][name] = entry
    (HERE / "perplexity.json").write_text(json.dumps(out, indent=1) + "\n")
    for name, e in out["sets"].items():
        print(f"{name:18s} {e['ppl_plain']:8.2f} -> {e['ppl_hso']:8.2f}  ratio {e['ratio']:.4f} "
              f"[{e['ratio_lo']:.4f}, {e['ratio_hi']:.4f}]  n={e['passages']}")


if __name__ == "__main__":
    main()
