"""Edit spans on the shared edit sets: target length of spans vs full rewrites, round-trip exactness,
and the task metrics of the copy-the-source baseline (the floor any editor must beat).

    python benchmarks/edit_spans.py [--out docs/results/edit_spans]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer.edits import (  # noqa: E402
    add_position_tokens,
    apply_spans,
    compact_source,
    extract_spans,
    format_compact,
    format_spans,
    normalize,
    parse_compact,
    parse_spans,
)
from steer.edits.data import ALL_SETS, load_edit_set  # noqa: E402
from steer.edits.scoring import bleu, gleu, sari  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "edit_spans"))
    args = ap.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(args.shared) / "tokenizers" / "llama2" / "hf")
    # Llama-2 plus <@0>..<@255> for the compact format; text without "<@" tokenises as before.
    add_position_tokens(tok)
    rows = []
    for name, split in ALL_SETS:
        es = load_edit_set(name, split, root=Path(args.shared) / "edits")
        t0 = time.perf_counter()
        n = exact = tok_exact = 0
        span_w = full_w = 0
        span_texts, full_texts, replacements, compact_texts = [], [], [], []
        n_spans = 0
        compact_exact = 0
        for src, ref in es.pairs():
            spans = extract_spans(src, ref)
            replacements += [sp.replacement for sp in spans if sp.replacement]
            n_spans += len(spans)
            compact_texts.append(format_compact(spans))
            compact_exact += apply_spans(src, parse_compact(compact_texts[-1], len(src.split()))) == normalize(ref)
            text = format_spans(spans)
            n += 1
            exact += apply_spans(src, parse_spans(text, len(src.split()))) == normalize(ref)
            span_w += len(text.split())
            full_w += len(normalize(ref).split())
            span_texts.append(text)
            full_texts.append(normalize(ref))
            t_spans = extract_spans(src, ref, unit="token", tokenizer=tok)
            ref_ids = tok(ref, add_special_tokens=False)["input_ids"]
            tok_exact += apply_spans(src, t_spans, unit="token", tokenizer=tok) == ref_ids
        span_t = sum(len(x) for x in tok(span_texts, add_special_tokens=False)["input_ids"])
        full_t = sum(len(x) for x in tok(full_texts, add_special_tokens=False)["input_ids"])
        # The compact format (one token per position); the replacements alone, the floor of any
        # word-span format however its positions are written; and the replacements plus one token
        # per span, what a format writing a span's start and end as a single token would cost.
        compact_t = sum(len(x) for x in tok(compact_texts, add_special_tokens=False)["input_ids"])
        rep_t = sum(len(x) for x in tok(replacements, add_special_tokens=False)["input_ids"]) if replacements else 0
        # Prompts: the source as the text format shows it (numbered words), as the compact one does
        # (a position token before every word, or before every third), against the plain source.
        plain = [" ".join(s.split()) for s in es.sources]
        numbered = [" ".join(f"{i}:{w}" for i, w in enumerate(s.split())) for s in es.sources]
        n_plain, n_numbered, n_compact, n_every3 = (
            sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
            for texts in (plain, numbered, [compact_source(s) for s in es.sources],
                          [compact_source(s, mark_every=3) for s in es.sources]))
        copy = {"gec": ("GLEU", 100 * gleu(es.sources, es.sources, es.references)),
                "simplify": ("SARI", sari(es.sources, es.sources, es.references)),
                "paraphrase": ("BLEU", bleu(es.sources, es.references))}[es.task]
        row = dict(set=f"{name}/{split}", task=es.task, sources=len(es.sources), pairs=n,
                   round_trip_words=exact / n, round_trip_tokens=tok_exact / n,
                   span_words_pct=100 * span_w / full_w, span_tokens_pct=100 * span_t / full_t,
                   round_trip_compact=compact_exact / n, compact_tokens_pct=100 * compact_t / full_t,
                   replacements_only_pct=100 * rep_t / full_t,
                   one_token_per_span_pct=100 * (rep_t + n_spans) / full_t,
                   numbered_source_x=n_numbered / n_plain, compact_source_x=n_compact / n_plain,
                   compact_every3_source_x=n_every3 / n_plain,
                   copy_metric=copy[0], copy_score=round(copy[1], 2), seconds=round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(f"{row['set']:18s} {row['pairs']:6d} pairs: round trip {100 * row['round_trip_words']:.1f} % "
              f"(tokens {100 * row['round_trip_tokens']:.1f} %), span target = {row['span_words_pct']:.1f} % "
              f"of the rewrite in words, {row['span_tokens_pct']:.1f} % in Llama-2 tokens "
              f"(compact {row['compact_tokens_pct']:.1f} %, round trip {100 * row['round_trip_compact']:.1f} %; "
              f"replacements alone {row['replacements_only_pct']:.1f} %, with one token per span "
              f"{row['one_token_per_span_pct']:.1f} %); source in the prompt "
              f"{row['numbered_source_x']:.2f}x numbered, {row['compact_source_x']:.2f}x compact, "
              f"{row['compact_every3_source_x']:.2f}x marking every third position; copy-source "
              f"{row['copy_metric']} {row['copy_score']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0])
    (out / "span_statistics.csv").write_text(
        "\n".join([",".join(cols)] + [",".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                                               for c in cols) for r in rows]) + "\n")
    big = [r for r in rows if r["set"] in ("jfleg/test", "asset/test", "turkcorpus/tune", "mrpc/test")]
    token_ratio = {r["set"]: round(r["compact_tokens_pct"] / 100, 4) for r in big}
    token_ratio["mean"] = round(sum(token_ratio.values()) / len(big), 4)
    one_token = round(sum(r["one_token_per_span_pct"] for r in big) / 100 / len(big), 4)
    floor = round(sum(r["replacements_only_pct"] for r in big) / 100 / len(big), 4)
    print(f"compact span target / rewrite, mean over jfleg/test, asset/test, turkcorpus/tune, mrpc/test: "
          f"{token_ratio['mean']:.3f} (one token per span: {one_token:.3f}; replacements alone: {floor:.3f})")
    print(json.dumps({"rows": rows, "token_ratio": token_ratio, "one_token_per_span_mean": one_token,
                      "replacements_only_mean": floor}))


if __name__ == "__main__":
    main()
