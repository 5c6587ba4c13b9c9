"""How long each batch of 16 waits for its longest answer, from the committed outputs.

For every set and for the span and rewrite models: the answer tokens (each kept answer re-tokenised,
plus its EOS: the span model's raw answer, the rewrite model's kept first line, so the rewrite
figures are approximate where an answer ran past its first line), the row-steps greedy batches of
16 decode when the sources are sorted by prompt length as `edit_generate` sorts them (the longest
answer of each batch times its rows), their ratio (`waiting`), and the prompt tokens.

    python docs/results/edit_spans/smollm2/batch_waiting.py   # after benchmarks/edit_finetune.py eval

Last line: one JSON object.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from edit_finetune import MODELS, eval_sets  # noqa: E402

from steer.edits.compact import add_position_tokens  # noqa: E402
from steer.edits.prompts import as_chat, make_prompt  # noqa: E402
from steer.models import load_tokenizer  # noqa: E402

BATCH = 16


def main() -> None:
    tok = load_tokenizer(str(MODELS / "smollm2-135m-instruct"))
    add_position_tokens(tok)  # the span model's tokenizer
    with gzip.open(HERE / "finetune_outputs.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    figures = {}
    for name, es in eval_sets().items():
        kept = [r for r in rows if r["set"] == name]
        figures[name] = {}
        for model, output, answer in (("spans", {"target": "spans", "fmt": "compact"}, "spans_raw"),
                                      ("rewrite", {"target": "rewrite"}, "rewrite")):
            prompts = [as_chat(tok, make_prompt(s, es.task, **output)) for s in es.sources]
            plen = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
            n = [len(ids) + 1 for ids in tok([r[answer] for r in kept], add_special_tokens=False)["input_ids"]]
            order = sorted(range(len(n)), key=lambda i: plen[i])
            steps = sum(max(n[i] for i in order[b:b + BATCH]) * len(order[b:b + BATCH])
                        for b in range(0, len(order), BATCH))
            figures[name][model] = {"answer_tokens": sum(n), "decoded_row_steps": steps,
                                    "waiting": round(steps / sum(n), 2), "prompt_tokens": sum(plen)}
        print(name, json.dumps(figures[name]), flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
