"""Scoring text under a table: the point query ``NGramTable.score`` against gathering whole-vocabulary rows.

The table is Don Quixote's steer split in SmolLM2-135M-Instruct's token space (vocabulary 49,152,
N = 3); the text is its judge split cut into continuations of 40 tokens after 8 tokens of context,
as a sweep scores a cell (``--tokens`` scored tokens in all). Both ways score the same (context, target)
pairs under the same estimate: ``dense`` builds [chunk, V] rows with ``logprobs`` and gathers the
targets (the way ``steer_table_ppl`` was computed), ``point`` calls ``score``. Each is timed best of
``--repeats``; values are checked equal. Last line: one JSON object.

    python benchmarks/point_query.py [--tokens 5080] [--repeats 3] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngram import NGramTable  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402
from steer.metrics import _scored_positions  # noqa: E402
from steer.models import load_tokenizer  # noqa: E402


def best(fn, repeats):
    out, secs = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        secs = min(secs, time.perf_counter() - t0)
    return out, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=5080, help="scored tokens (a sweep cell: 127 x 40)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1024, help="rows per logprobs call on the dense path")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    os.environ.setdefault("STEER_CORPORA_DIR", str(Path(args.shared) / "corpora"))
    tok = load_tokenizer(str(Path(args.shared) / "models" / "smollm2-135m-instruct"))
    corpus = load_corpus("don_quixote")
    table = NGramTable.from_texts(corpus.steer, tok, 3)
    ids = tok("\n".join(corpus.judge), add_special_tokens=False)["input_ids"]
    n_seq = -(-args.tokens // 40)
    seqs = [ids[i * 48:(i + 1) * 48] for i in range(n_seq)]
    ctx, tgt, _ = _scored_positions(seqs, [8] * n_seq, table.order - 1)
    ctx, tgt = ctx[: args.tokens], tgt[: args.tokens]
    figures = {"vocab": table.vocab_size, "table_tokens": table.stats["n_tokens"], "scored_tokens": int(tgt.numel()),
               "threads": torch.get_num_threads()}
    for smoothing in ("kneser_ney", "add_alpha"):
        opts = table.options(smoothing=smoothing) if smoothing == "kneser_ney" else table.options(
            mode="logsum", weights=(0.2, 0.3, 0.5))
        table.score_with(ctx[:2], tgt[:2], opts)  # builds the plan (both paths share it)

        def dense(opts=opts):
            parts = [table.logprobs_with(ctx[i:i + args.chunk], opts, validate=False)
                     .gather(1, tgt[i:i + args.chunk, None])[:, 0] for i in range(0, len(tgt), args.chunk)]
            return torch.cat(parts)

        d, d_s = best(dense, args.repeats)
        p, p_s = best(lambda o=opts: table.score_with(ctx, tgt, o, validate=False), args.repeats)
        assert torch.equal(d, p), "the point query disagrees with the dense rows"
        figures[smoothing] = {"dense_ms": round(d_s * 1e3, 2), "point_ms": round(p_s * 1e3, 2),
                              "speedup": round(d_s / p_s, 1), "equal": True}
        print(f"{smoothing:10s}: {len(tgt):,} tokens, dense rows + gather {d_s * 1e3:9.2f} ms, point query "
              f"{p_s * 1e3:7.2f} ms -> {d_s / p_s:.1f}x, values equal")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
