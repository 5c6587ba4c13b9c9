"""Choose activation steering's layer (and position) on the development prompts.

For every dev run folder here (one layer, or one position, each: scales 0.125, 0.25, 0.5 on Don Quixote,
CNN and arXiv, 24 dev prompts x 1 sample), the judge hit rate is interpolated (piecewise linear in log base
perplexity, from the unsteered cell through the scales) at base perplexity 1.25x and 1.5x the unsteered
cell's, then averaged over the three corpora. The layer with the highest hit at 1.25x is chosen.

    python docs/results/activation/dev/select.py
"""

import csv
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def hit_at(points, ppl):
    """Hit rate at base perplexity ``ppl`` on the curve through ``points`` [(ppl, hit)] (sorted by scale)."""
    best = points[0][1]
    for (p0, h0), (p1, h1) in zip(points, points[1:], strict=False):
        if p0 <= ppl <= p1 and p1 > p0:
            t = (math.log(ppl) - math.log(p0)) / (math.log(p1) - math.log(p0))
            best = max(best, h0 + t * (h1 - h0))
        elif p1 <= ppl:
            best = max(best, h1)
    return best


def main():
    unsteered = {}
    runs = {}
    for folder in sorted(HERE.iterdir()):
        path = folder / "results.csv"
        if not path.exists():
            continue
        for row in csv.DictReader(path.open()):
            ppl, hit = float(row["base_ppl"]), float(row["judge_hit"])
            if row["method"] == "prior":
                unsteered[row["corpus"]] = (ppl, hit)
            else:
                runs.setdefault(folder.name, {}).setdefault(row["corpus"], []).append((float(row["knob"]), ppl, hit))
    print(f"{'run':14s} {'hit@1.25x':>9s} {'hit@1.5x':>9s}   per corpus @1.25x")
    scores = {}
    for name, corpora in runs.items():
        at = {r: [] for r in (1.25, 1.5)}
        for corpus, cells in corpora.items():
            points = [unsteered[corpus]] + [(p, h) for _, p, h in sorted(cells)]
            for r in at:
                at[r].append((corpus, hit_at(points, r * unsteered[corpus][0])))
        scores[name] = sum(h for _, h in at[1.25]) / len(at[1.25])
        per = ", ".join(f"{c[:6]} {h:.2f}" for c, h in at[1.25])
        print(f"{name:14s} {scores[name]:9.3f} {sum(h for _, h in at[1.5]) / len(at[1.5]):9.3f}   {per}")
    print("unsteered: " + ", ".join(f"{c[:6]} ppl {p:.1f} hit {h:.2f}" for c, (p, h) in unsteered.items()))
    layers = {name: v for name, v in scores.items() if name.startswith("layer")}
    print(f"chosen: {max(layers, key=layers.get)}")
    combined = {name: corpora for name, corpora in runs.items() if name.startswith("combined")}
    if combined:
        print("activation+contrastive+plausible at lam 2 (scale held fixed): mean hit, mean base ppl / unsteered")
    for name, corpora in sorted(combined.items()):
        cells = [(c, cells[0]) for c, cells in corpora.items()]
        hit = sum(h for _, (_, _, h) in cells) / len(cells)
        ratio = sum(p / unsteered[c][0] for c, (_, p, _) in cells) / len(cells)
        print(f"{name:28s} hit {hit:.3f}  ppl ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
