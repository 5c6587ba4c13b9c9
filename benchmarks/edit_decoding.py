"""Where the time of greedy edit decoding goes: waiting for a batch's longest answer, or reading the prompts.

For each fine-tuned editor of ``benchmarks/edit_finetune.py`` (compact spans and full rewrite), on the
first ``--sources`` sources of JFLEG test, batch 16, sorted by prompt length, the 4-gram loop guard:

- ``generate_s``: transformers' ``generate`` (every row runs until its batch's longest answer ends);
- ``drop_s``: :func:`steer.generation.greedy_drop_finished` (a finished row leaves the batch), and
  how many answers are identical to ``generate``'s;
- ``prefill_s``: the same decoder stopped after one new token: reading the prompts, the floor of
  either decoder;
- prompt and answer tokens per source, and the chat prefix that every prompt of the set shares.

The two models are timed in the same run, alternately, after a warm-up batch each.

    python benchmarks/edit_decoding.py [--ckpt ~/.cache/steer/edit_finetune/smollm2] [--sources 192]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer.edits.data import load_edit_set  # noqa: E402
from steer.edits.generate import edit_generate  # noqa: E402
from steer.edits.prompts import as_chat, make_prompt  # noqa: E402
from steer.metrics import shared_prefix  # noqa: E402
from steer.models import document_ids, load_model  # noqa: E402

CKPT = Path(os.environ.get("STEER_CACHE_DIR", Path.home() / ".cache" / "steer")) / "edit_finetune" / "smollm2"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(CKPT))
    ap.add_argument("--sources", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sources = load_edit_set("jfleg", "test").sources[: args.sources]
    figures = {}
    for name, output in (("spans", {"target": "spans", "fmt": "compact"}), ("rewrite", {"target": "rewrite"})):
        path = Path(args.ckpt) / name
        info = json.loads((path / "train_info.json").read_text())
        model, tok = load_model(str(path))
        kw = {"task": "gec", **output, "max_new_tokens": 128, "batch_size": 16, "chat": info.get("chat", True),
              "mark_every": info.get("mark_every", 1), "loop_ban": (4, 2)}
        edit_generate(model, tok, sources[:16], **{**kw, "max_new_tokens": 8})  # warm-up
        slow, generate_s = edit_generate(model, tok, sources, drop_finished=False, **kw)
        fast, drop_s = edit_generate(model, tok, sources, drop_finished=True, **kw)
        _, prefill_s = edit_generate(model, tok, sources, drop_finished=True, **{**kw, "max_new_tokens": 1})
        prompts = document_ids(tok, [as_chat(tok, make_prompt(s, "gec", **output, mark_every=kw["mark_every"]))
                                     for s in sources])
        figures[name] = {
            "sources": len(sources), "generate_s": round(generate_s, 2), "drop_s": round(drop_s, 2),
            "drop_vs_generate": round(drop_s / generate_s, 3), "prefill_s": round(prefill_s, 2),
            "prefill_share_of_drop": round(prefill_s / drop_s, 3),
            "identical_answers": sum(a.raw == b.raw for a, b in zip(slow, fast, strict=True)),
            "prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
            "shared_prefix_tokens": min(shared_prefix(prompts[0], p) for p in prompts),
            "answer_tokens": round(sum(r.n_tokens for r in fast) / len(fast), 2),
        }
        print(f"{name:8s} {json.dumps(figures[name])}", flush=True)
        del model
    for key in ("generate_s", "drop_s", "prefill_s"):
        figures[f"spans_vs_rewrite_{key[:-2]}"] = round(figures["spans"][key] / figures["rewrite"][key], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
