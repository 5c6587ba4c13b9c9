"""Per-step cost of NGramStylePrior and the steering variants relative to the model's own decoding step.

Two models: the shared 11M model with its real weights (``small_*`` keys, one
thread, where a cheap prior matters most), and TinyLlama-1.1B's shape with random
weights (``cpu_*`` keys: 22 layers, hidden 2048, 32 heads, 4 KV heads, FFN 5632,
vocab 32000). Table: the shared style corpora in the real Llama-2 token space,
N = 3; background table (contrastive variants): the shared base-model books.
Greedy ``generate`` with the KV cache, batch 1 and 16; the processor is timed
inside generate (on the small model the best of ``--repeats`` runs), the step from
runs without it; ``dense_add`` is the floor, one dense [B, V] add of fixed rows,
measured the same way. ``small_b<B>_<mode>_warmth`` (floor and Kneser-Ney) splits a processor's
cost: the call as generate makes it, the same code right after on other
contexts, and the same call warm (median ms). ``ops_per_call`` counts the
ATen ops one processor call dispatches (batch 16, warm). ``--device cuda`` runs
the same on a GPU (keys ``cuda_*`` and ``small_cuda_*``). ``smollm2_*`` keys: the shared
SmolLM2-135M-Instruct (the study model, real weights from its GGUF file, 30 layers, vocab 49,152,
all threads) with tables in its own token space; there also activation steering at the default layer,
alone and with contrastive+plausible (``smollm2_b<B>_activation*``: time inside the hooks and the
steered step minus the plain step). ``gemma3_*`` keys: the same on Gemma 3 270M (base, real weights from
the ``gemma`` extra's GGUF, 18 layers, vocab 262,144). ``--models`` picks which run.
Last line: one JSON object.

    python benchmarks/steer_overhead.py [--steps 16] [--repeats 5] [--shared ../shared/data] [--device cpu|cuda|all]
        [--models small,tinyllama,smollm2,gemma3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from ngram import NGramTable  # noqa: E402
from steer.activation import ActivationSteering, default_layers  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402
from steer.priors import GuidedStylePrior  # noqa: E402
from steer.style import NGramStylePrior  # noqa: E402

CORPORA = ["don_quixote", "cnn_highlights", "arxiv_abstracts", "sherlock_holmes",
           "tinyshakespeare", "kjv_new_testament"]


class Timed(LogitsProcessor):
    """Times every call of the wrapped processor (synchronising on CUDA)."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, input_ids, scores):
        if scores.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


class Warmth(LogitsProcessor):
    """Times the wrapped processor three times per step: as generate calls it (after the model's
    step), again on other random contexts (its code warm, the table rows of those contexts not),
    and again on the same inputs (everything warm). Returns the first call's output."""

    def __init__(self, inner, vocab):
        self.inner, self.vocab = inner, vocab
        self.times = {"cold": [], "other_rows": [], "warm": []}
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        t1 = time.perf_counter()
        other = torch.randint(0, self.vocab, input_ids.shape, generator=self.gen).to(input_ids.device)
        t2 = time.perf_counter()
        self.inner(other, scores)
        t3 = time.perf_counter()
        self.inner(input_ids, scores)
        t4 = time.perf_counter()
        for key, sec in (("cold", t1 - t0), ("other_rows", t3 - t2), ("warm", t4 - t3)):
            self.times[key].append(sec)
        return out


def warmth(model, table, prompt_ids, steps, batches, repeats):
    """Median per-call ms of the floor and of Kneser-Ney's processor: cold / on other rows / warm (CPU)."""
    out = {}
    for b in batches:
        ids = prompt_ids[:1].repeat(b, 1)
        ids[:, -1] = torch.arange(b) + 100
        for name, proc in (("dense_add", DenseAdd(0.1)),
                           ("kneser_ney", NGramStylePrior(table, 0.1, smoothing="kneser_ney"))):
            probe = Warmth(proc, table.vocab_size)
            for _ in range(1 + repeats):
                generate(model, ids, steps, [probe])
            fig = {k: round(sorted(v)[len(v) // 2] * 1e3, 3) for k, v in probe.times.items()}
            out[f"small_b{b}_{name}_warmth"] = fig
            print(f"small B={b:2d} {name} per call: {fig['cold']:.3f} ms as generate calls it, "
                  f"{fig['other_rows']:.3f} ms right after on other contexts, {fig['warm']:.3f} ms warm")
    return out


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def small_model(shared, device, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(Path(shared) / "models" / "base-llama2tok", dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def tinyllama_shape(device, dtype):
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval().requires_grad_(False)


def real_model(name, source, device, dtype, steps, repeats):
    """A real model (``name``: the keys' prefix) with tables of the same corpora in its own token space."""
    from steer.models import encode_prompts, load_model

    model, tok = load_model(source)
    model = model.to(device=device, dtype=dtype)
    docs = [d for name_ in CORPORA for d in load_corpus(name_).steer]
    table = NGramTable.from_texts(docs, tok, 3)
    background = NGramTable.from_texts(load_corpus("background").steer, tok, 3)
    print(f"{name} tables: {table.stats['n_tokens']:,} style tokens, {background.stats['n_tokens']:,} background "
          f"tokens, vocab {table.vocab_size:,}")
    ids = encode_prompts(tok, ["It was a bright cold day in April, and the clocks were striking"])["input_ids"]
    prefix = name if device == "cpu" else f"{name}_cuda"
    out = measure(prefix, model, table, background, ids, steps, (1, 16), repeats=repeats)
    if MODES is None or "activation" in MODES or "activation_contrastive_plausible" in MODES:
        out.update(measure_activation(prefix, model, table.to(device), background.to(device), ids, steps, (1, 16),
                                      repeats))
    return out


class TimedSteering(ActivationSteering):
    """ActivationSteering whose hooks time themselves (the add they make per layer and step)."""

    seconds, calls = 0.0, 0

    def _hook(self, delta):
        inner = super()._hook(delta)

        def timed(module, args, output):
            if delta.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = inner(module, args, output)
            if delta.is_cuda:
                torch.cuda.synchronize()
            TimedSteering.seconds += time.perf_counter() - t0
            TimedSteering.calls += 1
            return out

        return timed


def measure_activation(prefix, model, tab, bg, prompt_ids, steps, batches, repeats):
    """Activation steering at the default layer (a random direction of the residual width: the cost does not
    depend on the values), alone and with contrastive+plausible (lam 4).

    ``processor_ms`` is the time inside the hooks per step (plus the n-gram processor's for the combination);
    ``step_delta_ms`` is the steered step minus the plain step (best of ``repeats`` runs each, interleaved), which
    also holds the cost of calling a hooked module. ``overhead_pct`` uses the larger of the two.
    """
    device = model.device.type
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    layers = default_layers(model)
    results = {}
    for b in batches:
        ids = prompt_ids[:1].repeat(b, 1).to(device)
        ids[:, -1] = torch.arange(b, device=device) + 100
        generate(model, ids, 2)
        for name, procs in (("activation", []),
                            ("activation_contrastive_plausible",
                             [GuidedStylePrior(tab, 4.0, background=bg, plausibility=0.1)])):
            if MODES is not None and name not in MODES:
                continue
            timed = [Timed(p) for p in procs]
            steering = TimedSteering(model, direction, layers, scale=4.0)
            plain_s, steered_s, inside_s = float("inf"), float("inf"), float("inf")
            with steering:
                generate(model, ids, 2, timed)  # warm-up
            for _ in range(repeats + 1):  # the plain step (nothing added) and the steered one, interleaved
                plain_s = min(plain_s, generate(model, ids, steps))
                TimedSteering.seconds, TimedSteering.calls = 0.0, 0
                for t in timed:
                    t.seconds, t.calls = 0.0, 0
                with steering:
                    steered_s = min(steered_s, generate(model, ids, steps, timed))
                per_step = TimedSteering.calls / len(layers)
                inside_s = min(inside_s, TimedSteering.seconds / per_step
                               + sum(t.seconds / t.calls for t in timed))
            step_s, delta_s = plain_s / steps, (steered_s - plain_s) / steps
            cost = max(inside_s, delta_s)
            key = f"{prefix}_b{b}_{name}"
            results[key] = dict(step_ms=round(step_s * 1e3, 2), processor_ms=round(inside_s * 1e3, 3),
                                step_delta_ms=round(delta_s * 1e3, 3), overhead_pct=round(100 * cost / step_s, 3))
            print(f"{prefix} B={b:2d} {name:34s}: decode step {step_s * 1e3:8.2f} ms, inside the hooks "
                  f"(and processor) {inside_s * 1e3:6.3f} ms, step delta {delta_s * 1e3:6.3f} ms -> "
                  f"{100 * cost / step_s:.3f} % of the step")
    return results


def generate(model, ids, steps, processors=()):
    if ids.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                   min_new_tokens=steps, do_sample=False, pad_token_id=0,
                   logits_processor=LogitsProcessorList(list(processors)))
    if ids.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


class DenseAdd(LogitsProcessor):
    """The floor: scores + lam * a fixed [B, V] row set, one dense pass and nothing looked up."""

    def __init__(self, lam: float):
        self.lam, self.rows = lam, None

    def __call__(self, input_ids, scores):
        if self.rows is None or self.rows.shape != scores.shape:
            self.rows = torch.randn(scores.shape, device=scores.device, dtype=scores.dtype)
        return torch.add(scores, self.rows, alpha=self.lam)


MODES = None  # every mode; --modes picks some


def processors(tab, bg):
    """(name, processor) of every measured mode: the floor, the paper's injection and the variants."""
    return [(name, proc) for name, proc in _processors(tab, bg) if MODES is None or name in MODES]


def _processors(tab, bg):
    return [
        ("dense_add", DenseAdd(0.1)),
        ("logsum", NGramStylePrior(tab, 0.1, mode="logsum", weights=(0.2, 0.3, 0.5))),
        ("mixture", NGramStylePrior(tab, 0.1, mode="mixture")),
        ("kneser_ney", NGramStylePrior(tab, 0.1, smoothing="kneser_ney")),
        ("kneser_ney_compiled", NGramStylePrior(tab, 0.1, smoothing="kneser_ney", compile=True)),
        ("contrastive", GuidedStylePrior(tab, 1.0, background=bg)),
        ("contrastive_plausible", GuidedStylePrior(tab, 4.0, background=bg, plausibility=0.1)),
        ("contrastive_plausible_fresh", GuidedStylePrior(tab, 4.0, background=bg, plausibility=0.1, fresh=2)),
        ("contrastive_entropy", GuidedStylePrior(tab, 2.0, background=bg, strength="entropy")),
        ("contrastive_plausible_kl", GuidedStylePrior(tab, 8.0, background=bg, plausibility=0.1, strength="kl",
                                                      kl_budget=0.05)),
        ("contrastive_plausible_mask_temper", GuidedStylePrior(tab, 2.0, background=bg, plausibility=0.02, mask=True,
                                                               temper=True)),
    ]


def count_ops(tab, bg, device, vocab):
    """ATen ops of one warm call of every eager processor, batch 16 (a compiled one runs as one graph)."""
    ids = torch.randint(0, vocab, (16, 12), device=device)
    scores = torch.randn(16, vocab, device=device)
    out = {}
    for name, proc in processors(tab, bg):
        if getattr(proc, "compile", False) or isinstance(proc, DenseAdd):
            continue
        proc(ids, scores)
        with CountOps() as c:
            proc(ids, scores)
        out[name] = c.n
    return out


def measure(prefix, model, table, background, prompt_ids, steps, batches, repeats=1):
    """Per batch size: the plain decode step (best of 2 + repeats runs) and every processor's mean call
    inside generate (best of ``repeats`` runs: the run least disturbed by other work)."""
    device = model.device.type
    tab, bg = table.to(device), background.to(device)
    results = {}
    for b in batches:
        ids = prompt_ids[:1].repeat(b, 1).to(device)
        ids[:, -1] = torch.arange(b, device=device) + 100  # rows differ
        generate(model, ids, 2)  # warm-up
        plain = min(generate(model, ids, steps) for _ in range(1 + repeats))
        step_s = plain / steps
        for name, proc in processors(tab, bg):
            timed = Timed(proc)
            generate(model, ids, 2, [timed])  # warm-up: lazy per-device caches are built here
            proc_s = float("inf")
            for _ in range(repeats):
                timed.seconds, timed.calls = 0.0, 0
                generate(model, ids, steps, [timed])
                proc_s = min(proc_s, timed.seconds / timed.calls)
            key = f"{prefix}_b{b}_{name}"
            results[key] = dict(step_ms=round(step_s * 1e3, 2), processor_ms=round(proc_s * 1e3, 3),
                                overhead_pct=round(100 * proc_s / step_s, 3))
            print(f"{prefix} B={b:2d} {name:24s}: decode step {step_s * 1e3:8.2f} ms, processor "
                  f"{proc_s * 1e3:6.3f} ms -> {100 * proc_s / step_s:.3f} % of the step")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed runs per processor on the small model (the best is kept; the large shape runs once)")
    ap.add_argument("--modes", default="", help="comma-separated processor modes to time (default: all)")
    ap.add_argument("--models", default="small,tinyllama,smollm2",
                    help="comma-separated: small (11M, real), tinyllama (1.1B shape), smollm2 (135M, real), "
                         "gemma3 (Gemma 3 270M, real: the gemma extra)")
    args = ap.parse_args()
    models = {m.strip() for m in args.models.split(",") if m.strip()}
    global MODES
    MODES = {m.strip() for m in args.modes.split(",") if m.strip()} or None
    bad = models - {"small", "tinyllama", "smollm2", "gemma3"}
    if bad:
        ap.error(f"--models: unknown {sorted(bad)}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(args.shared) / "tokenizers" / "llama2" / "hf")
    os.environ.setdefault("STEER_CORPORA_DIR", str(Path(args.shared) / "corpora"))
    docs = []
    for name in CORPORA:
        docs.extend(load_corpus(name).steer)
    t0 = time.perf_counter()
    table = NGramTable.from_texts(docs, tok, 3)
    print(f"table: {table.stats['n_tokens']:,} tokens, N=3, built in {time.perf_counter() - t0:.1f} s")
    background = NGramTable.from_texts(load_corpus("background").steer, tok, 3)
    print(f"background table: {background.stats['n_tokens']:,} tokens, N=3")
    prompt = tok("It was a bright cold day in April, and the clocks were striking", return_tensors="pt")
    figures = {"threads": torch.get_num_threads(), "steps": args.steps,
               "table_tokens": table.stats["n_tokens"]}
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    for dev in devices:
        dtype = torch.float32 if dev == "cpu" else torch.bfloat16
        threads = torch.get_num_threads()
        if "small" in models:
            torch.set_num_threads(1)  # small models: one thread, the regime of a cheap decode step
            small = small_model(args.shared, dev, dtype)
            prefix = "small" if dev == "cpu" else "small_cuda"
            figures.update(measure(prefix, small, table, background, prompt["input_ids"], args.steps, (1, 16),
                                   repeats=args.repeats))
            if dev == "cpu":
                figures.update(warmth(small, table, prompt["input_ids"], args.steps, (1, 16), args.repeats))
            del small
            torch.set_num_threads(threads)
        if "tinyllama" in models:
            big = tinyllama_shape(dev, dtype)
            figures.update(measure(dev, big, table, background, prompt["input_ids"], args.steps, (1, 16)))
            del big
        if "smollm2" in models:
            figures.update(real_model("smollm2", str(Path(args.shared) / "models" / "smollm2-135m-instruct"), dev,
                                      dtype, args.steps, args.repeats))
        if "gemma3" in models:
            figures.update(real_model("gemma3", "gemma3-270m", dev, dtype, args.steps, args.repeats))
        ops = count_ops(table.to(dev), background.to(dev), dev, table.vocab_size)
        figures["ops_per_call" if dev == "cpu" else "ops_per_call_cuda"] = ops
        print(f"{dev} ATen ops per processor call: {ops}")
    if "cuda" not in devices:
        print("cuda: not available on this machine; not measured")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
