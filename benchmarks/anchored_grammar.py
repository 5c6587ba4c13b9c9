"""What AnchoredGrammar costs a decoding step: its call alone, and decoding with and without it.

    python benchmarks/anchored_grammar.py --ckpt ~/.cache/steer/edit_finetune/smollm2 --threads 2

Needs the anchored SmolLM2 model that ``benchmarks/edit_finetune.py train --mode anchored`` writes.
(1) The grammar's call on batches of 16 JFLEG test sources, teacher-forced along their reference
answers (SmolLM2's tokenizer, 49,152 columns), in ms per call. (2) The same sources decoded
greedily by the model with the grammar and without it (the same guard), in ms per generated
token; the answers differ, so per-token time is the comparison. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer.edits.anchored import format_anchored  # noqa: E402
from steer.edits.anchored_grammar import AnchoredGrammar  # noqa: E402
from steer.edits.data import load_edit_set  # noqa: E402
from steer.edits.generate import edit_generate  # noqa: E402
from steer.edits.spans import extract_spans  # noqa: E402
from steer.models import load_model  # noqa: E402

CKPT = Path.home() / ".cache" / "steer" / "edit_finetune" / "smollm2"


def grammar_ms_per_call(tok, pairs, batch: int = 16) -> tuple[float, int]:
    """Mean ms of one grammar call over teacher-forced batches of reference answers, and the call count."""
    total, calls = 0.0, 0
    for b0 in range(0, len(pairs), batch):
        part = pairs[b0 : b0 + batch]
        srcs = [s for s, _ in part]
        gold = [tok(format_anchored(s, extract_spans(s, r)), add_special_tokens=False)["input_ids"]
                + [tok.eos_token_id] for s, r in part]
        grammar = AnchoredGrammar(tok, srcs, 0)
        rows = torch.zeros(len(part), 0, dtype=torch.long)
        scores = torch.zeros(len(part), len(tok))
        for step in range(max(map(len, gold))):
            t0 = time.perf_counter()
            grammar(rows, scores)
            total += time.perf_counter() - t0
            calls += 1
            nxt = torch.tensor([[g[step] if step < len(g) else tok.eos_token_id] for g in gold])
            rows = torch.cat([rows, nxt], 1)
    return 1000 * total / calls, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(CKPT))
    ap.add_argument("--sources", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    es = load_edit_set("jfleg", "test")
    pairs = [(s, refs[0]) for s, refs in zip(es.sources, es.references, strict=True)][: args.sources]
    model, tok = load_model(str(Path(args.ckpt) / "anchored"))
    call_ms, calls = grammar_ms_per_call(tok, pairs)
    print(f"grammar call: {call_ms:.3f} ms ({calls} calls, batch 16, {len(tok)} columns)", flush=True)
    sources = [s for s, _ in pairs]
    kw = {"task": "gec", "target": "spans", "fmt": "anchored", "max_new_tokens": 128, "batch_size": 16,
          "loop_ban": (4, 3)}
    edit_generate(model, tok, sources[:16], **{**kw, "max_new_tokens": 8})  # warm-up
    figures = {"sources": len(sources), "grammar_ms_per_call": round(call_ms, 3), "calls": calls}
    for name, grammar in (("grammar", True), ("free", False)):
        res, secs = edit_generate(model, tok, sources, grammar=grammar, **kw)
        tokens = sum(r.n_tokens for r in res)
        figures[name] = {"wall_s": round(secs, 2), "tokens": tokens, "ms_per_token": round(1000 * secs / tokens, 2),
                         "valid": round(sum(r.valid for r in res) / len(res), 3)}
        print(f"{name:8s} {json.dumps(figures[name])}", flush=True)
    figures["grammar_vs_free_ms_per_token"] = round(figures["grammar"]["ms_per_token"]
                                                    / figures["free"]["ms_per_token"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
