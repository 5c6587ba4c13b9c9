"""Throughput of vLLM's CPU engine with and without steer's logits processor, on the shared SmolLM2.

Two engines on the same weights (float32, eager): a plain one, and one started with
``steer.serving.vllm:SteerLogitsProcessor``, whose requests all ask for steering. Greedy, ``--tokens``
new tokens per request (EOS ignored), the first B of the built-in prompts at batch B = 1, 16, 64;
the two engines' runs are interleaved ``--repeats`` times, in alternating order (plain first, then
steered first), and each pair gives a ratio: ``overhead_pct`` is one minus the median ratio (a pair
shares the machine's load of the moment, which swings by several percent here from run to run), the
tokens/s are the medians of each engine's runs. Tables:
the steer splits of Don Quixote (style) and the background books (contrastive), in SmolLM2's tokens.
``vllm_b<B>``: the paper's prior at lam 0.1 (steer's default estimate); ``vllm_b<B>_mixture``: the same
lam with the normalised equal-weight mixture; ``vllm_b<B>_contrastive_plausible``: the variant at lam 2.
Run it in the vLLM environment (README, "Serving").

    python benchmarks/vllm_overhead.py [--tokens 64] [--repeats 9] [--batches 1,16,64]

Last line: one JSON object (per key: runner, tokens_per_s_plain, tokens_per_s_steered, overhead_pct; runner is
``v1`` or ``v2``, the model runner the engine chose: the CPU build has only V1, a GPU build picks V2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GGUF = ROOT.parent / "shared/data/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
# Each request's steering spec (steer.spec.SteeringSpec; the corpus names one of the engine's tables).
# "" is the paper's prior as every steer path now defaults it (logsum, weights 0.2/0.3/0.5); "_mixture"
# the normalised, equal-weight mixture that requests in the earlier {"table", "lam"} form got before.
SETTINGS = {"": {"method": "prior", "knob": 0.1, "corpus": "quixote"},
            "_mixture": {"method": "prior", "knob": 0.1, "corpus": "quixote",
                         "options": {"prior": {"mode": "mixture", "weights": None}}},
            "_contrastive_plausible": {"method": "contrastive+plausible", "knob": 2.0, "corpus": "quixote",
                                       "background": "books"}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batches", default="1,16,64")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    from steer.corpora import load_corpus
    from steer.gguf import converted_folder
    from steer.sweep import builtin_prompts
    from steer.table_cache import table_for

    folder = converted_folder(GGUF)
    tok = AutoTokenizer.from_pretrained(folder)
    tmp = Path(tempfile.mkdtemp(prefix="steer-vllm-"))
    paths = {}
    for name, corpus in (("quixote", "don_quixote"), ("books", "background")):
        paths[name] = str(tmp / f"{name}.safetensors")
        table_for(load_corpus(corpus), tok, 3).save(paths[name])
    os.environ["STEER_VLLM_TABLES"] = json.dumps(paths)

    import vllm

    def engine(processors):
        return vllm.LLM(model=str(folder), dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
                        logits_processors=processors, max_num_seqs=64, gpu_memory_utilization=0.2)

    plain, steered = engine([]), engine(["steer.serving.vllm:SteerLogitsProcessor"])
    prompts = [{"prompt_token_ids": tok(p)["input_ids"]} for p in builtin_prompts()]

    def run(llm, batch, steer):
        params = vllm.SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True,
                                     extra_args={"steer": steer} if steer else None)
        t0 = time.perf_counter()
        outs = llm.generate(prompts[:batch], params, use_tqdm=False)
        dt = time.perf_counter() - t0
        return sum(len(o.outputs[0].token_ids) for o in outs) / dt

    result = {"model": "SmolLM2-135M-Instruct (float32, vLLM CPU, eager)", "tokens": args.tokens,
              "vllm": vllm.__version__}
    for batch in [int(b) for b in args.batches.split(",")]:
        for suffix, steer in SETTINGS.items():
            run(plain, batch, None), run(steered, batch, steer)  # warm-up
            a, b = [], []
            for i in range(args.repeats):  # interleaved, alternating: drifts in machine load hit both alike
                if i % 2:
                    b.append(run(steered, batch, steer))
                    a.append(run(plain, batch, None))
                else:
                    a.append(run(plain, batch, None))
                    b.append(run(steered, batch, steer))
            ratio = statistics.median(s / p for p, s in zip(a, b, strict=True))
            key = f"vllm_b{batch}{suffix}"
            result[key] = {"runner": "v2" if steered.llm_engine.vllm_config.use_v2_model_runner else "v1",
                           "tokens_per_s_plain": round(statistics.median(a), 1),
                           "tokens_per_s_steered": round(statistics.median(b), 1),
                           "overhead_pct": round(100 * (1 - ratio), 2)}  # share of throughput lost
            print(key, result[key], flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
