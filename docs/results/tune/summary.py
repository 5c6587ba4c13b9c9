"""The table of docs/tune.md: one row per `steer tune` run folder under docs/results/tune/<model>/<corpus>/.

    python docs/results/tune/summary.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def row(folder: Path) -> str:
    v = json.loads((folder / "validation.json").read_text(encoding="utf-8"))
    spec = json.loads((folder / "spec.json").read_text(encoding="utf-8"))
    vp = v["vs_prompt"]
    cross = f"{v['cross_ppl_ratio']:.2f}x" if v.get("cross_ppl_ratio") else "-"
    regret = "-" if "grid" not in v else ("no holding cell" if v["regret"] is None else f"{v['regret']:+.2f}")
    holds = "**yes**" if v["holds"] else f"no ({v['binding']})"
    return (f"| {folder.parent.name} | {folder.name} | `{spec['method']}` {spec['knob']:g} | {holds} | "
            f"{v['hit']:.2f} ({v['hit_unsteered']:.2f}) | {v['base_ppl_ratio']:.2f}x | {cross} | "
            f"{v['distinct_2_ratio']:.2f}x | {v['degenerate_rate']:.2f} ({v['degenerate_rate_unsteered']:.2f}) | "
            f"{vp['diff']:+.2f} [{vp['interval'][0]:+.2f}, {vp['interval'][1]:+.2f}], prompting {vp['prompt_hit']:.2f} "
            f"at {vp['prompt_base_ppl_ratio']:.2f}x | {regret} | {v['minutes']:.1f} |")


def main() -> None:
    print("| model | corpus | chosen | holds (binding) | hit (unsteered) | base ppl | cross ppl | distinct-2 | "
          "degenerate (unsteered) | hit vs prompting [95 %] | regret | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in sorted(p.parent for p in HERE.glob("*/*/validation.json")):
        print(row(folder))


if __name__ == "__main__":
    main()
