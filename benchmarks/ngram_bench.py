"""Benchmark of the n-gram engine: build speed and size, batched lookup against nltk.lm and a dict.

Corpus: the shared style corpora tokenised with the Llama-2 tokenizer, repeated to
about 10M tokens. Baselines are measured in the same run; ratios are printed. The
last line is one JSON object with every figure.

    python benchmarks/ngram_bench.py [--tokens 10000000] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngram import NGramTable  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402

CORPORA = ["don_quixote", "cnn_highlights", "arxiv_abstracts", "sherlock_holmes",
           "tinyshakespeare", "kjv_new_testament"]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _build_child(docs_path, order, out_path, queue):
    data = np.load(docs_path, allow_pickle=False)
    tokens, lengths = data["tokens"], data["lengths"]
    docs = np.split(tokens, np.cumsum(lengths)[:-1])
    base = rss_mib()
    t0 = time.perf_counter()
    table = NGramTable.from_token_ids(docs, 32000, order)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table.save(out_path)
    queue.put(dict(seconds=elapsed, peak_mib=peak, base_mib=base, stats=table.stats))


def build_in_child(docs_path, order, out_path):
    """Build in a fresh process so its peak RSS is the build's own."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_build_child, args=(docs_path, order, out_path, q))
    p.start()
    res = q.get()
    p.join()
    return res


def time_call(fn, min_time=1.0, min_reps=3):
    fn()
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < min_time:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps


class DictNGram:
    """The plain-Python baseline: dicts of contexts -> {next: count}, rows built by a loop over V."""

    def __init__(self, docs, order, vocab):
        self.n, self.v = order, vocab
        self.c = [dict() for _ in range(order + 1)]
        for d in docs:
            d = d.tolist()
            for k in range(1, order + 1):
                table = self.c[k]
                for i in range(len(d) - k + 1):
                    h, w = tuple(d[i : i + k - 1]), d[i + k - 1]
                    row = table.setdefault(h, {})
                    row[w] = row.get(w, 0) + 1
        self.tot = [{h: sum(r.values()) for h, r in t.items()} for t in self.c]

    def mixture_row(self, ctx, alpha=0.01):
        v = self.v
        parts = []
        for k in range(1, self.n + 1):
            h = tuple(ctx[len(ctx) - (k - 1):]) if k > 1 else ()
            if h in self.c[k]:
                parts.append((self.c[k][h], self.tot[k][h]))
        out = []
        for w in range(v):
            s = 0.0
            for row, tot in parts:
                s += (row.get(w, 0) + alpha) / (tot + alpha * v)
            out.append(np.log(s / len(parts)))
        return out


def nltk_rows(train_docs, order, queries, vocab_ids, kn: bool):
    """Seconds per full [V] row with nltk.lm, from scoring a sample of words and scaling to V."""
    from nltk.lm import KneserNeyInterpolated, Lidstone
    from nltk.lm.preprocessing import padded_everygram_pipeline

    sents = [[str(t) for t in d.tolist()] for d in train_docs]
    if kn:
        models = [KneserNeyInterpolated(order, discount=0.75)]
    else:
        models = [Lidstone(0.01, k) for k in range(1, order + 1)]
    for m in models:
        train, vocab = padded_everygram_pipeline(m.order, sents)
        m.fit(train, vocab)
    words = [str(w) for w in vocab_ids]
    t0 = time.perf_counter()
    for ctx in queries:
        c = [str(t) for t in ctx[-(order - 1):]]
        for w in words:
            for m in models:
                m.score(w, c[len(c) - (m.order - 1):] if m.order > 1 else None)
    per_word = (time.perf_counter() - t0) / (len(queries) * len(words))
    return per_word * 32000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--nltk-tokens", type=int, default=30_000)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(args.shared) / "tokenizers" / "llama2" / "hf")
    os.environ.setdefault("STEER_CORPORA_DIR", str(Path(args.shared) / "corpora"))
    docs = []
    for name in CORPORA:
        corpus = load_corpus(name, judge_fraction=0)
        docs.extend(np.asarray(d, dtype=np.int64)
                    for d in tok(corpus.steer, add_special_tokens=False, verbose=False)["input_ids"])
    base_tokens = sum(d.size for d in docs)
    reps = max(1, round(args.tokens / base_tokens))
    all_docs = docs * reps
    n_tokens = base_tokens * reps
    print(f"corpus: {len(CORPORA)} shared corpora, {base_tokens:,} Llama-2 tokens x {reps} "
          f"= {n_tokens:,} tokens, {len(all_docs):,} documents")
    figures = {"n_tokens": n_tokens, "cpu_threads": torch.get_num_threads()}

    tmp = Path(tempfile.mkdtemp())
    docs_path = tmp / "docs.npz"
    np.savez(docs_path, tokens=np.concatenate(all_docs), lengths=np.array([d.size for d in all_docs]))
    tables = {}
    for order in (3, 5):
        out = tmp / f"t{order}.safetensors"
        res = build_in_child(docs_path, order, out)
        types = sum(res["stats"]["ngram_types"].values())
        size = out.stat().st_size
        figures[f"build_n{order}"] = dict(
            seconds=round(res["seconds"], 2), tokens_per_s=round(n_tokens / res["seconds"]),
            peak_rss_mib=round(res["peak_mib"]), build_extra_mib=round(res["peak_mib"] - res["base_mib"]),
            ngram_types=types, file_bytes=size, bytes_per_ngram=round(size / types, 2),
        )
        extra = res["peak_mib"] - res["base_mib"]
        print(f"build N={order}: {res['seconds']:.2f} s ({n_tokens / res['seconds'] / 1e6:.2f} M tokens/s), "
              f"peak RSS {res['peak_mib']:.0f} MiB (+{extra:.0f} over the loaded ids), "
              f"{types:,} n-gram types, {size / types:.2f} bytes per stored n-gram")
        tables[order] = NGramTable.load(out)

    rng = np.random.default_rng(0)
    flat = np.concatenate(docs)
    starts = rng.integers(0, flat.size - 8, size=64)
    queries = torch.from_numpy(np.stack([flat[s : s + 4] for s in starts]))  # in-corpus contexts

    figures["lookup"] = {}
    for order in (3, 5):
        for name, opts in [("mixture", dict(mode="mixture")), ("kneser_ney", dict(smoothing="kneser_ney"))]:
            for b in (1, 16, 64):
                table, q = tables[order], queries[:b]
                sec = time_call(lambda t=table, q=q, o=opts: t.logprobs(q, **o, validate=False))
                figures["lookup"][f"n{order}_{name}_b{b}"] = dict(ms=round(sec * 1e3, 3),
                                                                  rows_per_s=round(b / sec))
                print(f"lookup N={order} {name:10s} B={b:2d}: {sec * 1e3:7.3f} ms/call, "
                      f"{b / sec:10,.0f} rows/s")

    # Baselines at N = 3, on the same queries.
    sub = []
    count = 0
    for d in docs:
        if count >= args.nltk_tokens:
            break
        sub.append(d)
        count += d.size
    sub_table = NGramTable.from_token_ids(sub, 32000, 3)
    sub_flat = np.concatenate(sub)
    sub_q = torch.from_numpy(np.stack([sub_flat[s : s + 4] for s in rng.integers(0, count - 8, 4)]))
    vocab_sample = rng.choice(np.unique(np.concatenate(sub)), size=200, replace=False)
    ours = {}
    for name, opts in [("mixture", dict(mode="mixture")), ("kneser_ney", dict(smoothing="kneser_ney"))]:
        sec = time_call(lambda o=opts: sub_table.logprobs(sub_q, **o, validate=False))
        ours[name] = sec / len(sub_q)
    nl = {
        "mixture": nltk_rows(sub, 3, sub_q.tolist(), vocab_sample, kn=False),
        "kneser_ney": nltk_rows(sub, 3, sub_q.tolist(), vocab_sample, kn=True),
    }
    dict_model = DictNGram(all_docs[: len(docs)], 3, 32000)
    dict_row = time_call(lambda: dict_model.mixture_row(queries[0].tolist()), min_time=2.0)
    ours_full_mix = time_call(lambda: tables[3].logprobs(queries, mode="mixture", validate=False)) / 64
    figures["baselines"] = {
        "nltk_subsample_tokens": count,
        "nltk_s_per_row": {k: round(v, 4) for k, v in nl.items()},
        "ours_s_per_row_subsample": {k: v for k, v in ours.items()},
        "speedup_vs_nltk": {k: round(nl[k] / ours[k]) for k in nl},
        "dict_s_per_row_mixture": round(dict_row, 5),
        "ours_s_per_row_mixture_b64": ours_full_mix,
        "speedup_vs_dict_mixture": round(dict_row / ours_full_mix, 1),
    }
    for k in nl:
        print(f"nltk.lm {k:10s} (N=3, {count:,}-token subsample): {nl[k] * 1e3:9.1f} ms/row vs ours "
              f"{ours[k] * 1e3:.4f} ms/row at B={len(sub_q)}: {nl[k] / ours[k]:,.0f}x")
    print(f"python dict mixture (N=3, full corpus table): {dict_row * 1e3:.1f} ms/row vs ours "
          f"{ours_full_mix * 1e3:.4f} ms/row at B=64: {dict_row / ours_full_mix:,.1f}x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
