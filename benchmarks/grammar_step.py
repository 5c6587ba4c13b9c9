"""Per-step cost of EditSpanGrammar next to the shared 11M model's decoding step (batch 16, one thread).

Sources: the first 16 JFLEG test sentences, span prompts. Three runs of greedy
``generate``: without processors (the decode step), with the grammar as it runs
(each row's state moved by its last token with tensor ops), and with the
grammar re-reading every row's generated text each step (the reference path).
Last line: one JSON object.

    python benchmarks/grammar_step.py [--steps 48] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.steer_overhead import Timed  # noqa: E402
from steer.edits.data import load_edit_set  # noqa: E402
from steer.edits.grammar import EditSpanGrammar  # noqa: E402
from steer.edits.prompts import make_prompt  # noqa: E402
from steer.models import encode_prompts  # noqa: E402


class ReadingGrammar(EditSpanGrammar):
    """The grammar with the incremental step turned off: every call reads every row's text."""

    def _step_states(self, input_ids, c):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    shared = Path(args.shared)
    tok = AutoTokenizer.from_pretrained(shared / "tokenizers" / "llama2" / "hf")
    model = AutoModelForCausalLM.from_pretrained(shared / "models" / "base-llama2tok").eval()
    sources = load_edit_set("jfleg", "test", root=shared / "edits").sources[: args.batch]
    enc = encode_prompts(tok, [make_prompt(s, "gec", "spans", "text") for s in sources])
    width = enc["input_ids"].shape[1]

    def run(procs, min_new=0):
        t0 = time.perf_counter()
        model.generate(**enc, max_new_tokens=args.steps, min_new_tokens=min_new, do_sample=False,
                       pad_token_id=tok.pad_token_id, logits_processor=LogitsProcessorList(procs))
        return time.perf_counter() - t0

    run([])  # warm-up
    step_ms = min(run([], args.steps) for _ in range(3)) / args.steps * 1e3
    figures = {"batch": args.batch, "threads": 1, "prompt_tokens": width, "step_ms": round(step_ms, 3)}
    for name, cls in (("grammar", EditSpanGrammar), ("grammar_reading_text", ReadingGrammar)):
        best = None
        for _ in range(3):
            timed = Timed(cls(tok, sources, width))
            run([timed])
            ms = timed.seconds / timed.calls * 1e3
            best = ms if best is None else min(best, ms)
        figures[name] = {"processor_ms": round(best, 3), "overhead_pct": round(100 * best / step_ms, 2),
                         "calls": timed.calls}
        print(f"{name:22s}: {best:.3f} ms per step = {100 * best / step_ms:.2f} % of the {step_ms:.2f} ms "
              f"decode step (batch {args.batch}, {timed.calls} steps)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
