"""Decode speed of llama.cpp (llama-cpp-python) with and without steer's logits processor, on the shared SmolLM2.

One ``Llama`` on the shared GGUF (Q4_1, as llama.cpp runs it), batch 1: each run greedily continues
``--prompts`` of the built-in prompts by ``--tokens`` tokens (the cache reset before each prompt, so
every run evaluates the same prompts), plain or with a processor. Plain and steered runs are
interleaved ``--repeats`` times in alternating order, and each pair gives a ratio: ``overhead_pct``
is one minus the median ratio of tokens/s; the tokens/s are the medians of each side's runs.

Keys: ``llamacpp_b1_passthrough`` a processor that returns the logits untouched (what any
llama-cpp-python logits processor costs: the binding hands it the row through numpy),
``llamacpp_b1_logsum`` the paper's prior (logsum, weights 0.2/0.3/0.5) at lam 0.1 and
``llamacpp_b1_contrastive_plausible`` the variant at lam 2, both over the steer split of Don
Quixote (order 3; the background books for the contrast). ``processor_ms``: the median of the
processor's own time per call, timed inside the runs. Run it in the llama.cpp environment (README, "Serving").

    python benchmarks/llamacpp_overhead.py [--tokens 64] [--prompts 6] [--repeats 7]

Last line: one JSON object (per key: tokens_per_s_plain, tokens_per_s_steered, overhead_pct, processor_ms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GGUF = ROOT.parent / "shared/data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
SPECS = {"logsum": {"method": "prior", "knob": 0.1, "corpus": "don_quixote"},
         "contrastive_plausible": {"method": "contrastive+plausible", "knob": 2.0, "corpus": "don_quixote",
                                   "background": "background"}}


class Timed:
    """A processor wrapped to record its own time per call."""

    def __init__(self, processor):
        self.processor, self.seconds = processor, []

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.processor(input_ids, scores)
        self.seconds.append(time.perf_counter() - t0)
        return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    os.environ.setdefault("STEER_CORPORA_DIR", str(ROOT.parent / "shared/data/corpora"))

    import llama_cpp

    from steer.serving.llamacpp import SteerLlamaProcessor, gguf_tokenizer
    from steer.sweep import builtin_prompts

    llm = llama_cpp.Llama(str(GGUF), n_ctx=512, seed=0, verbose=False)
    tokenizer = gguf_tokenizer(GGUF)
    prompts = builtin_prompts()[:args.prompts]
    processors = {"passthrough": lambda input_ids, scores: scores}
    for name, spec in SPECS.items():
        processors[name] = SteerLlamaProcessor.from_spec(spec, llm, tokenizer=tokenizer)

    def run(processor=None):
        chain = llama_cpp.LogitsProcessorList([processor]) if processor is not None else None
        tokens, t0 = 0, time.perf_counter()
        for prompt in prompts:
            llm.reset()
            out = llm.create_completion(prompt, max_tokens=args.tokens, temperature=0.0, logits_processor=chain)
            tokens += out["usage"]["completion_tokens"]
        return tokens / (time.perf_counter() - t0)

    result = {"model": "SmolLM2-135M-Instruct (Q4_1, llama.cpp via llama-cpp-python)", "tokens": args.tokens,
              "prompts": args.prompts, "llama_cpp_python": llama_cpp.__version__}
    for name, processor in processors.items():
        timed = Timed(processor)
        run(), run(timed)  # warm-up
        timed.seconds.clear()
        plain, steered = [], []
        for i in range(args.repeats):  # interleaved, alternating: drifts in machine load hit both alike
            if i % 2:
                steered.append(run(timed))
                plain.append(run())
            else:
                plain.append(run())
                steered.append(run(timed))
        ratio = statistics.median(s / p for p, s in zip(plain, steered, strict=True))
        key = f"llamacpp_b1_{name}"
        result[key] = {"tokens_per_s_plain": round(statistics.median(plain), 1),
                       "tokens_per_s_steered": round(statistics.median(steered), 1),
                       "overhead_pct": round(100 * (1 - ratio), 2),
                       "processor_ms": round(1e3 * statistics.median(timed.seconds), 4)}
        print(key, result[key], flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
