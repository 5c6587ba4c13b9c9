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

from steer.edits import apply_spans, extract_spans, format_spans, normalize, parse_spans  # noqa: E402
from steer.edits.data import ALL_SETS, load_edit_set  # noqa: E402
from steer.edits.metrics import bleu, gleu, sari  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "edit_spans"))
    args = ap.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(args.shared) / "tokenizers" / "llama2" / "hf")
    rows = []
    for name, split in ALL_SETS:
        es = load_edit_set(name, split, root=Path(args.shared) / "edits")
        t0 = time.perf_counter()
        n = exact = tok_exact = 0
        span_w = full_w = 0
        span_texts, full_texts, replacements, n_spans = [], [], [], 0
        for src, ref in es.pairs():
            spans = extract_spans(src, ref)
            n_spans += len(spans)
            replacements += [sp.replacement for sp in spans if sp.replacement]
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
        # What a format with one token per position would cost (2 per span, no separators, the
        # replacements as written after a position), and the replacements alone: the floor of any
        # word-span format, however its positions are written.
        rep_t = sum(len(x) for x in tok(replacements, add_special_tokens=False)["input_ids"]) if replacements else 0
        copy = {"gec": ("GLEU", 100 * gleu(es.sources, es.sources, es.references)),
                "simplify": ("SARI", sari(es.sources, es.sources, es.references)),
                "paraphrase": ("BLEU", bleu(es.sources, es.references))}[es.task]
        row = dict(set=f"{name}/{split}", task=es.task, sources=len(es.sources), pairs=n,
                   round_trip_words=exact / n, round_trip_tokens=tok_exact / n,
                   span_words_pct=100 * span_w / full_w, span_tokens_pct=100 * span_t / full_t,
                   one_token_positions_pct=100 * (2 * n_spans + rep_t) / full_t,
                   replacements_only_pct=100 * rep_t / full_t,
                   copy_metric=copy[0], copy_score=round(copy[1], 2), seconds=round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(f"{row['set']:18s} {row['pairs']:6d} pairs: round trip {100 * row['round_trip_words']:.1f} % "
              f"(tokens {100 * row['round_trip_tokens']:.1f} %), span target = {row['span_words_pct']:.1f} % "
              f"of the rewrite in words, {row['span_tokens_pct']:.1f} % in Llama-2 tokens "
              f"({row['one_token_positions_pct']:.1f} % with one-token positions, replacements alone "
              f"{row['replacements_only_pct']:.1f} %); copy-source "
              f"{row['copy_metric']} {row['copy_score']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0])
    (out / "span_statistics.csv").write_text(
        "\n".join([",".join(cols)] + [",".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                                               for c in cols) for r in rows]) + "\n")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
