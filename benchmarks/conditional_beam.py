"""Conditional beam search vs plain beam search on a real shared model.

Trains the prefix attribute model on the model's own continuations of training
prompts, then decodes >= 100 held-out prompts with plain beam search, the exact
hard constraints, the learned conditional search, and both, at beam sizes 1, 5,
10, 20. Reports the rate of each degeneracy, mean log-likelihood under the model,
mean length and time per output; writes a table and a plot. Also times one call
of the hard constraints on random continuations of growing length (20 rows, the
model's vocabulary) against a copy of the scores, the floor any processor that
returns new scores pays. Every output's text goes to ``samples.jsonl.gz``. Last line: one JSON object.

    python benchmarks/conditional_beam.py [--model ../shared/data/models/base-llama2tok]
        [--train-prompts 300] [--test-prompts 100] [--out docs/results/conditional_beam]
    python benchmarks/conditional_beam.py --ban-only [--ban-lengths 40,160,640,2560]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import LogitsProcessorList

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer.conditional.beam import ConditionalBeam, HiddenStateTap  # noqa: E402
from steer.conditional.constraints import hard_constraints  # noqa: E402
from steer.conditional.train import AttrTrainConfig, train_attribute_model  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402
from steer.degeneracy import Degeneracy, pad  # noqa: E402
from steer.metrics import base_nll  # noqa: E402
from steer.models import encode_prompts, load_model, stop_ids  # noqa: E402

PROMPT_CORPORA = ["sherlock_holmes", "don_quixote", "cnn_highlights", "kjv_new_testament"]
METHODS = ["plain", "hard", "learned", "both"]


def make_prompts(n_train: int, n_test: int, words: int = 8):
    """Openings (first ``words`` words) of documents of several corpora; train and test from disjoint docs."""
    pools = []
    for name in PROMPT_CORPORA:
        docs = [d for d in load_corpus(name, judge_fraction=0).steer if len(d.split()) >= words + 4]
        pools.append([" ".join(d.split()[:words]) for d in docs])
    mixed = [p for group in zip(*pools, strict=False) for p in group]  # interleave corpora
    if len(mixed) < n_train + n_test:
        raise ValueError("not enough documents for the requested prompts")
    return mixed[:n_train], mixed[n_train : n_train + n_test]


def decode(model, tok, prompts, beams, method, head, deg, max_new, weight, batch):
    """Continuations (without the stop token) of all prompts, and the seconds it took.

    A continuation ends at the declared EOS or the document separator (:func:`steer.models.stop_ids`);
    the hard constraints' minimum length holds for both.
    """
    conts, p_ids = [], []
    stops = stop_ids(tok)
    t0 = time.perf_counter()
    for b0 in range(0, len(prompts), batch):
        enc = encode_prompts(tok, prompts[b0 : b0 + batch])
        width = enc["input_ids"].shape[1]
        with HiddenStateTap(model) as tap:
            procs = []
            if method in ("hard", "both"):
                procs += hard_constraints(deg, width, stops or None)
            if method in ("learned", "both"):
                procs.append(ConditionalBeam(head, tap, model, weight=weight, top_m=2 * beams))
            out = model.generate(**enc, max_new_tokens=max_new, num_beams=beams, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=stops or None,
                                 logits_processor=LogitsProcessorList(procs))
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            c = row[width:].tolist()
            ends = [c.index(i) for i in stops if i in c]
            conts.append(c[: min(ends)] if ends else c)
            p_ids.append(row[:width][mask.bool()].tolist())
    return p_ids, conts, time.perf_counter() - t0


def ban_cost(lengths, deg: Degeneracy, rows: int = 20, vocab: int = 32000, repeats: int = 50) -> dict:
    """ms per call of the hard constraints at each continuation length, and per copy of the scores.

    Random ids over a 50-token alphabet, so that contexts recur and the ban
    has work to do at every length.
    """
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(rows, vocab, generator=g)

    def per_call(fn) -> float:
        fn()  # first call pays one-time costs
        best = float("inf")
        for _ in range(3):  # best of three rounds: the least disturbed by other work
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            best = min(best, (time.perf_counter() - t0) / repeats)
        return 1e3 * best

    out = {"rows": rows, "vocab": vocab, "copy_ms": round(per_call(scores.clone), 4)}
    for length in lengths:
        ids = torch.randint(0, 50, (rows, 8 + length), generator=g)
        (proc,) = hard_constraints(deg, 8, eos_token_id=None)
        ms = per_call(lambda proc=proc, ids=ids: proc(ids, scores))
        out[f"len{length}"] = {"ms": round(ms, 4), "vs_copy": round(ms / out["copy_ms"], 2)}
        print(f"hard constraints, {rows} rows, continuation {length:5d}: {ms:.3f} ms per call "
              f"({ms / out['copy_ms']:.2f}x a copy of the scores, {out['copy_ms']:.3f} ms)")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "data" / "models" / "base-llama2tok"))
    ap.add_argument("--train-prompts", type=int, default=300)
    ap.add_argument("--test-prompts", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--beams", default="1,5,10,20")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "conditional_beam"))
    ap.add_argument("--ban-lengths", default="40,160,640,2560")
    ap.add_argument("--ban-only", action="store_true", help="only time the hard constraints' ban")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ban's cost alone, free of thread scheduling
    ban = ban_cost([int(x) for x in args.ban_lengths.split(",")], Degeneracy(**AttrTrainConfig().degeneracy))
    torch.set_num_threads(threads)
    if args.ban_only:
        print(json.dumps({"ban": ban}))
        return
    os.environ.setdefault("STEER_CORPORA_DIR", str(ROOT.parent / "shared" / "data" / "corpora"))
    torch.manual_seed(0)
    model, tok = load_model(args.model)
    train_p, test_p = make_prompts(args.train_prompts, args.test_prompts)
    cfg = AttrTrainConfig(max_new_tokens=args.max_new_tokens, samples=2, beams=[1, 5])
    deg = Degeneracy(**cfg.degeneracy)
    t0 = time.perf_counter()
    head, report = train_attribute_model(model, tok, train_p, cfg)
    train_s = time.perf_counter() - t0
    print(f"attribute model: {report['n_examples']:,} prefix examples from {len(train_p)} prompts in "
          f"{train_s:.0f} s; degenerate rate of training decodings {report['degenerate_rate_by_decoding']}")
    print(f"held-out ({report['heldout_examples']:,} examples of {round(cfg.heldout * len(train_p))} prompts): "
          f"accuracy {report['heldout_accuracy']:.3f} (majority class {report['heldout_majority_accuracy']:.3f}), "
          f"AUC {report['heldout_auc']:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, samples = [], []
    for beams in [int(b) for b in args.beams.split(",")]:
        batch = max(4, 200 // beams)
        # Warm-up: the first generate at a batch shape pays one-time costs that would land on "plain".
        decode(model, tok, test_p[:batch], beams, "both", head, deg, 4, args.weight, batch)
        for method in METHODS:
            p_ids, conts, secs = decode(model, tok, test_p, beams, method, head, deg, args.max_new_tokens,
                                        args.weight, batch)
            attrs = deg.all(*pad(p_ids), *pad(conts))
            nll = base_nll(model, p_ids, conts)
            row = {"beams": beams, "method": method,
                   **{f"{k}_rate": float(v.float().mean()) for k, v in attrs.items()},
                   "mean_loglik": -sum(n for n, _ in nll) / len(nll),
                   "mean_loglik_per_token": -sum(n for n, _ in nll) / max(1, sum(k for _, k in nll)),
                   "mean_len": sum(len(c) for c in conts) / len(conts),
                   "ms_per_output": 1e3 * secs / len(conts)}
            rows.append(row)
            samples += [{"beams": beams, "method": method, "prompt": prompt, "text": tok.decode(c),
                         "tokens": len(c), "loglik": -n, **{k: bool(v[i]) for k, v in attrs.items()}}
                        for i, (prompt, c, (n, _)) in enumerate(zip(test_p, conts, nll, strict=True))]
            print(f"beam {beams:2d} {method:8s}: degenerate {row['degenerate_rate']:.2f} (empty "
                  f"{row['empty_rate']:.2f}, repetitive {row['repetitive_rate']:.2f}, copy "
                  f"{row['prompt_copy_rate']:.2f}, short {row['too_short_rate']:.2f}), loglik "
                  f"{row['mean_loglik']:7.2f} ({row['mean_loglik_per_token']:.3f}/tok), len {row['mean_len']:5.1f}, "
                  f"{row['ms_per_output']:7.1f} ms/output")
        plain = next(r for r in rows if r["beams"] == beams and r["method"] == "plain")
        for r in rows:
            if r["beams"] == beams:
                r["time_vs_plain"] = r["ms_per_output"] / plain["ms_per_output"]
    write(out, rows, report, train_s)
    write_samples(out / "samples.jsonl.gz", samples)
    print(json.dumps({"model": Path(args.model).name, "train_seconds": round(train_s, 1),
                      "heldout_accuracy": report["heldout_accuracy"], "heldout_auc": report["heldout_auc"],
                      "rows": rows, "ban": ban}))


def write_samples(path: Path, samples: list[dict]) -> None:
    """Every output's text and attributes, one JSON line each; gzip without a timestamp, so reruns match."""
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in samples).encode()
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(body)


def write(out: Path, rows, report, train_s):
    cols = ["beams", "method", "degenerate_rate", "empty_rate", "repetitive_rate", "prompt_copy_rate",
            "too_short_rate", "mean_loglik", "mean_loglik_per_token", "mean_len", "ms_per_output", "time_vs_plain"]
    lines = [",".join(cols)] + [",".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                                for r in rows]
    (out / "results.csv").write_text("\n".join(lines) + "\n")
    (out / "attribute_model.json").write_text(json.dumps({**report, "train_seconds": train_s}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        x = [r["beams"] for r in mine]
        for ax, key in zip(axes, ["degenerate_rate", "mean_loglik", "time_vs_plain"], strict=True):
            ax.plot(x, [r[key] for r in mine], marker="o", label=method)
    for ax, title in zip(axes, ["degenerate rate", "mean log-likelihood of the output (nats)",
                                "time per output / plain beam search"], strict=True):
        ax.set_xscale("log")
        ax.set_xticks([1, 5, 10, 20], ["1", "5", "10", "20"])
        ax.set_xlabel("beam size")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "conditional_beam.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
