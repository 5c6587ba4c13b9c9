"""The `steer` command line: argparse front door over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steer.generation import DECODINGS, DecodeConfig


def _prior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--order", type=int, default=3, help="highest n-gram order N (default 3)")
    p.add_argument("--smoothing", choices=["add_alpha", "kneser_ney"], default="add_alpha",
                   help="estimate of the prior (default add_alpha: the seed paper's weighted orders)")
    p.add_argument("--mode", choices=["logsum", "mixture"], default="logsum",
                   help="how add-alpha orders combine (default logsum, as in the seed paper)")
    p.add_argument("--weights", default=None, help="comma-separated per-order weights b_1..b_N")
    p.add_argument("--alpha", type=float, default=0.01, help="add-alpha pseudo-count")
    p.add_argument("--discount", type=float, default=0.75, help="Kneser-Ney discount")


def _prior_options(args) -> dict:
    if args.smoothing == "kneser_ney":
        return dict(smoothing="kneser_ney", discount=args.discount)
    opts = dict(smoothing="add_alpha", mode=args.mode, alpha=args.alpha)
    if args.weights:
        opts["weights"] = tuple(float(w) for w in args.weights.split(","))
    return opts


def _decode_args(p: argparse.ArgumentParser, max_new: int = 40) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new)
    p.add_argument("--decoding", choices=DECODINGS, default="greedy")
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def _decode_config(args) -> DecodeConfig:
    return DecodeConfig(max_new_tokens=args.max_new_tokens, decoding=args.decoding, num_beams=args.num_beams,
                        temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def cmd_build_table(args) -> int:
    from transformers import AutoTokenizer

    from ngram import NGramTable
    from steer.corpora import load_corpus

    corpus = load_corpus(args.corpus, holdout=args.holdout)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    table = NGramTable.from_texts(corpus.train, tokenizer, args.order)
    table.save(args.out)
    print(f"{table!r} -> {args.out}")
    print(f"n-gram types per order: {table.stats['ngram_types']}")
    return 0


def cmd_generate(args) -> int:
    from steer.corpora import load_corpus
    from steer.generation import continue_prompts
    from steer.models import load_model
    from steer.style import NGramStylePrior
    from steer.tables import table_for

    model, tokenizer = load_model(args.model)
    corpus = load_corpus(args.corpus)
    table = table_for(corpus, tokenizer, args.order)
    prior = NGramStylePrior(table, args.lam, tokenizer, **_prior_options(args))
    config = _decode_config(args)
    prompt_ids, plain = continue_prompts(model, tokenizer, [args.prompt], (), config)
    _, steered = continue_prompts(model, tokenizer, [args.prompt], [prior], config)

    def text(cont):
        return tokenizer.decode(prompt_ids[0] + cont, skip_special_tokens=True)

    print(f"model: {args.model}   corpus: {args.corpus} ({table.stats['n_tokens']:,} tokens, "
          f"order {table.order})   lam: {args.lam}")
    print(f"\n[unsteered]\n{text(plain[0])}")
    print(f"\n[steered, lam={args.lam}]\n{text(steered[0])}")
    return 0


def _print_summary(rows: list[dict]) -> None:
    head = f"{'corpus':18s} {'method':12s} {'lam':>5s} {'style_ppl':>10s} {'Δstyle':>8s} {'base_ppl':>9s} " \
           f"{'Δbase':>8s} {'JS':>6s} {'ovl3':>6s} {'dist2':>6s} {'ms/tok':>7s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['corpus'][:18]:18s} {r['method']:12s} {r['lam']:5.3g} {r['style_ppl']:10.1f} "
              f"{r['style_ppl_rel']:+8.1%} {r['base_ppl']:9.1f} {r['base_ppl_rel']:+8.1%} {r['js_div']:6.3f} "
              f"{r['overlap_3']:6.3f} {r['distinct_2']:6.3f} {r['infer_ms_per_token']:7.2f}")


def _run_sweep(config, out) -> int:
    from tqdm import tqdm

    from steer.sweep import run_sweep

    bar = tqdm(total=len(config.cells()), desc="sweep", unit="cell")

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    def lora_progress(step: int, loss: float) -> None:
        bar.set_postfix_str(f"LoRA step {step}/{config.lora_config().steps} loss {loss:.3f}")

    rows = run_sweep(config, out, progress=progress, lora_progress=lora_progress)
    bar.close()
    _print_summary(rows)
    print(f"\nwrote {out}/results.csv, results.json, samples.jsonl, config.json"
          + (", metrics_vs_lambda.png" if (Path(out) / "metrics_vs_lambda.png").exists() else
             " (install steer[plot] for metrics_vs_lambda.png)"))
    return 0


def cmd_sweep(args) -> int:
    from steer.sweep import SweepConfig, builtin_prompts, parse_lambdas, read_prompts

    prompts = read_prompts(args.prompts) if args.prompts else builtin_prompts()
    config = SweepConfig(
        model=args.model, corpora=args.corpus, lambdas=parse_lambdas(args.lambdas), prompts=prompts,
        max_new_tokens=args.max_new_tokens, samples=args.samples, seed=args.seed, decoding=args.decoding,
        num_beams=args.num_beams, temperature=args.temperature, top_p=args.top_p, order=args.order,
        prior=_prior_options(args), baselines=args.baseline or [],
        lora=dict(steps=args.lora_steps, rank=args.lora_rank),
    )
    return _run_sweep(config, args.out)


def cmd_train_lora(args) -> int:
    from tqdm import tqdm

    from steer.baselines.lora import LoraTrainConfig, train_lora
    from steer.corpora import load_corpus
    from steer.models import load_model

    config = LoraTrainConfig(rank=args.rank, alpha=args.alpha, steps=args.steps, lr=args.lr,
                             batch_size=args.batch_size, window=args.window, seed=args.seed,
                             target_modules=args.target_modules.split(",") if args.target_modules else None)
    model, tokenizer = load_model(args.model)
    corpus = load_corpus(args.corpus)
    bar = tqdm(total=config.steps, desc="LoRA", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    res = train_lora(model, tokenizer, corpus.train, config, args.out, corpus_name=args.corpus,
                     model_name=args.model, progress=progress, copy_model=False)
    bar.close()
    curve = res.meta["loss_curve"]
    print(f"adapter -> {args.out}: {res.meta['trainable_params']:,} trainable parameters, "
          f"loss {curve[0]:.3f} -> {sum(curve[-10:]) / len(curve[-10:]):.3f} (mean of last 10), "
          f"{res.meta['wall_seconds']:.1f} s")
    return 0


def cmd_demo(args) -> int:
    from steer.sweep import SweepConfig

    config = SweepConfig(model=args.model, corpora=["don_quixote", "cnn_highlights"],
                         lambdas=[0.0, 0.05, 0.1, 0.2, 0.5, 1.0], max_new_tokens=32)
    return _run_sweep(config, args.out)


def cmd_train_attr(args) -> int:
    from tqdm import tqdm

    from steer.conditional.train import AttrTrainConfig, train_attribute_model
    from steer.models import load_model
    from steer.sweep import read_prompts

    prompts = read_prompts(args.prompts)
    config = AttrTrainConfig(max_new_tokens=args.max_new_tokens, samples=args.samples,
                             beams=[int(b) for b in args.beams.split(",") if b.strip()], epochs=args.epochs,
                             heldout=args.heldout, seed=args.seed)
    model, tokenizer = load_model(args.model)
    bar = tqdm(desc="generating training data", unit="chunk")

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    head, report = train_attribute_model(model, tokenizer, prompts, config, progress=progress)
    bar.close()
    head.save(args.out, model, extra=report)
    print(f"attribute model -> {args.out}: {report['n_examples']:,} prefix examples from {len(prompts)} prompts; "
          f"degenerate rate of the training decodings: {report['degenerate_rate_by_decoding']}")
    if "heldout_accuracy" in report:
        print(f"held-out prefixes: accuracy {report['heldout_accuracy']:.3f} (majority class "
              f"{report['heldout_majority_accuracy']:.3f}), AUC {report['heldout_auc']:.3f}")
    return 0


def cmd_edits_make_data(args) -> int:
    import json

    from steer.edits.make_data import make_examples, read_pairs

    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    examples, report = make_examples(read_pairs(args.pairs), args.task, tokenizer)
    with open(args.out, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    print(f"{report.n_pairs} examples -> {args.out}")
    print(f"span targets: {report.span_words:,} words = {report.word_ratio:.1%} of the full rewrites "
          f"({report.rewrite_words:,} words)")
    if report.token_ratio is not None:
        print(f"in tokens of {args.tokenizer}: {report.span_tokens:,} vs {report.rewrite_tokens:,} "
              f"= {report.token_ratio:.1%}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from steer.models import default_model

    parser = argparse.ArgumentParser(prog="steer", description="Decoding-time steering of frozen causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-table", help="count a corpus's n-grams in a tokenizer's space and save them")
    p.add_argument("--corpus", required=True, help="corpus name (see corpora/manifest.json) or path")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder or model folder")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--holdout", type=float, default=0.05, help="fraction of documents kept out")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_build_table)

    p = sub.add_parser("generate", help="one steered continuation, printed beside the unsteered one")
    p.add_argument("prompt")
    p.add_argument("--model", default=default_model(), help="model folder or hub id ($STEER_MODEL)")
    p.add_argument("--corpus", required=True, help="corpus name or path")
    p.add_argument("--lam", type=float, default=0.1, help="weight of the style prior (>= 0)")
    _prior_args(p)
    p.set_defaults(weights="0.2,0.3,0.5")
    _decode_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("sweep", help="the style study: corpora x lambdas -> metrics, samples, plot")
    p.add_argument("--model", default=default_model(), help="model folder or hub id ($STEER_MODEL)")
    p.add_argument("--corpus", action="append", required=True, help="corpus name or path (repeat)")
    p.add_argument("--lambdas", default="0,0.02,0.05,0.1,0.2,0.5,1", help="comma-separated prior weights")
    p.add_argument("--prompts", default=None, help="file with one prompt a line (default: built-in set)")
    p.add_argument("--samples", type=int, default=1, help="continuations per prompt")
    p.add_argument("--out", required=True, type=Path, help="run folder (resumed if it exists)")
    _prior_args(p)
    p.set_defaults(weights="0.2,0.3,0.5")
    p.add_argument("--baseline", action="append", choices=["prompt", "lora"],
                   help="also measure style prompting (and prior + prompt) or a LoRA adapter (repeat)")
    p.add_argument("--lora-steps", type=int, default=200, help="training steps of each LoRA baseline")
    p.add_argument("--lora-rank", type=int, default=8)
    _decode_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("train-lora", help="train a LoRA adapter on a style corpus (needs steer[lora])")
    p.add_argument("--model", default=default_model(), help="model folder or hub id ($STEER_MODEL)")
    p.add_argument("--corpus", required=True, help="corpus name or path")
    p.add_argument("--out", required=True, type=Path, help="adapter folder")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-modules", default=None, help="comma-separated module names (default: PEFT's)")
    p.set_defaults(func=cmd_train_lora)

    p = sub.add_parser("train-attr", help="train the prefix degeneracy model for conditional beam search")
    p.add_argument("--model", default=default_model(), help="model folder or hub id ($STEER_MODEL)")
    p.add_argument("--prompts", required=True, help="file with one training prompt a line")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--samples", type=int, default=2, help="sampled continuations per prompt")
    p.add_argument("--beams", default="1,5", help="beam widths whose outputs are also used")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--heldout", type=float, default=0.2, help="fraction of prompts held out for the report")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_attr)

    p = sub.add_parser("edits", help="edit-span decoding tools")
    esub = p.add_subparsers(dest="edits_command", required=True)
    q = esub.add_parser("make-data", help="instruction + source -> span target training data, with lengths")
    q.add_argument("--pairs", required=True, help="TSV (source<TAB>target) or JSONL ({source, target})")
    q.add_argument("--out", required=True, type=Path, help="output .jsonl")
    q.add_argument("--task", choices=["gec", "simplify", "paraphrase", "formality"], default="gec")
    q.add_argument("--tokenizer", default=None, help="also report lengths in this tokenizer's tokens")
    q.set_defaults(func=cmd_edits_make_data)

    p = sub.add_parser("demo", help="a small sweep (2 corpora, 6 lambdas) that runs in minutes on a CPU")
    p.add_argument("--model", default=default_model(), help="model folder or hub id ($STEER_MODEL)")
    p.add_argument("--out", default=Path("runs/demo"), type=Path)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"steer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
