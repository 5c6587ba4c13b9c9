"""`steer tune`: the method and strength for a model and corpus, chosen on development prompts, validated on others."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from steer.cli.common import MODEL_HELP, add_command, corpus_help

EXAMPLE = ("example:\n  steer tune --model ../shared/data/models/smollm2-135m-instruct --corpus cnn_highlights "
           "--out runs/tune-cnn\n  steer generate --model ../shared/data/models/smollm2-135m-instruct "
           "--spec runs/tune-cnn/spec.json \"The news spread quickly through\"")


def _default(name: str):
    from steer.tune import TuneConfig

    f = next(f for f in fields(TuneConfig) if f.name == name)
    return f.default


def register(sub) -> None:
    from steer.methods import REFERENCE, listed_names
    from steer.models import default_model

    p = add_command(sub, "tune", "search methods and knobs on development prompts, validate the choice on test "
                    "prompts, write its spec", cmd_tune, EXAMPLE)
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--corpus", required=True, help=corpus_help())
    p.add_argument("--background", default=_default("background"),
                   help="ordinary text the contrastive and activation methods measure against")
    p.add_argument("--method", action="append", choices=(REFERENCE, *listed_names()), metavar="METHOD",
                   help="a method to search (repeat; default: " + ", ".join(_default("methods")) + ")")
    p.add_argument("--decoding", choices=("sample", "greedy"), default=_default("decoding"), help="decoding")
    p.add_argument("--max-new-tokens", type=int, default=_default("max_new_tokens"), help="tokens per continuation")
    p.add_argument("--prompts", default=None, type=Path,
                   help="one prompt a line, at least 32, split alternately into development and test prompts "
                        "(default: the 127 built-in prompts)")
    p.add_argument("--budget-minutes", type=float, default=_default("budget_minutes"),
                   help="the search starts no cell that would leave the validation short of time")
    p.add_argument("--grid", default=None, type=Path, metavar="RUN",
                   help="a sweep's run folder of the same model and corpus: regret against its best holding cell")
    p.add_argument("--fluency-judge", default=None, metavar="MODEL",
                   help="also score cross_ppl under this model, of another family than --model")
    from steer.cli.flags import add_flags
    from steer.matched import Constraints

    add_flags(p, Constraints)
    p.add_argument("--out", required=True, type=Path,
                   help="run folder: spec.json, validation.json, report.md, cells and texts (resumed if it holds "
                        "the same run)")


def cmd_tune(args) -> int:
    from steer.cli.flags import options
    from steer.matched import Constraints
    from steer.sweep import read_prompts
    from steer.tune import TuneConfig, tune

    kw = {"methods": tuple(args.method)} if args.method else {}
    if args.prompts is not None:
        kw["prompts"] = tuple(read_prompts(args.prompts))
    config = TuneConfig(model=args.model, corpus=args.corpus, background=args.background, decoding=args.decoding,
                        max_new_tokens=args.max_new_tokens, budget_minutes=args.budget_minutes,
                        fluency_judge=args.fluency_judge, constraints=options(args, Constraints), **kw)
    dev, test = config.split()
    print(f"tuning {', '.join(config.methods)} for {args.corpus} on {len(dev)} development prompts, validating on "
          f"{len(test)} others; budget {config.budget_minutes:g} minutes", flush=True)
    result = tune(config, args.out, progress=lambda msg: print(msg, flush=True), grid=args.grid)
    v = result.validation
    print(f"\nchosen: {json.dumps(result.spec.to_dict())}")
    print(f"on the test prompts: holds {v['holds']}" + (f" (binding: {v['binding']})" if v["binding"] else "")
          + f"; hit {v['hit']:.3f} (unsteered {v['hit_unsteered']:.3f}, prompting {v['vs_prompt']['prompt_hit']:.3f}),"
          f" base perplexity {v['base_ppl_ratio']:.2f}x, distinct-2 {v['distinct_2_ratio']:.2f}x, degenerate "
          f"{v['degenerate_rate']:.2f} (unsteered {v['degenerate_rate_unsteered']:.2f}); {v['minutes']:.1f} minutes")
    if v["search_binds"]:
        print(f"no setting held every constraint on the development prompts; what binds: {v['search_binds']}")
    print(f"-> {args.out / 'spec.json'}, {args.out / 'report.md'}, {args.out / 'validation.json'}")
    return 0
