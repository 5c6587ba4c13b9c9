"""How often ``GuidedStylePrior(temper=True)`` finds its temperature inside the bracket.

Samples continuations of the first prompts of ``steer/data/prompts.txt`` with the
shared 11M model and the contrastive bonus (support alpha = 0.02, with and
without the mask), records every row's tau at every step, and prints its
quantiles and the share of steps at each end of [1/TEMPER_MAX, TEMPER_MAX]
(at the top end the distribution stays more certain than the model's, and tau is
the cap, not an entropy match). Last line: one JSON object.

    python benchmarks/temper_diagnostic.py [--prompts 16] [--max-new-tokens 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import steer.priors as priors  # noqa: E402
from ngram import NGramTable  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402
from steer.models import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "data" / "models" / "base-llama2tok"))
    ap.add_argument("--corpora", default="don_quixote,cnn_highlights,arxiv_abstracts")
    ap.add_argument("--lams", default="1,4")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    args = ap.parse_args()
    os.environ.setdefault("STEER_CORPORA_DIR", str(ROOT.parent / "shared" / "data" / "corpora"))
    torch.set_num_threads(1)
    model, tok = load_model(args.model)
    background = NGramTable.from_texts(load_corpus("background").steer, tok, 3)
    prompts = [p.strip() for p in (ROOT / "steer" / "data" / "prompts.txt").read_text().splitlines() if p.strip()]
    enc = tok(prompts[: args.prompts], return_tensors="pt", padding=True)
    seen = []
    found = priors.temperature_for_entropy
    priors.temperature_for_entropy = lambda o, target: seen.append(found(o, target)) or seen[-1]
    lo, hi = 1 / priors.TEMPER_MAX, priors.TEMPER_MAX
    figures = {}
    for corpus in args.corpora.split(","):
        style = NGramTable.from_texts(load_corpus(corpus).steer, tok, 3)
        for mask in (True, False):
            for lam in [float(x) for x in args.lams.split(",")]:
                seen.clear()
                proc = priors.GuidedStylePrior(style, lam, background=background, plausibility=0.02, mask=mask,
                                               temper=True)
                torch.manual_seed(0)
                model.generate(**enc, do_sample=True, top_p=0.95, max_new_tokens=args.max_new_tokens,
                               logits_processor=[proc], pad_token_id=tok.pad_token_id)
                tau = torch.cat([t.view(-1) for t in seen])
                row = {"median": round(float(tau.median()), 3), "q10": round(float(tau.quantile(0.1)), 3),
                       "q90": round(float(tau.quantile(0.9)), 3),
                       "at_low": round(float((tau < lo * 1.01).float().mean()), 3),
                       "at_cap": round(float((tau > hi * 0.99).float().mean()), 3), "steps": tau.numel()}
                key = f"{corpus}_{'mask' if mask else 'nomask'}_lam{lam:g}"
                figures[key] = row
                print(f"{key:40s} tau median {row['median']:.3f} (10-90 %: {row['q10']:.3f}-{row['q90']:.3f}), "
                      f"at 1/{hi:g}: {row['at_low']:.1%}, at the cap {hi:g}: {row['at_cap']:.1%} "
                      f"of {row['steps']} steps")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
