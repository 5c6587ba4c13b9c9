"""Span decoding vs full rewriting with the same model, each fine-tuned on its own target format.

One multi-task model per output format, trained with the same budget on the same examples:
synthetic corruptions of shared-corpus sentences (word deletions, duplications, swaps,
substitutions; source = corrupted, target = original) plus the training parts of the shared edit
sets (JFLEG dev, ASSET valid, TurkCorpus tune less the sources held out for evaluation, MRPC
train), each task under its own instruction, through the model's chat template when it has one.
``spans`` writes compact span lists (steer.edits.compact: one token per position), ``rewrite``
writes the whole target. Both are evaluated with greedy decoding, batch 16, sources sorted by prompt
length, the 4-gram repetition guard on both, in one process on held-out synthetic pairs (GLEU),
JFLEG test (GLEU), ASSET test and the held-out TurkCorpus sources (SARI) and MRPC test (BLEU, and
self-BLEU against the source), next to copying the source, keeping its first two thirds and (with
``--instruct``) the untuned base model asked through its chat template.

SmolLM2-135M-Instruct (docs/results/edit_spans/smollm2/), every parameter trained:

    M=../shared/data/models/smollm2-135m-instruct C=~/.cache/steer/edit_finetune/smollm2
    python benchmarks/edit_finetune.py train --mode spans --model $M --ckpt $C --steps 200 --lr 1e-4 \
        --warmup 20 --threads 2                                            # ~33 min alone on 2 cores
    python benchmarks/edit_finetune.py train --mode rewrite --model $M --ckpt $C --steps 200 --lr 1e-4 \
        --warmup 20 --threads 2                                            # ~22 min
    python benchmarks/edit_finetune.py eval --ckpt $C --instruct --threads 2 \
        --out docs/results/edit_spans/smollm2

base-llama2tok (docs/results/edit_spans/, the small-model result):

    python benchmarks/edit_finetune.py train --mode spans --threads 2     # ~21 min alone on 2 cores
    python benchmarks/edit_finetune.py train --mode rewrite --threads 2   # ~30 min
    python benchmarks/edit_finetune.py eval --threads 2                   # ~15 min; writes
                                                                          # docs/results/edit_spans/finetune.json

Text-anchored spans (steer.edits.anchored: the plain source in the prompt, edits that quote the words
they replace), the same budget, judged against the rewrite model under a guard that lets an edit line
recur (no 4-gram three times, for both models):

    python benchmarks/edit_finetune.py train --mode anchored --model $M --ckpt $C --steps 200 --lr 1e-4 \
        --warmup 20 --threads 2
    python benchmarks/edit_finetune.py eval --ckpt $C --span-model anchored --loop-ban 4,3 --threads 2 \
        --name finetune_anchored_grammar --out docs/results/edit_spans/smollm2   # ~40 min
    python benchmarks/edit_finetune.py eval ... --no-grammar --name finetune_anchored  # as trained, unconstrained
    python benchmarks/edit_finetune.py rescore --name finetune_anchored  # its kept answers re-read (skip_bad,
                                                                         # drop_echoes): finetune_anchored_rescore.json

Trained to a plateau (at most 3,000 steps; the held-out loss every 100, stopping after 3 evaluations
without a new best 0.5 % below the last; a checkpoint every 50 steps: the same command resumes; passes
in bfloat16, about 1.7x faster here than float32):

    C2=~/.cache/steer/edit_finetune/smollm2_converge_bf16
    for mode in anchored rewrite; do python benchmarks/edit_finetune.py train --mode $mode --model $M --ckpt $C2 \
        --steps 3000 --lr 1e-4 --warmup 50 --eval-every 100 --patience 3 --min-delta 0.005 --checkpoint-every 50 \
        --bf16 --threads 2; done
    python benchmarks/edit_finetune.py eval --ckpt $C2 --span-model anchored --loop-ban 4,3 --prompt-lookup 4 \
        --threads 2 --out docs/results/edit_spans/smollm2-converged

With ``--prompt-lookup`` every set's row also holds ``methods``: ``copy``, ``rewrite``, ``rewrite_lookup``,
``anchored``, ``anchored_lookup`` (and the ``*_b1`` runs without lookup), each with the metric,
``tokens`` and ``seconds`` on the same sources (all of them unless ``--batch1-limit``).

``train --mode spans --mark-every 3`` adds ``spans_every3`` (evaluate it with ``eval --models spans_every3``).
``eval`` decodes with steer.generation.greedy_drop_finished (a finished row leaves the batch);
``eval --decoder generate`` with transformers' ``generate``, which runs every row of a batch until its
longest answer ends (the decoder of the results before it existed).

Last line of ``eval``: one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steer.corpora import load_corpus  # noqa: E402
from steer.edits.compact import add_position_tokens  # noqa: E402
from steer.edits.data import EditSet, load_edit_set  # noqa: E402
from steer.edits.finetune import finetune, mix  # noqa: E402
from steer.edits.generate import edit_generate  # noqa: E402
from steer.edits.make_data import make_examples  # noqa: E402
from steer.edits.prompts import uses_chat  # noqa: E402
from steer.edits.scoring import bleu, gleu, sari  # noqa: E402
from steer.edits.spans import normalize  # noqa: E402
from steer.models import load_model  # noqa: E402

MODELS = ROOT.parent / "shared" / "data" / "models"
MODEL = MODELS / "base-llama2tok"
CKPT = Path.home() / ".cache" / "steer" / "edit_finetune"
SYNTHETIC_TRAIN, SYNTHETIC_EVAL = 8000, 300
TURK_HELD = 300  # the last TurkCorpus tune sources: evaluation only
MAX_TRAIN_WORDS = 50  # longer training sources are skipped (cost, not content)
# Per training group, the sources held out of training whose loss stops it (about 400 pairs in all,
# each group's share near its share of the mix).
HELD_SOURCES = {"synthetic": 140, "jfleg": 20, "asset": 6, "turkcorpus": 8, "mrpc": 60}
# Share of each training step's examples drawn from each group.
MIX = {"synthetic": 0.35, "jfleg": 0.2, "asset": 0.15, "turkcorpus": 0.15, "mrpc": 0.15}
EVAL_CAP = {"synthetic": SYNTHETIC_EVAL, "jfleg/test": None, "asset/test": None, "turkcorpus/held": None,
            "mrpc/test": 400}
RATIO_SETS = [("jfleg", "test"), ("asset", "test"), ("turkcorpus", "tune"), ("mrpc", "test")]
# Per training run (its --mode names the run: "spans" is the compact span model): the example format
# (steer.edits.make_data) and what edit_generate decodes (its target and span format).
FORMAT = {"spans": "compact", "anchored": "anchored", "rewrite": "text"}
DECODE = {"spans": {"target": "spans", "fmt": "compact"}, "anchored": {"target": "spans", "fmt": "anchored"},
          "rewrite": {"target": "rewrite"}}


def sentences(n: int, seed: int = 0) -> list[str]:
    docs = load_corpus("sherlock_holmes", judge_fraction=0).steer + load_corpus("don_quixote", judge_fraction=0).steer
    out = []
    for d in docs:
        for s in re.split(r"(?<=[.!?])\s+", d):
            if 6 <= len(s.split()) <= 30:
                out.append(" ".join(s.split()))
    random.Random(seed).shuffle(out)
    return out[:n]


def corrupt(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    vocab = ["the", "a", "of", "to", "is", "was", "in", "and", "he", "it"]
    for _ in range(rng.choice([1, 1, 2])):
        i = rng.randrange(len(words))
        op = rng.choice(["delete", "dup", "swap", "sub"])
        if op == "delete" and len(words) > 4:
            del words[i]
        elif op == "dup":
            words.insert(i, words[i])
        elif op == "swap" and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words[i] = rng.choice(vocab)
    return " ".join(words)


def synthetic_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rng = random.Random(0)
    pairs = [(corrupt(s, rng), s) for s in sentences(SYNTHETIC_TRAIN + SYNTHETIC_EVAL)]
    return pairs[SYNTHETIC_EVAL:], pairs[:SYNTHETIC_EVAL]


def turk_split() -> tuple[EditSet, EditSet]:
    es = load_edit_set("turkcorpus", "tune")
    cut = len(es.sources) - TURK_HELD
    return (EditSet("turkcorpus", "simplify", es.sources[:cut], es.references[:cut]),
            EditSet("turkcorpus", "simplify", es.sources[cut:], es.references[cut:]))


def training_examples(tok, fmt: str, mark_every: int = 1, only: list[str] | None = None
                      ) -> tuple[list[dict], list[float], dict, list[dict]]:
    """The weighted training mix, its group sizes, and the held-out examples: each group's last
    HELD_SOURCES sources (all their pairs), never trained on, whose loss stops training."""
    groups = {"synthetic": ("gec", synthetic_pairs()[0]),
              "jfleg": ("gec", load_edit_set("jfleg", "dev")),
              "asset": ("simplify", load_edit_set("asset", "valid")),
              "turkcorpus": ("simplify", turk_split()[0]),
              "mrpc": ("paraphrase", load_edit_set("mrpc", "train"))}
    sets, heldout = {}, []
    for name, (task, data) in groups.items():
        if only and name not in only:
            continue
        if isinstance(data, EditSet):  # held out by source: no source is on both sides
            cut = len(data.sources) - HELD_SOURCES[name]
            train_pairs = EditSet(name, task, data.sources[:cut], data.references[:cut]).pairs()
            held_pairs = EditSet(name, task, data.sources[cut:], data.references[cut:]).pairs()
        else:
            train_pairs, held_pairs = data[: -HELD_SOURCES[name]], data[-HELD_SOURCES[name]:]
        short = [(s, t) for s, t in train_pairs if len(s.split()) <= MAX_TRAIN_WORDS]
        sets[name] = make_examples(short, task, tok, fmt=fmt, mark_every=mark_every)[0]
        heldout += make_examples([(s, t) for s, t in held_pairs if len(s.split()) <= MAX_TRAIN_WORDS], task, tok,
                                 fmt=fmt, mark_every=mark_every)[0]
    examples, weights = mix(list(sets.values()), [MIX[name] for name in sets])
    return examples, weights, {name: len(exs) for name, exs in sets.items()}, heldout


def eval_sets(limit: int | None = None) -> dict[str, EditSet]:
    synthetic = synthetic_pairs()[1]
    sets = {"synthetic": EditSet("synthetic", "gec", [s for s, _ in synthetic], [[t] for _, t in synthetic]),
            "jfleg/test": load_edit_set("jfleg", "test"), "asset/test": load_edit_set("asset", "test"),
            "turkcorpus/held": turk_split()[1], "mrpc/test": load_edit_set("mrpc", "test")}
    caps = {k: min(c or limit or 10**9, limit or 10**9) for k, c in EVAL_CAP.items()}
    return {k: EditSet(es.name, es.task, es.sources[: caps[k]], es.references[: caps[k]]) for k, es in sets.items()}


def score(es: EditSet, outputs: list[str]) -> dict:
    if es.task == "gec":
        return {"gleu": round(100 * gleu(es.sources, outputs, es.references), 2)}
    if es.task == "simplify":
        return {"sari": round(sari(es.sources, outputs, es.references), 2)}
    return {"bleu": round(bleu(outputs, es.references), 2),
            "self_bleu": round(bleu(outputs, [[s] for s in es.sources]), 2)}


def train(args):
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    fmt = FORMAT[args.mode]
    if args.mode == "spans":
        add_position_tokens(tok, model)
    only = args.only.split(",") if args.only else None
    if only and set(only) - set(MIX):
        raise ValueError(f"--only: unknown group(s) {sorted(set(only) - set(MIX))}; groups: {list(MIX)}")
    examples, weights, sizes, heldout = training_examples(tok, fmt, args.mark_every, only)
    keys = ("rewrite_prompt", "rewrite") if args.mode == "rewrite" else ("prompt", "completion")
    out = Path(args.ckpt) / (run_name(args.mode, args.mark_every) + (f"_{'+'.join(only)}" if only else ""))
    stop = f"until the held-out loss plateaus (patience {args.patience})" if args.patience else "for every step"
    print(f"{args.mode}: {len(examples)} training examples {sizes}, {len(heldout)} held out, mix {MIX}; "
          f"at most {args.steps} steps, {stop}", flush=True)
    window: list[float] = []
    every = 100 if args.steps >= 1000 else 10

    def progress(step, loss):
        window.append(loss)
        if (step + 1) % every == 0:
            held = f", held-out {run_heldout[-1][1]:.4f} at {run_heldout[-1][0]}" if run_heldout else ""
            print(f"{args.mode} step {step + 1}: loss {sum(window) / len(window):.3f}{held} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            window.clear()

    run_heldout: list = []  # filled by finetune as it evaluates (read by progress)
    t0 = time.perf_counter()
    run = finetune(model, tok, examples, prompt_key=keys[0], target_key=keys[1], weights=weights,
                   steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup,
                   heldout=heldout if args.patience else None, eval_every=args.eval_every,
                   patience=args.patience or None, min_delta=args.min_delta,
                   checkpoint=out.with_name(out.name + ".checkpoint"), checkpoint_every=args.checkpoint_every,
                   bf16=args.bf16, progress=progress, on_heldout=lambda s, v: run_heldout.append((s, v)))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    losses = run.losses
    every = max(len(losses) // 20, 1)
    info = {"model": args.model, "mode": args.mode, "mark_every": args.mark_every, "only": only,
            "chat": uses_chat(tok), "steps": args.steps, "batch": args.batch, "lr": args.lr, "warmup": args.warmup,
            "threads": args.threads, "bf16": args.bf16, "train_seconds": round(run.total_seconds, 1),
            "steps_taken": len(losses), "stopped": run.stopped, "best_step": run.best_step,
            "stopping": {"heldout_examples": len(heldout), "held_sources": HELD_SOURCES,
                         "eval_every": args.eval_every, "patience": args.patience, "min_delta": args.min_delta},
            "heldout_curve": [[s, round(v, 4)] for s, v in run.heldout],
            "examples": sizes, "mix": MIX,
            "loss_first100": round(sum(losses[:100]) / min(100, len(losses)), 3),
            "loss_last100": round(sum(losses[-100:]) / min(100, len(losses)), 3),
            # The loss curve: the mean over each run of `every` steps.
            "loss_every": every, "loss_curve": [round(sum(losses[i:i + every]) / len(losses[i:i + every]), 3)
                                                for i in range(0, len(losses), every)]}
    (out / "train_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def run_name(mode: str, mark_every: int = 1) -> str:
    """``spans``, ``rewrite``, or ``spans_every3`` for a span model whose prompts mark every third position."""
    return mode if mark_every == 1 else f"{mode}_every{mark_every}"


def token_ratio(tok, fmt: str = "compact") -> dict:
    """Span target tokens (in format ``fmt``) over rewrite tokens, per set and averaged over the four."""
    ratio = {}
    for name, split in RATIO_SETS:
        _, report = make_examples(load_edit_set(name, split).pairs(), "gec", tok, fmt=fmt)
        ratio[f"{name}/{split}"] = round(report.token_ratio, 4)
    ratio["mean"] = round(sum(ratio.values()) / len(RATIO_SETS), 4)
    return ratio


def evaluate(args):
    torch.set_num_threads(args.threads)
    # The two main models, any other trained models asked for (e.g. spans_every3), and with
    # --instruct the untuned base model asked through its chat template.
    extra = args.models.split(",") if args.models else []
    spans = args.span_model  # the span model the goal judges
    names = [spans, "rewrite"] + [m for m in extra if m not in (spans, "rewrite")]
    models = {name: load_model(str(Path(args.ckpt) / name)) for name in names}
    info = {name: json.loads((Path(args.ckpt) / name / "train_info.json").read_text()) for name in names}
    modes = {name: {"mark_every": info[name].get("mark_every", 1), "chat": info[name].get("chat", False),
                    **DECODE[info[name].get("mode", "spans")], "max_new_tokens": args.max_new_tokens}
             for name in names}
    if args.instruct:
        models["instruct"] = load_model(info[spans].get("model", str(MODEL)))
        modes["instruct"] = {"mark_every": 1, "chat": True, "target": "rewrite", "instruct": True,
                             "max_new_tokens": args.instruct_max_new_tokens}
    guard = None if args.no_loop_ban else tuple(int(x) for x in args.loop_ban.split(","))
    fmt = FORMAT[info[spans].get("mode", "spans")]
    figures: dict = {"span_model": spans, "token_ratio": token_ratio(models[spans][1], fmt)}
    print(f"{fmt} span target / rewrite tokens: {figures['token_ratio']}", flush=True)
    kept = []
    for name, es in eval_sets(args.limit).items():
        if args.sets and name not in args.sets.split(","):
            continue
        # SARI rewards deleting source n-grams the references drop: a rule that keeps each source's
        # first two thirds shows how far deletion alone goes (scored on every set alike).
        truncated = [" ".join(s.split()[: -(-2 * len(s.split()) // 3)]) for s in es.sources]
        row: dict = {"task": es.task, "sources": len(es.sources),
                     "copy": {**score(es, es.sources), "wall_s": 0.0, "tokens_per_example": 0.0},
                     "truncate": {**score(es, truncated), "wall_s": 0.0, "tokens_per_example": 0.0}}
        outs = {}
        sub = EditSet(es.name, es.task, es.sources[: args.batch1_limit], es.references[: args.batch1_limit])
        for mode, (model, tok) in models.items():
            kw = {"task": es.task, "batch_size": 16, "loop_ban": guard, "drop_finished": args.decoder == "drop",
                  "grammar": not args.no_grammar, **modes[mode]}
            outs[mode], row[mode] = decode(model, tok, es, kw)
            print(f"  {name} {mode}: {json.dumps(row[mode])}", flush=True)
            if args.prompt_lookup and mode in (spans, "rewrite"):
                # One source at a time, plain and with prompt lookup, on the first --batch1-limit
                # sources (and batched on the same sources, when they are fewer than the set).
                runs = {"b1": {"batch_size": 1}, "b1_lookup": {"batch_size": 1, "prompt_lookup": args.prompt_lookup}}
                if len(sub.sources) < len(es.sources):
                    runs = {"b16": {}, **runs}
                for label, extra in runs.items():
                    got, row[f"{mode}_{label}"] = decode(model, tok, sub, {**kw, **extra})
                    if label == "b1":
                        plain = [r.raw for r in got]
                    if label == "b1_lookup":
                        row[f"{mode}_{label}"]["same_as_b1"] = round(
                            sum(r.raw == p for r, p in zip(got, plain, strict=True)) / len(plain), 4)
                    print(f"  {name} {mode} {label}: {json.dumps(row[f'{mode}_{label}'])}", flush=True)
        if args.prompt_lookup:
            row["methods"] = method_table(row, spans, sub)
            print(f"  {name} methods: {json.dumps(row['methods'])}", flush=True)
        row["time_vs_rewrite"] = round(row[spans]["wall_s"] / row["rewrite"]["wall_s"], 3)
        row["tokens_vs_rewrite"] = round(row[spans]["generated_tokens"] / row["rewrite"]["generated_tokens"], 3)
        for other in names[2:]:
            row[f"{other}_time_vs_rewrite"] = round(row[other]["wall_s"] / row["rewrite"]["wall_s"], 3)
        metric = next(k for k in row[spans] if k in ("gleu", "sari", "bleu"))
        row["goal"] = {"spans_within_1_of_rewrite": row[spans][metric] >= row["rewrite"][metric] - 1,
                       "time_at_most_half": row["time_vs_rewrite"] <= 0.5,
                       "tokens_at_most_half": row["tokens_vs_rewrite"] <= 0.5}
        if name.startswith("jfleg"):
            row["goal"].update({f"{m}_beats_copy": row[k][metric] > row["copy"][metric]
                                for m, k in (("spans", spans), ("rewrite", "rewrite"))})
        figures[name] = row
        print(f"{name:16s} {json.dumps(row)}", flush=True)
        for i in range(len(es.sources)):
            kept.append({"set": name, "i": i, "source": es.sources[i],
                         **{f"{m}_raw": outs[m][i].raw for m in models if m != "rewrite"},
                         **{m: outs[m][i].target for m in models}})
    sets = [k for k in figures if k not in ("token_ratio", "span_model")]
    figures["time_vs_rewrite_all"] = round(sum(figures[k][spans]["wall_s"] for k in sets)
                                           / sum(figures[k]["rewrite"]["wall_s"] for k in sets), 3)
    figures["tokens_vs_rewrite_all"] = round(sum(figures[k][spans]["generated_tokens"] for k in sets)
                                             / sum(figures[k]["rewrite"]["generated_tokens"] for k in sets), 3)
    figures["goal_met"] = all(all(figures[k]["goal"].values()) for k in sets)
    figures["train"] = info
    decoder = ("finished rows leave the batch (steer.generation.greedy_drop_finished)" if args.decoder == "drop"
               else "transformers' generate (every row runs until the batch's longest answer ends)")
    figures["config"] = {"eval_cap": EVAL_CAP,
                         "decoding": f"greedy, batch 16, sources sorted by prompt length, {decoder}",
                         "max_new_tokens": args.max_new_tokens, "threads": args.threads,
                         "loop_ban": guard, "span_grammar": not args.no_grammar,
                         "instruct_max_new_tokens": args.instruct_max_new_tokens
                         if args.instruct else None,
                         "prompt_lookup": args.prompt_lookup, "batch1_limit": args.batch1_limit}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(figures, indent=1) + "\n")
    with gzip.open(out / f"{args.name}_outputs.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(k) + "\n" for k in kept)
    print(json.dumps(figures))


def method_table(row: dict, spans: str, same: EditSet) -> dict:
    """Every way of running the two models on the same sources ``same`` (the batch-1 runs' sources):
    the quality metric, generated ``tokens`` and ``seconds`` of ``copy``, ``rewrite`` and ``anchored``
    (batched, 16 a call), ``*_b1`` (one source a call) and ``*_lookup`` (one source a call with
    prompt lookup), and the span model's fastest time over the rewrite model's fastest."""
    metric = next(k for k in row["rewrite"] if k in ("gleu", "sari", "bleu"))
    batched = "_b16" if f"{spans}_b16" in row else ""  # batched again on the subset where it is smaller

    def figures(key: str) -> dict:
        return {metric: row[key][metric], "tokens": row[key]["generated_tokens"], "seconds": row[key]["wall_s"]}

    table = {"sources": len(same.sources), "copy": {**score(same, same.sources), "tokens": 0, "seconds": 0.0}}
    for name, key in (("rewrite", "rewrite"), ("anchored", spans)):
        table[name], table[f"{name}_b1"] = figures(key + batched), figures(f"{key}_b1")
        table[f"{name}_lookup"] = figures(f"{key}_b1_lookup")
    fastest = {name: min(table[k]["seconds"] for k in (name, f"{name}_b1", f"{name}_lookup"))
               for name in ("rewrite", "anchored")}
    table["anchored_time_vs_fastest_rewrite"] = round(fastest["anchored"] / fastest["rewrite"], 3)
    # The converged study's goal (JFLEG and ASSET): quality within a point of rewriting, above copying on
    # grammar correction, and at most 0.7x the rewrite model's fastest time.
    table["goal"] = {"within_1_of_rewrite": table["anchored"][metric] >= table["rewrite"][metric] - 1,
                     "time_at_most_0.7x": table["anchored_time_vs_fastest_rewrite"] <= 0.7}
    if metric == "gleu":
        table["goal"]["above_copy"] = table["anchored"][metric] > table["copy"][metric]
    return table


def decode(model, tok, es: EditSet, kw: dict) -> tuple[list, dict]:
    """Edit ``es``'s sources (after a warm-up of the same batch shape) and score the answers."""
    edit_generate(model, tok, es.sources[: kw["batch_size"]], **{**kw, "max_new_tokens": 8})
    res, secs = edit_generate(model, tok, es.sources, **kw)
    hyps = [r.target for r in res]
    return res, {**score(es, hyps), "wall_s": round(secs, 2),
                 "tokens_per_example": round(sum(r.n_tokens for r in res) / len(res), 2),
                 "generated_tokens": sum(r.n_tokens for r in res),
                 "valid": round(sum(r.valid for r in res) / len(res), 3),
                 "changed": round(sum(h != normalize(s) for h, s in zip(hyps, es.sources, strict=True)) / len(res), 3)}


def rescore(args):
    """Re-read the kept raw anchored answers of an eval (no decoding) under other parse rules, and score them."""
    from steer.edits.anchored import parse_anchored
    from steer.edits.format import SpanFormatError
    from steer.edits.spans import apply_spans

    rows = [json.loads(line) for line in gzip.open(Path(args.out) / f"{args.name}_outputs.jsonl.gz", "rt")]
    model = args.span_model
    rules = {"as decoded": {}, "skip_bad": {"skip_bad": True}, "drop_echoes": {"drop_echoes": True},
             "skip_bad+drop_echoes": {"skip_bad": True, "drop_echoes": True}}
    figures: dict = {"outputs": f"{args.name}_outputs.jsonl.gz", "span_model": model}
    for name, es in eval_sets(args.limit).items():
        got = {r["i"]: r for r in rows if r["set"] == name}
        if len(got) != len(es.sources) or any(got[i]["source"] != s for i, s in enumerate(es.sources)):
            raise ValueError(f"{args.name}: the outputs of {name} do not match its sources")
        row = {}
        for rule, kw in rules.items():
            hyps = []
            for i, src in enumerate(es.sources):
                raw = got[i][f"{model}_raw"]
                try:  # an answer cut by the budget is kept as decoded (the source unchanged)
                    hyps.append(apply_spans(src, parse_anchored(raw, src, **kw)) if rule != "as decoded"
                                else got[i][model])
                except SpanFormatError:
                    hyps.append(normalize(src))
            row[rule] = {**score(es, hyps), "changed": round(sum(h != normalize(s) for h, s in
                                                                  zip(hyps, es.sources, strict=True)) / len(hyps), 3)}
        row["copy"], row["rewrite"] = score(es, es.sources), score(es, [got[i]["rewrite"] for i in range(len(got))])
        figures[name] = row
        print(f"{name:16s} {json.dumps(row)}", flush=True)
    (Path(args.out) / f"{args.name}_rescore.json").write_text(json.dumps(figures, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--mode", choices=tuple(FORMAT), required=True,
                    help="spans: compact span lists; anchored: edits quoting the words they replace; rewrite")
    tr.add_argument("--model", default=str(MODEL))
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--warmup", type=int, default=100)
    tr.add_argument("--mark-every", type=int, default=1, help="spans: mark every m-th position in the prompt")
    tr.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    tr.add_argument("--patience", type=int, default=3,
                    help="stop after this many evaluations without a new best held-out loss (0: train --steps)")
    tr.add_argument("--min-delta", type=float, default=0.0, help="a new best must be lower by this share")
    tr.add_argument("--checkpoint-every", type=int, default=50,
                    help="steps between checkpoints (CKPT/NAME.checkpoint); the same command resumes there")
    tr.add_argument("--bf16", action="store_true", help="passes in bfloat16 under autocast (finetune's bf16)")
    tr.add_argument("--only", default=None, help=f"train on these groups only (comma-separated, of {list(MIX)})")
    ev = sub.add_parser("eval")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.add_argument("--instruct", action="store_true",
                    help="also ask the untuned base model (the trained models' --model) through its chat template")
    ev.add_argument("--instruct-max-new-tokens", type=int, default=96)
    ev.add_argument("--no-loop-ban", action="store_true", help="decode without the repetition guard")
    ev.add_argument("--loop-ban", default="4,2", help="the repetition guard N,R: no N-gram of an answer R times")
    ev.add_argument("--no-grammar", action="store_true",
                    help="decode the span models unconstrained (by default under their grammar)")
    ev.add_argument("--span-model", default="spans",
                    help="the trained span model the goal compares with rewrite (e.g. anchored)")
    ev.add_argument("--decoder", choices=("drop", "generate"), default="drop",
                    help="drop: finished rows leave the batch; generate: transformers' generate")
    ev.add_argument("--prompt-lookup", type=int, default=None, metavar="K",
                    help="also time the span model and rewrite one source at a time, plain and with prompt-lookup "
                         "drafts of K tokens")
    ev.add_argument("--batch1-limit", type=int, default=None,
                    help="with --prompt-lookup: the one-at-a-time runs on this many sources per set (and the "
                         "batched run again on the same sources)")
    ev.add_argument("--models", default=None, help="more trained models to evaluate (e.g. spans_every3)")
    ev.add_argument("--sets", default=None, help="evaluate on these sets only (comma-separated)")
    ev.add_argument("--name", default="finetune", help="output name: NAME.json and NAME_outputs.jsonl.gz")
    ev.add_argument("--limit", type=int, default=None, help="at most this many sources per set (a quick check)")
    ev.add_argument("--out", default=str(ROOT / "docs" / "results" / "edit_spans"))
    for p in (tr, ev):
        p.add_argument("--ckpt", default=str(CKPT))
        p.add_argument("--threads", type=int, default=1)
    rs = sub.add_parser("rescore", help="re-read an anchored eval's kept answers with skip_bad / drop_echoes")
    rs.add_argument("--name", required=True, help="the eval's output name (NAME_outputs.jsonl.gz)")
    rs.add_argument("--span-model", default="anchored")
    rs.add_argument("--limit", type=int, default=None)
    rs.add_argument("--out", default=str(ROOT / "docs" / "results" / "edit_spans" / "smollm2"))
    args = ap.parse_args()
    {"train": train, "eval": evaluate, "rescore": rescore}[args.cmd](args)


if __name__ == "__main__":
    main()
