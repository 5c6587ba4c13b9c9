"""Held-out perplexity with and without hidden-state optimisation (steer.hso) on the shared SmolLM2.

Passages: each set's judge split (the six style corpora and the background books) joined with the
model's document separator, tokenised, and cut into non-overlapping passages of ``--length`` tokens;
up to ``--passages`` of them, spread evenly over the split (``--split steer`` takes them from the
steer split instead, for choosing the learning rate without touching the reported passages).
Scored: every token after the first segment. Plain: the same segment-by-segment cached reading with
0 steps. Per set and step count: pooled perplexity both ways, their ratio with a 95 % bootstrap interval
over passages (paired), passes through the model and wall time per scored token. ``--steps`` lists the
step counts; ``--sub-steps`` runs further step counts on the first ``--sub-passages`` passages only.

    python benchmarks/hso_perplexity.py [--sets don_quixote,...] [--passages 64] [--length 512]
        [--segment 64] [--steps 1] [--lr 0.01] [--sub-steps 2] [--sub-passages 16] [--out FILE]

Last line: one JSON object (per set and step count: ppl_plain, ppl_hso, ratio, ratio_lo, ratio_hi,
steps, ms_per_token, ms_per_token_plain).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer import hso  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402
from steer.judges.stats import paired_ppl_ratio_ci  # noqa: E402
from steer.models import document_separator_id, load_model  # noqa: E402

SETS = ["don_quixote", "cnn_highlights", "arxiv_abstracts", "sherlock_holmes", "kjv_new_testament",
        "tinyshakespeare", "background"]


def passages(tokenizer, docs: list[str], length: int, n: int) -> tuple[torch.Tensor, int]:
    """Up to ``n`` non-overlapping ``length``-token passages of the joined documents, spread evenly."""
    sep = document_separator_id(tokenizer)
    ids: list[int] = []
    for d in docs:
        ids += tokenizer(d, add_special_tokens=False)["input_ids"]
        if sep is not None:
            ids.append(sep)
    total = len(ids) // length
    if total == 0:
        raise ValueError(f"the split has {len(ids)} tokens, fewer than one passage of {length}")
    pick = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    return torch.tensor([ids[i * length: (i + 1) * length] for i in pick]), total


def score(model, batch: torch.Tensor, config: hso.HSOConfig, bs: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per passage: summed NLL and count of the tokens after the first segment; passes and seconds."""
    nll, cnt, cost = [], [], {"forwards": 0, "backwards": 0, "seconds": 0.0}
    for i in range(0, len(batch), bs):
        state = hso.read(model, batch[i: i + bs], config=config)
        lp = state.logprobs[:, config.segment:]
        ok = ~torch.isnan(lp)
        nll.append((-(lp.nan_to_num(0.0)) * ok).sum(1).double().numpy())
        cnt.append(ok.sum(1).numpy())
        cost["forwards"] += state.forwards
        cost["backwards"] += state.backwards
        cost["seconds"] += state.seconds
    return np.concatenate(nll), np.concatenate(cnt), cost


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT.parent / "shared/data/models/smollm2-135m-instruct"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--split", choices=("judge", "steer"), default="judge")
    ap.add_argument("--passages", type=int, default=64)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--segment", type=int, default=64)
    ap.add_argument("--steps", default="1")
    ap.add_argument("--lr", default="0.01", help="one value, or several (comma-separated) to compare")
    ap.add_argument("--sub-steps", default="")
    ap.add_argument("--sub-passages", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model, tok = load_model(args.model)
    lrs = [float(v) for v in args.lr.split(",")]
    runs = [(int(s), None) for s in args.steps.split(",") if s] + \
           [(int(s), args.sub_passages) for s in args.sub_steps.split(",") if s]
    out = {"model": Path(args.model).name, "split": args.split, "length": args.length, "segment": args.segment,
           "optimiser": "adam", "threads": torch.get_num_threads(), "sets": {}}
    for name in args.sets.split(","):
        corpus = load_corpus(name)
        docs = corpus.judge if args.split == "judge" else corpus.steer
        batch, total = passages(tok, docs, args.length, args.passages)
        plain = score(model, batch, hso.HSOConfig(segment=args.segment, steps=0), args.batch)
        rows = {}
        for steps, cap in runs:
            for lr in lrs:
                sub = slice(0, cap)
                cfg = hso.HSOConfig(segment=args.segment, steps=steps, lr=lr)
                nll_h, n_h, cost = score(model, batch[sub], cfg, args.batch)
                nll_p, n_p = plain[0][sub], plain[1][sub]
                assert (n_h == n_p).all()
                r, lo, hi = paired_ppl_ratio_ci(nll_h, n_p, nll_p, n_p)  # ppl_hso / ppl_plain
                toks = float(n_p.sum())
                plain_s = plain[2]["seconds"] * len(nll_p) / len(plain[0])
                row = {"ppl_plain": float(np.exp(nll_p.sum() / toks)), "ppl_hso": float(np.exp(nll_h.sum() / toks)),
                       "ratio": r, "ratio_lo": lo, "ratio_hi": hi, "steps": steps, "lr": lr,
                       "passages": len(nll_p), "passages_available": total, "scored_tokens": int(toks),
                       "forwards": cost["forwards"], "backwards": cost["backwards"],
                       "ms_per_token": 1000 * cost["seconds"] / toks, "ms_per_token_plain": 1000 * plain_s / toks}
                key = f"steps{steps}" + (f"_lr{lr:g}" if len(lrs) > 1 else "")
                rows[key] = row
                print(f"{name:18s} {key:14s} n={len(nll_p):3d} ppl {row['ppl_plain']:8.3f} -> {row['ppl_hso']:8.3f}"
                      f"  ratio {r:.4f} [{lo:.4f}, {hi:.4f}]  {row['ms_per_token']:.2f} ms/tok "
                      f"(plain {row['ms_per_token_plain']:.2f})", flush=True)
        out["sets"][name] = rows
        if args.out:  # written after every set, so an interrupted run keeps what it measured
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{args.out}.tmp{os.getpid()}"
            Path(tmp).write_text(json.dumps(out, indent=1) + "\n")
            os.replace(tmp, args.out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
