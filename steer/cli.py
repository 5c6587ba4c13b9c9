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
    _decode_args(p)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"steer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
