"""Span decoding vs full rewriting with the same small model, each fine-tuned briefly on its target format.

Training data: synthetic corruptions (word deletions, duplications, swaps, substitutions) of
sentences from a shared corpus; the corrupted sentence is the source, the original the target.
The shared base model is fully fine-tuned twice (same steps and data): once on span targets, once
on full rewrites. Both are evaluated on held-out synthetic pairs (exact match, GLEU) and on JFLEG
test sources (GLEU), reporting generated tokens per example and wall time.

    python benchmarks/edit_finetune.py [--steps 300] [--eval 100]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer.corpora import load_corpus  # noqa: E402
from steer.edits.data import load_edit_set  # noqa: E402
from steer.edits.generate import edit_generate  # noqa: E402
from steer.edits.make_data import make_examples  # noqa: E402
from steer.edits.metrics import gleu  # noqa: E402
from steer.models import load_model  # noqa: E402


def sentences(n: int, seed: int = 0) -> list[str]:
    docs = load_corpus("sherlock_holmes", judge_fraction=0).train + load_corpus("don_quixote", judge_fraction=0).train
    out = []
    for d in docs:
        for s in re.split(r"(?<=[.!?])\s+", d):
            if 8 <= len(s.split()) <= 22:
                out.append(s)
    random.Random(seed).shuffle(out)
    return out[:n]


def corrupt(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    vocab = ["the", "a", "of", "to", "is", "was", "in", "and", "he", "it"]
    for _ in range(rng.choice([1, 1, 2])):
        i = rng.randrange(len(words))
        op = rng.choice(["delete", "dup", "swap", "sub"])
        if op == "delete" and len(words) > 4:
            del words[i]
        elif op == "dup":
            words.insert(i, words[i])
        elif op == "swap" and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words[i] = rng.choice(vocab)
    return " ".join(words)


def finetune(model, tok, examples, field_prompt, field_target, steps, lr, batch, seed):
    model = copy.deepcopy(model).train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    encoded = []
    for ex in examples:
        p = [bos] + tok(ex[field_prompt], add_special_tokens=False)["input_ids"]
        t = tok(ex[field_target], add_special_tokens=False)["input_ids"] + [eos]
        encoded.append((p, t))
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        chunk = [encoded[rng.randrange(len(encoded))] for _ in range(batch)]
        width = max(len(p) + len(t) for p, t in chunk)
        ids = torch.full((batch, width), eos)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, (p, t) in enumerate(chunk):
            seq = p + t
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(t)  # loss on the target only
            mask[i, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval().requires_grad_(False), losses, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT.parent / "shared" / "data" / "models" / "base-llama2tok"))
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "edit_spans"))
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    base, tok = load_model(args.model)
    sents = sentences(args.train + args.eval)
    pairs = [(corrupt(s, rng), s) for s in sents]
    train, held = pairs[: args.train], pairs[args.train :]
    examples, report = make_examples(train, "gec", tok)
    print(f"training pairs: {len(train)}; span targets are {100 * report.word_ratio:.1f} % of the rewrites in "
          f"words, {100 * report.token_ratio:.1f} % in tokens")
    jfleg = load_edit_set("jfleg", "test")
    j_src, j_refs = jfleg.sources[: args.eval], jfleg.references[: args.eval]
    results = {}
    for mode, (fp, ft) in {"spans": ("prompt", "completion"), "rewrite": ("rewrite_prompt", "rewrite")}.items():
        model, losses, secs = finetune(base, tok, examples, fp, ft, args.steps, args.lr, args.batch, seed=0)
        row = {"train_seconds": round(secs, 1), "loss_first": round(losses[0], 3),
               "loss_last10": round(sum(losses[-10:]) / 10, 3)}
        for name, srcs, refs in [("synthetic", [s for s, _ in held], [[t] for _, t in held]),
                                 ("jfleg", j_src, j_refs)]:
            out, gen_s = edit_generate(model, tok, srcs, task="gec", mode=mode, max_new_tokens=64, batch_size=20)
            hyps = [r.target for r in out]
            row[name] = {
                "gleu": round(100 * gleu(srcs, hyps, refs), 2),
                "exact": round(sum(h == " ".join(r[0].split())
                                   for h, r in zip(hyps, refs, strict=True)) / len(hyps), 3),
                "tokens_per_example": round(sum(r.n_tokens for r in out) / len(out), 2),
                "seconds": round(gen_s, 2), "valid": round(sum(r.valid for r in out) / len(out), 3),
            }
            print(f"{mode:7s} {name:9s}: GLEU {row[name]['gleu']:6.2f}, exact {row[name]['exact']:.3f}, "
                  f"{row[name]['tokens_per_example']:5.1f} generated tokens/example, {gen_s:6.1f} s, "
                  f"valid {row[name]['valid']:.2f}")
        results[mode] = row
        print(f"{mode:7s} fine-tune: {secs:.0f} s, loss {row['loss_first']} -> {row['loss_last10']}")
    copy_gleu = {"synthetic": round(100 * gleu([s for s, _ in held], [s for s, _ in held], [[t] for _, t in held]), 2),
                 "jfleg": round(100 * gleu(j_src, j_src, j_refs), 2)}
    print(f"copy-source GLEU: synthetic {copy_gleu['synthetic']}, jfleg {copy_gleu['jfleg']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"results": results, "copy_gleu": copy_gleu, "train_pairs": len(train),
               "span_word_ratio": report.word_ratio, "span_token_ratio": report.token_ratio,
               "steps": args.steps, "batch": args.batch, "lr": args.lr}
    (out / "finetune.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
