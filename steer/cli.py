"""The `steer` command line: argparse front door over the library."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

from steer.generation import DECODINGS, DecodeConfig


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (unless there is none) and keeps the examples' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _corpus_help() -> str:
    from steer.catalog import style_names

    return "corpus name (" + ", ".join(style_names()) + "), a text file, or a folder of .txt files"


def _prior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--order", type=int, default=3, help="highest n-gram order N")
    p.add_argument("--smoothing", choices=["add_alpha", "kneser_ney"], default="add_alpha",
                   help="estimate of the prior (add_alpha: the seed paper's weighted orders)")
    p.add_argument("--mode", choices=["logsum", "mixture"], default="logsum",
                   help="how add-alpha orders combine (logsum, as in the seed paper, or a normalised mixture)")
    p.add_argument("--weights", default="0.2,0.3,0.5", help="comma-separated per-order weights b_1..b_N")
    p.add_argument("--alpha", type=float, default=0.01, help="add-alpha pseudo-count")
    p.add_argument("--discount", type=float, default=0.75, help="Kneser-Ney discount D")
    p.add_argument("--encoding", default="utf-8", help="text encoding of corpus files")


def _prior_options(args) -> dict:
    if args.smoothing == "kneser_ney":
        return dict(smoothing="kneser_ney", discount=args.discount)
    opts = dict(smoothing="add_alpha", mode=args.mode, alpha=args.alpha)
    if args.weights:
        try:
            opts["weights"] = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise ValueError(f"`weights` must be comma-separated numbers, got {args.weights!r}") from None
    return opts


def _decode_args(p: argparse.ArgumentParser, max_new: int = 40) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new, help="tokens generated per prompt")
    p.add_argument("--decoding", choices=DECODINGS, default="greedy", help="how continuations are decoded")
    p.add_argument("--num-beams", type=int, default=4, help="beam width (with --decoding beam)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --decoding sample)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --decoding sample)")
    p.add_argument("--seed", type=int, default=0, help="torch seed set before every generate call")
    p.add_argument("--ban-loops", default=None, metavar="N,R",
                   help="ban the R-th occurrence of any N-gram within a continuation (every method alike)")


def _loop_ban(text: str | None) -> list[int] | None:
    """'3,2' -> [3, 2]; None stays None."""
    if text is None:
        return None
    try:
        ban = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"`--ban-loops` must be N,R (two integers), got {text!r}") from None
    if len(ban) != 2:
        raise ValueError(f"`--ban-loops` must be N,R (two integers), got {text!r}")
    return ban


def _decode_config(args) -> DecodeConfig:
    return DecodeConfig(max_new_tokens=args.max_new_tokens, decoding=args.decoding, num_beams=args.num_beams,
                        temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                        loop_ban=_loop_ban(args.ban_loops))


def cmd_build_table(args) -> int:
    from ngram import NGramTable
    from steer.corpora import load_corpus
    from steer.models import load_tokenizer

    if args.memory_gb is not None:
        table = _build_table_bounded(args)
    else:
        if args.workers != 1 or args.engine != "processes" or args.address is not None:
            raise ValueError("`--workers`, `--engine` and `--address` apply to bounded-memory builds: "
                             "give --memory-gb too")
        corpus = load_corpus(args.corpus, judge_fraction=args.judge_fraction, encoding=args.encoding)
        _print_corpus(corpus)
        tokenizer = load_tokenizer(args.tokenizer)
        table = NGramTable.from_texts(corpus.steer, tokenizer, args.order)
        table.save(args.out)
    st = table.stats
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB): order {table.order}, vocabulary {table.vocab_size:,}, "
          f"{st['n_tokens']:,} tokens in {st['n_docs']:,} documents, built in {st['build_seconds']:.2f} s")
    print("n-gram types per order: " + ", ".join(f"{k}: {v:,}" for k, v in st["ngram_types"].items()))
    print(f"use it with: steer generate --table {args.out} ...  or  steer sweep --corpus {args.out} ...")
    return 0


def _build_table_bounded(args):
    from tqdm import tqdm

    from steer.tables import build_table_bounded

    if not args.out.parent.is_dir():
        raise ValueError(f"`out` folder {str(args.out.parent)!r} does not exist")
    with tqdm(desc="counting", unit="tok", unit_scale=True, file=sys.stderr) as bar:
        return build_table_bounded(args.corpus, args.tokenizer, args.order, args.out, memory_gb=args.memory_gb,
                                   workers=args.workers, judge_fraction=args.judge_fraction, encoding=args.encoding,
                                   spill_dir=args.spill_dir, progress=bar.update, engine=args.engine,
                                   address=args.address)


def _print_corpus(corpus) -> None:
    """Which files a corpus was read from, and which files of its folder were skipped."""
    shown = ", ".join(str(f) for f in corpus.files[:5]) + (f" and {len(corpus.files) - 5} more"
                                                          if len(corpus.files) > 5 else "")
    print(f"corpus {corpus.name}: {len(corpus.steer):,} documents to steer with, {len(corpus.judge):,} held out "
          f"for judging; "
          f"read {shown}", file=sys.stderr)
    if corpus.skipped:
        names = ", ".join(f.name for f in corpus.skipped[:10])
        print(f"corpus {corpus.name}: skipped {len(corpus.skipped)} file(s) that are not .txt: {names}",
              file=sys.stderr)


def _method_args(p: argparse.ArgumentParser) -> None:
    """The options of the registered methods (variants, activation steering, hidden-state optimisation)."""
    p.add_argument("--background", default="background",
                   help="corpus whose table contrastive methods subtract (ordinary text)")
    p.add_argument("--plausibility", type=float, default=None, metavar="ALPHA",
                   help="alpha of the plausible methods: the bonus applies where p >= alpha max p (default: 0.1)")
    p.add_argument("--clip", type=float, default=None, metavar="C",
                   help="clip the variants' bonus to [-C, C] (default: no clipping)")
    p.add_argument("--kl-max-lam", type=float, default=None, metavar="LAM",
                   help="strength cap of the KL-budgeted methods (default: 8)")
    p.add_argument("--centre", action="store_true",
                   help="the plausible methods centre the bonus over their support (its mean under the model "
                        "there is subtracted)")
    p.add_argument("--mask", action="store_true",
                   help="the plausible methods set the tokens outside their support to -inf")
    p.add_argument("--temper", action="store_true",
                   help="the variants divide their steered scores by a per-row temperature that brings the "
                        "distribution's entropy back to the model's (sampling only: the argmax is unchanged)")
    p.add_argument("--fresh", type=int, default=None, metavar="N",
                   help="the variants give no positive bonus to a token that would repeat an N-gram the text "
                        "already holds (the style is rewarded once per N-gram; default: off)")
    p.add_argument("--activation-layers", default=None, metavar="L1,L2",
                   help="decoder layers (0-based) the activation methods add their style vector at "
                        "(default: one, at 72 %% of the depth: layer 21 of 30)")
    p.add_argument("--activation-scale", type=float, default=None, metavar="S",
                   help="the style vector's scale that activation+contrastive+plausible holds fixed (default: 0.125)")
    p.add_argument("--activation-position", choices=["mean", "last"], default=None,
                   help="style vectors from activations averaged over tokens, or at each chunk's last token "
                        "(default: mean)")
    p.add_argument("--activation-raw", action="store_true",
                   help="use the style vector as measured instead of rescaled to the residual stream's typical "
                        "norm (then the scale is in the activations' own units)")
    p.add_argument("--hso-segment", type=int, default=None, metavar="N",
                   help="tokens per segment of the hso methods' optimisation of the exemplars' cache (default: 64)")
    p.add_argument("--hso-lr", type=float, default=None, metavar="LR",
                   help="learning rate (Adam) of the hso methods (default: 0.03)")
    p.add_argument("--hso-steps", type=int, default=None, metavar="K",
                   help="steps per segment that hso+contrastive+plausible holds fixed (default: 2)")


def cmd_generate(args) -> int:
    from steer.generation import continue_prompts
    from steer.methods import get_method
    from steer.models import load_model
    from steer.sweep import SweepConfig, method_setup

    # Everything that does not need the model is checked before it loads.
    method = get_method(args.method)
    if (args.corpus is None) == (args.table is None):
        raise ValueError("give exactly one of --corpus (text) and --table (a file from `steer build-table`)")
    if args.table is not None and not Path(args.table).exists():
        raise FileNotFoundError(f"`table` file {str(args.table)!r} not found")
    knob = _generate_knob(args, method)
    source = args.corpus if args.corpus is not None else str(args.table)
    uses_prompt = args.method in ("prompt", "prior+prompt")
    config = SweepConfig(
        model=args.model, corpora=[source], lambdas=[knob] if args.method.startswith("prior") else [0.0],
        prompts=[args.prompt], max_new_tokens=args.max_new_tokens, seed=args.seed, decoding=args.decoding,
        loop_ban=_loop_ban(args.ban_loops), num_beams=args.num_beams, temperature=args.temperature,
        top_p=args.top_p, order=args.order, prior=_prior_options(args), encoding=args.encoding, judges=[],
        baselines=["prompt"] if uses_prompt else [],
        methods=[] if args.method in ("prior", "prompt", "prior+prompt") else [args.method],
        background=args.background, guided=_guided_options(args), activation=_activation_options(args),
        hso=_hso_options(args))
    corpus = None
    if args.corpus is not None:  # read once: shown here, then handed to the method
        from steer.corpora import load_corpus

        corpus = load_corpus(args.corpus, judge_fraction=config.judge_fraction, encoding=config.encoding)
        _print_corpus(corpus)
    model, tokenizer = load_model(args.model)
    setup = method_setup(config, args.method, knob, model, tokenizer, source=corpus)
    decode = config.decode(0)
    prompt_ids, plain = continue_prompts(model, tokenizer, [args.prompt], (), decode)
    _, steered = setup.continue_prompts(model, tokenizer, [args.prompt], decode)

    def text(cont):  # the user's prompt and the continuation: a method's prefix is not shown
        return tokenizer.decode(prompt_ids[0] + cont, skip_special_tokens=True)

    label = f"{args.method}" + (f", {method.knob or 'knob'}={knob:g}" if method.knob else "")
    print(f"model: {args.model}   corpus: {source}   method: {label}")
    print(f"\n[unsteered]\n{text(plain[0])}")
    print(f"\n[steered, {label}]\n{text(steered[0])}")
    return 0


def _generate_knob(args, method) -> float:
    """The knob of `steer generate`: --knob, or --lam for the paper's prior; methods without a knob take 0."""
    from steer.style import check_lam

    if not method.knob:
        if args.knob is not None:
            raise ValueError(f"method {args.method!r} has no knob; drop --knob {args.knob:g}")
        return 0.0
    if args.knob is None:
        if args.method.startswith("prior"):
            return check_lam(args.lam)
        example = method.knobs[len(method.knobs) // 2] if method.knobs else 1.0
        raise ValueError(f"method {args.method!r} needs --knob (its {method.knob}; e.g. --knob {example:g})")
    if args.method.startswith("prior"):
        return check_lam(args.knob)
    if not math.isfinite(args.knob) or args.knob < 0:
        raise ValueError(f"`knob` must be a finite number >= 0, got {args.knob!r}")
    return args.knob


def _pct(x: float) -> str:
    return f"{x:+8.1%}" if x == x else f"{'n/a':>8s}"


def _num(x: float, fmt: str, width: int) -> str:
    return f"{x:{width}{fmt}}" if x == x else f"{'n/a':>{width}s}"


def _print_summary(rows: list[dict]) -> None:
    mw = max([12, *(len(r["method"]) for r in rows)])  # method column: as wide as the longest name
    head = (f"{'corpus':18s} {'method':{mw}s} {'lam':>5s} {'hit':>5s} {'[95% CI]':>13s} {'held_ppl':>9s} "
            f"{'base_ppl':>9s} {'Δbase':>8s} {'degen':>6s} {'dist2':>6s} {'sBLEU':>6s} {'JS':>6s} {'ms/tok':>7s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ci = (f"[{r['judge_hit_lo']:.2f}, {r['judge_hit_hi']:.2f}]" if r["judge_hit_lo"] == r["judge_hit_lo"]
              else "")
        print(f"{r['corpus'][:18]:18s} {r['method']:{mw}s} {r['lam']:5.3g} {_num(r['judge_hit'], '.2f', 5)} "
              f"{ci:>13s} {_num(r['heldout_style_ppl'], '.1f', 9)} {_num(r['base_ppl'], '.1f', 9)} "
              f"{_pct(r['base_ppl_rel'])} {_num(r['degenerate_rate'], '.2f', 6)} {_num(r['distinct_2'], '.3f', 6)} "
              f"{_num(r['self_bleu'], '.3f', 6)} {_num(r['js_div'], '.3f', 6)} "
              f"{_num(r['infer_ms_per_token'], '.2f', 7)}")
    print("hit: share of continuations the held-out style classifier assigns to the corpus, with its 95 % "
          "bootstrap interval over prompts; held_ppl: word perplexity under Kneser-Ney of the corpus's judge "
          "split (never seen by any method); base_ppl: under the unsteered model (fluency), Δ vs λ = 0; degen: "
          "share of degenerate continuations (empty, short, looping, copying the prompt); dist2: distinct word "
          "bigrams / all; sBLEU: self-BLEU across the cell (high = alike); JS: Jensen-Shannon divergence "
          "steered vs unsteered, bits; ms/tok: generation time per token. matched.csv compares the prior with "
          "each baseline at equal base_ppl.")


def _print_judge_notes(out) -> None:
    """Say why a judge's columns are empty (a classifier that refused to judge), from the run's judge.json."""

    path = Path(out) / "judge.json"
    if not path.exists():
        return
    clf = json.loads(path.read_text(encoding="utf-8")).get("classifier") or {}
    if "refused" in clf:
        print(f"\nnote: the style classifier's columns (hit, judge_p_target) are empty: {clf['refused']}. "
              f"To get them, {clf['how_to_get_it']}. The other judges scored every cell.")


def _print_holding(out) -> None:
    """Where each method holds the default constraints (constraints.csv), as widest knob ranges."""
    import csv

    from steer.matched import Constraints, widest_holding_range

    path = Path(out) / "constraints.csv"
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        table = [dict(r, knob=float(r["knob"]), holds=r["holds"] == "True") for r in csv.DictReader(f)]
    if not table:
        return
    c = Constraints()
    print(f"\nconstraints (constraints.csv): hit >= unsteered + {c.min_hit_gain:g}, base_ppl <= {c.max_ppl_ratio:g}x, "
          f"dist2 >= {c.min_distinct2_ratio:g}x, degenerate <= unsteered + {c.max_extra_degenerate:g}")
    for corpus, method in dict.fromkeys((r["corpus"], r["method"]) for r in table):
        held = widest_holding_range(table, corpus, method)
        where = "nowhere" if held is None else f"over knob {held[0]:g}-{held[1]:g} ({held[2]:.3g}x wide)"
        print(f"  {corpus} {method}: holds {where}")
    if (Path(out) / "holding.csv").exists():
        print("  holding.csv: each holding cell against each baseline, paired over prompts")


def _run_sweep(config, out) -> int:
    from tqdm import tqdm

    from steer.sweep import run_sweep

    total = len(config.cells())
    bar = tqdm(total=total, desc="sweep", unit="cell")

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    def lora_progress(step: int, loss: float) -> None:
        bar.set_postfix_str(f"LoRA step {step}/{config.lora_config().steps} loss {loss:.3f}")

    try:
        rows = run_sweep(config, out, progress=progress, lora_progress=lora_progress)
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(f"interrupted after {bar.n}/{total} cells; rerun the same command to resume") from None
    bar.close()
    _print_summary(rows)
    _print_judge_notes(out)
    _print_holding(out)
    print(f"\nwrote {out}/results.csv, results.json, matched.csv, samples.jsonl, config.json, judge.json"
          + (", metrics_vs_lambda.png, pareto.png" if (Path(out) / "metrics_vs_lambda.png").exists() else
             " (install steer[plot] for the figures)"))
    return 0


def _parse_knobs(items: list[str]) -> dict:
    """["contrastive=0.5,1", ...] -> {"contrastive": [0.5, 1.0]}."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            out[name.strip()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"`knob` must look like METHOD=V1,V2, got {item!r}") from None
        if not sep or not out[name.strip()]:
            raise ValueError(f"`knob` must look like METHOD=V1,V2, got {item!r}")
    return out


def _guided_options(args) -> dict:
    """The variants' options given on the command line (those left out keep their defaults)."""
    given = {"plausibility": args.plausibility, "clip": args.clip, "kl_max_lam": args.kl_max_lam,
             "centre": True if args.centre else None, "mask": True if args.mask else None,
             "temper": True if args.temper else None, "fresh": args.fresh}
    return {k: v for k, v in given.items() if v is not None}


def _activation_options(args) -> dict:
    """Activation steering's options given on the command line (those left out keep their defaults)."""
    given = {"scale": args.activation_scale, "position": args.activation_position,
             "normalise": False if args.activation_raw else None}
    if args.activation_layers is not None:
        try:
            given["layers"] = [int(v) for v in args.activation_layers.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"`activation-layers` must be comma-separated ints, got {args.activation_layers!r}") \
                from None
    return {k: v for k, v in given.items() if v is not None}


def _hso_options(args) -> dict:
    """Hidden-state optimisation's options given on the command line (those left out keep their defaults)."""
    given = {"segment": args.hso_segment, "lr": args.hso_lr, "steps": args.hso_steps}
    return {k: v for k, v in given.items() if v is not None}


class Interrupted(Exception):
    """Ctrl-C, with what was kept and how to go on."""


def cmd_sweep(args) -> int:
    from steer.sweep import SweepConfig, builtin_prompts, parse_lambdas, read_prompts

    prompts = read_prompts(args.prompts) if args.prompts else builtin_prompts()
    config = SweepConfig(
        model=args.model, corpora=args.corpus, lambdas=parse_lambdas(args.lambdas), prompts=prompts,
        max_new_tokens=args.max_new_tokens, samples=args.samples, seed=args.seed, decoding=args.decoding,
        loop_ban=_loop_ban(args.ban_loops),
        num_beams=args.num_beams, temperature=args.temperature, top_p=args.top_p, order=args.order,
        prior=_prior_options(args), baselines=args.baseline or [], encoding=args.encoding,
        judge_fraction=args.judge_fraction, judges=[j for j in args.judges.split(",") if j.strip()],
        methods=args.method or [], knobs=_parse_knobs(args.knob or []), background=args.background,
        guided=_guided_options(args), activation=_activation_options(args), hso=_hso_options(args),
        lora=dict(steps=args.lora_steps, rank=args.lora_rank, window=args.lora_window, eval_every=args.lora_eval_every),
    )
    return _run_sweep(config, args.out)


def cmd_report(args) -> int:
    from steer.sweep import report_sweep

    rows, done, total = report_sweep(args.out)
    _print_summary(rows)
    _print_holding(args.out)
    state = "finished" if done == total else f"{total - done} still to run (rerun the sweep's command to resume)"
    print(f"\n{done}/{total} cells: {state}; wrote {args.out}/results.csv, results.json, matched.csv and the figures")
    return 0


def cmd_train_lora(args) -> int:
    from tqdm import tqdm

    from steer.baselines.lora import LoraTrainConfig, train_lora
    from steer.corpora import load_corpus
    from steer.models import load_model

    config = LoraTrainConfig(rank=args.rank, alpha=args.alpha, steps=args.steps, lr=args.lr,
                             batch_size=args.batch_size, window=args.window, seed=args.seed,
                             target_modules=args.target_modules.split(",") if args.target_modules else None)
    corpus = load_corpus(args.corpus, encoding=args.encoding)
    _print_corpus(corpus)
    model, tokenizer = load_model(args.model)
    bar = tqdm(total=config.steps, desc="LoRA", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    res = train_lora(model, tokenizer, corpus.steer, config, args.out, corpus_name=args.corpus,
                     model_name=args.model, progress=progress, copy_model=False)
    bar.close()
    curve = res.meta["loss_curve"]
    print(f"adapter -> {args.out}: {res.meta['trainable_params']:,} trainable parameters, "
          f"loss {curve[0]:.3f} -> {sum(curve[-10:]) / len(curve[-10:]):.3f} (mean of last 10), "
          f"{res.meta['wall_seconds']:.1f} s")
    return 0


DEMO_PROMPTS = 64


def cmd_demo(args) -> int:
    from steer.models import demo_model
    from steer.sweep import SweepConfig, builtin_prompts

    model, source = (args.model, "--model") if args.model else demo_model()
    print(f"model: {model} ({source})", file=sys.stderr)
    config = SweepConfig(model=model, corpora=["don_quixote", "cnn_highlights"], lambdas=[0.0, 0.1, 0.5],
                         prompts=builtin_prompts()[:DEMO_PROMPTS], max_new_tokens=32, decoding="sample", top_p=0.95,
                         methods=["contrastive+plausible"], knobs={"contrastive+plausible": [2.0, 4.0]})
    code = _run_sweep(config, args.out)
    print(f"model: {model} ({source})")
    return code


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
    rates = ", ".join(f"{k}: {v:.2f}" for k, v in report["degenerate_rate_by_decoding"].items())
    print(f"attribute model -> {args.out}: {report['n_examples']:,} prefix examples from {len(prompts)} prompts")
    print(f"share of degenerate continuations in the training decodings: {rates}")
    if "heldout_accuracy" in report:
        auc = report["heldout_auc"]
        print(f"held-out prefixes: {report['heldout_examples']:,} ({report['heldout_not_degenerate']:,} not "
              f"degenerate, {report['heldout_degenerate']:,} degenerate): accuracy "
              f"{report['heldout_accuracy']:.3f} (majority-class baseline {report['heldout_majority_accuracy']:.3f}), "
              f"AUC {'undefined' if auc is None else f'{auc:.3f}'}")
    else:
        print("no held-out report: too few prompts to hold any out (see --heldout)")
    if report.get("heldout_warning"):
        print(f"warning: {report['heldout_warning']}", file=sys.stderr)
    return 0


def cmd_edits_make_data(args) -> int:

    from steer.edits.make_data import make_examples, read_pairs_with_notes

    pairs, notes = read_pairs_with_notes(args.pairs)
    for note in notes:
        print(f"read {note}")
    tokenizer = None
    if args.tokenizer:
        from steer.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        if args.format == "compact":
            from steer.edits.compact import add_position_tokens

            add_position_tokens(tokenizer)
    examples, report = make_examples(pairs, args.task, tokenizer, fmt=args.format, mark_every=args.mark_every)
    with open(args.out, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    print(f"{report.n_pairs:,} examples -> {args.out}")
    print(f"span targets: {report.span_words:,} words = {report.word_ratio:.1%} of the full rewrites "
          f"({report.rewrite_words:,} words)")
    if report.token_ratio is not None:
        print(f"in tokens of {args.tokenizer}: {report.span_tokens:,} vs {report.rewrite_tokens:,} "
              f"= {report.token_ratio:.1%}")
    print("(a span target lists only the edits to the source; the lower its share of the full rewrite, "
          "the fewer tokens a span model writes than a rewrite model)")
    return 0


def _read_examples(path: Path, fields: tuple[str, str]) -> list[dict]:

    if not Path(path).exists():
        raise FileNotFoundError(f"`--data` file {str(path)!r} not found")
    out = []
    for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"line {k} of {str(path)!r} is not JSON (expected `steer edits make-data` "
                             "output)") from None
        if not isinstance(row, dict) or any(not isinstance(row.get(f), str) for f in fields):
            raise ValueError(f"line {k} of {str(path)!r} needs text fields {fields[0]!r} and {fields[1]!r} "
                             "(as `steer edits make-data` writes them)")
        out.append(row)
    if not out:
        raise ValueError(f"`--data` file {str(path)!r} holds no examples")
    return out


def cmd_edits_train(args) -> int:
    from steer.edits.compact import add_position_tokens
    from steer.edits.train import finetune, mix
    from steer.models import load_model

    fields = ("prompt", "completion") if args.target == "spans" else ("rewrite_prompt", "rewrite")
    sets = [_read_examples(f, fields) for f in args.data]
    try:  # no --weights: every file weighs the same; mix checks the shares
        examples, weights = mix(sets, None if args.weights is None else [float(w) for w in args.weights.split(",")])
    except ValueError as e:
        raise ValueError(f"`--weights` must hold one non-negative share per --data file ({len(sets)}), "
                         f"got {args.weights!r}") from e
    model, tokenizer = load_model(args.model)
    mode = "rewrite" if args.target == "rewrite" else _span_mode(examples)
    if mode == "compact":
        add_position_tokens(tokenizer, model)
    print(f"{len(examples):,} examples from {len(sets)} file(s); training every parameter of {args.model} "
          f"for {args.steps} steps of {args.batch} ({mode if mode == 'rewrite' else _SPAN_LABEL[mode]} spans)")

    def progress(step, loss):
        if (step + 1) % max(args.steps // 20, 1) == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}: loss {loss:.3f}", flush=True)

    losses, secs = finetune(model, tokenizer, examples, prompt_key=fields[0], target_key=fields[1],
                            weights=weights, steps=args.steps, batch_size=args.batch, lr=args.lr,
                            warmup=args.warmup, seed=args.seed, progress=progress)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    # What `steer edits run` decodes this model with when no --mode is given.
    (Path(args.out) / EDIT_MODE_FILE).write_text(json.dumps({"mode": mode}) + "\n", encoding="utf-8")
    print(f"trained in {secs:.0f} s (loss {losses[0]:.3f} -> {losses[-1]:.3f}) -> {args.out}")
    return 0


EDIT_MODE_FILE = "edit_mode.json"
_SPAN_LABEL = {"spans": "text", "compact": "compact", "anchored": "anchored"}


def _span_mode(examples: list[dict]) -> str:
    """The span format of make-data examples: their "format" field, else compact if the prompts hold
    position tokens (files written before the field existed), else the text format."""
    from steer.edits.compact import POSITION

    formats = {ex.get("format") for ex in examples} - {None}
    if len(formats) > 1:
        raise ValueError(f"`--data` files mix span formats {sorted(formats)}: train one format at a time")
    fmt = formats.pop() if formats else ("compact" if any(POSITION.format(0) in ex["prompt"] for ex in examples)
                                         else "text")
    return "spans" if fmt == "text" else fmt


def _trained_mode(model_dir, tokenizer) -> str:
    """How `steer edits train` trained the model at ``model_dir`` (its edit_mode.json), else compact when
    the tokenizer has position tokens, else the text span format."""
    from steer.edits.compact import POSITION

    saved = Path(model_dir) / EDIT_MODE_FILE
    if saved.is_file():
        return json.loads(saved.read_text(encoding="utf-8"))["mode"]
    return "compact" if POSITION.format(0) in tokenizer.get_vocab() else "spans"


def cmd_edits_run(args) -> int:
    from steer.edits.generate import edit_generate
    from steer.models import load_model

    if not Path(args.sources).exists():
        raise FileNotFoundError(f"`--sources` file {str(args.sources)!r} not found")
    lines = Path(args.sources).read_text(encoding="utf-8").splitlines()
    sources = [line for line in lines if line.strip()]
    if not sources:
        raise ValueError(f"`--sources` file {str(args.sources)!r} holds no text")
    model, tokenizer = load_model(args.model)
    mode = args.mode or _trained_mode(args.model, tokenizer)
    results, secs = edit_generate(model, tokenizer, sources, task=args.task, mode=mode, num_beams=args.beams,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.batch,
                                  mark_every=args.mark_every, loop_ban=None if args.no_loop_ban else (4, 2),
                                  grammar=False if args.no_grammar else None)
    # One output line per input line: blank lines stay blank.
    edited = iter(results)
    text = "".join((next(edited).target if line.strip() else "") + "\n" for line in lines)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    changed = sum(r.target != " ".join(s.split()) for r, s in zip(results, sources, strict=True))
    print(f"{len(sources)} sources ({mode}): {changed} changed, {sum(not r.valid for r in results)} left as they "
          f"were for want of a complete answer; {secs:.1f} s of generation"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


EXAMPLES = {
    "build-table": "example:\n  steer build-table --corpus don_quixote "
                   "--tokenizer ../shared/data/models/base-llama2tok --out quixote.safetensors",
    "generate": "examples:\n  steer generate --model ../shared/data/models/base-llama2tok --corpus don_quixote "
                "--lam 0.1 \"The old man walked\"\n"
                "  steer generate --model ../shared/data/models/base-llama2tok --table quixote.safetensors "
                "\"The old man walked\"\n"
                "  steer generate --model ../shared/data/models/smollm2-135m-instruct --corpus cnn_highlights "
                "--method activation+contrastive+plausible --knob 0.25 --decoding sample --top-p 0.95 "
                "--ban-loops 3,3 \"The news spread quickly through\"",
    "sweep": "examples:\n  steer sweep --model ../shared/data/models/base-llama2tok --corpus don_quixote "
             "--corpus cnn_highlights --lambdas 0,0.1,0.5 --baseline prompt --out runs/study\n"
             "  steer sweep --model ../shared/data/models/base-llama2tok --corpus don_quixote --lambdas 0 "
             "--method contrastive+plausible+kl --knob contrastive+plausible+kl=0.02,0.06 --out runs/variants\n"
             "An interrupted sweep resumes when the same command is run again.",
    "train-lora": "example:\n  steer train-lora --model ../shared/data/models/base-llama2tok --corpus don_quixote "
                  "--out adapters/quixote",
    "train-attr": "example:\n  steer train-attr --model ../shared/data/models/base-llama2tok --prompts prompts.txt "
                  "--out attr.safetensors",
    "make-data": "examples:\n  steer edits make-data --pairs ../shared/data/edits/jfleg/dev --out gec.jsonl\n"
                 "  steer edits make-data --pairs ../shared/data/edits/mrpc/msr_paraphrase_train.txt "
                 "--task paraphrase --out para.jsonl",
    "train": "example:\n  steer edits make-data --pairs ../shared/data/edits/jfleg/dev --format compact "
             "--out gec.jsonl\n"
             "  steer edits train --data gec.jsonl --model ../shared/data/models/base-llama2tok --out gec-model",
    "run": "example:\n  steer edits run --model gec-model --sources ../shared/data/edits/jfleg/test/test.src "
           "--out corrected.txt",
    "demo": "example:\n  steer demo\n  steer demo --model ../shared/data/models/base-llama2tok",
    "report": "example:\n  steer report runs/study",
}
MODEL_HELP = ("model folder, GGUF file (or a folder holding one) or hub id ($STEER_MODEL if set, else "
              "TinyLlama-1.1B from the hub)")


def _add(sub, name: str, help: str, func, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, epilog=EXAMPLES.get(name), formatter_class=_Formatter,
                       **kw)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from steer import __version__
    from steer.models import default_model

    parser = argparse.ArgumentParser(
        prog="steer", description="Decoding-time steering of frozen causal LMs with n-gram style priors.",
        epilog="Run `steer COMMAND --help` for a command's options and an example.", formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"steer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "build-table", "count a corpus's n-grams in a tokenizer's space and save them to one file",
             cmd_build_table)
    p.add_argument("--corpus", required=True, help=_corpus_help())
    p.add_argument("--tokenizer", required=True,
                   help="tokenizer folder, model folder or GGUF file (the model you will steer)")
    p.add_argument("--order", type=int, default=3, help="highest n-gram order N")
    p.add_argument("--judge-fraction", type=float, default=0.2,
                   help="share of the corpus held out for judging, never counted (0: use all of it)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of corpus files")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--memory-gb", type=float, default=None, metavar="G",
                   help="build within G GiB, counting the corpus file by file into sorted runs on disk and "
                        "merging them (for corpora bigger than memory; orders up to 4 at a 32,000-token vocabulary)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="processes counting corpus files at once (with --memory-gb)")
    p.add_argument("--spill-dir", type=Path, default=None,
                   help="where a bounded build keeps its temporary runs (default: the system's temporary folder; "
                        "on a Ray cluster, a folder every node shares)")
    p.add_argument("--engine", choices=["processes", "ray"], default="processes",
                   help="who counts the corpus files of a bounded build: local processes, or Ray tasks "
                        "(needs steer[ray]; a local Ray unless --address is given)")
    p.add_argument("--address", default=None,
                   help="address of a running Ray cluster (e.g. ray://head:10001 or auto), with --engine ray")

    p = _add(sub, "generate", "one steered continuation, printed beside the unsteered one", cmd_generate)
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--corpus", default=None, help=_corpus_help() + " (or give --table)")
    p.add_argument("--table", default=None, type=Path,
                   help="a table saved by `steer build-table` (instead of --corpus)")
    p.add_argument("--lam", type=float, default=0.1,
                   help="weight of the paper's prior (>= 0; 0 = unsteered), for --method prior and prior+prompt")
    from steer.methods import REGISTRY

    p.add_argument("--method", default="prior", choices=[m for m in REGISTRY if m != "lora"], metavar="METHOD",
                   help="the steering method, as a sweep names it: " + ", ".join(m for m in REGISTRY if m != "lora"))
    p.add_argument("--knob", type=float, default=None,
                   help="the method's knob (λ, ε for the KL-budget methods, the scale for activation, steps for "
                        "hso); the paper's prior takes --lam")
    _prior_args(p)
    _method_args(p)
    _decode_args(p)

    p = _add(sub, "sweep", "the style study: corpora x lambdas (and baselines) -> metrics, samples, plot", cmd_sweep)
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--corpus", action="append", required=True,
                   help=_corpus_help() + ", or a table file from `steer build-table` (repeat for several)")
    p.add_argument("--lambdas", default="0,0.02,0.05,0.1,0.2,0.5,1", help="comma-separated prior weights")
    p.add_argument("--prompts", default=None, help="file with one prompt a line (default: the built-in neutral set)")
    p.add_argument("--samples", type=int, default=1, help="continuations per prompt (seeds seed, seed+1, ...)")
    p.add_argument("--out", required=True, type=Path, help="run folder (resumed if it holds the same sweep)")
    _prior_args(p)
    p.add_argument("--baseline", action="append", choices=["prompt", "lora"],
                   help="also measure style prompting (and prior + prompt) or a LoRA adapter (repeat)")
    from steer.methods import REGISTRY

    others = [m for m in REGISTRY if m not in ("prior", "prompt", "prior+prompt", "lora")]
    p.add_argument("--method", action="append", choices=others, metavar="METHOD",
                   help="also run a steering variant (repeat): " + ", ".join(others))
    p.add_argument("--knob", action="append", metavar="METHOD=V1,V2",
                   help="knob values of a --method (λ, or ε for the KL-budget methods), instead of its defaults")
    _method_args(p)
    p.add_argument("--lora-steps", type=int, default=1000,
                   help="step budget of each LoRA baseline (training stops earlier when a held-out loss stalls)")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--lora-window", type=int, default=128, help="tokens per LoRA training window")
    p.add_argument("--lora-eval-every", type=int, default=50,
                   help="LoRA steps between evaluations of the held-out loss (early stopping)")
    p.add_argument("--judge-fraction", type=float, default=0.2,
                   help="share of each corpus held out for the judges, never seen by any method (>= 0.15)")
    p.add_argument("--judges", default="heldout_ppl,classifier,diversity",
                   help="comma-separated held-out judges (classifier needs steer[eval]); empty for none")
    _decode_args(p)

    p = _add(sub, "report", "write a run folder's results from the cells finished so far (runs nothing)",
             cmd_report)
    p.add_argument("out", type=Path, help="the sweep's run folder")

    p = _add(sub, "train-lora", "train a LoRA adapter on a style corpus (needs steer[lora])", cmd_train_lora)
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--corpus", required=True, help=_corpus_help())
    p.add_argument("--encoding", default="utf-8", help="text encoding of corpus files")
    p.add_argument("--out", required=True, type=Path, help="adapter folder (PEFT format + steer_lora.json)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA scaling alpha")
    p.add_argument("--steps", type=int, default=1000,
                   help="step budget (AdamW steps; stops earlier when the held-out loss stalls)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--batch-size", type=int, default=8, help="training windows per step")
    p.add_argument("--window", type=int, default=128, help="tokens per training window")
    p.add_argument("--seed", type=int, default=0, help="seed of window sampling and initialisation")
    p.add_argument("--target-modules", default=None,
                   help="comma-separated module names to adapt (default: PEFT's choice for the architecture)")

    p = _add(sub, "train-attr", "train the prefix degeneracy model for conditional beam search", cmd_train_attr)
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--prompts", required=True, help="file with one training prompt a line")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--max-new-tokens", type=int, default=40, help="length of the generated training continuations")
    p.add_argument("--samples", type=int, default=2, help="sampled continuations per prompt")
    p.add_argument("--beams", default="1,5", help="beam widths whose outputs are also used")
    p.add_argument("--epochs", type=int, default=4, help="training epochs of the head")
    p.add_argument("--heldout", type=float, default=0.2, help="fraction of prompts held out for the report")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, the split and training")

    p = sub.add_parser("edits", help="edit-span decoding tools", description="edit-span decoding tools",
                       formatter_class=_Formatter)
    esub = p.add_subparsers(dest="edits_command", required=True, metavar="EDITS_COMMAND")
    q = _add(esub, "make-data", "instruction + source -> span target training data, with length statistics",
             cmd_edits_make_data)
    q.add_argument("--pairs", required=True,
                   help="pairs: source<TAB>target TSV, {source, target} JSONL, a .src/.orig/.norm file with its "
                        ".ref*/.simp.*/.turk.* references, the MRPC TSV, or a folder of such sources")
    q.add_argument("--out", required=True, type=Path, help="output .jsonl")
    q.add_argument("--task", choices=["gec", "simplify", "paraphrase", "formality"], default="gec",
                   help="instruction used in the prompts")
    q.add_argument("--tokenizer", default=None, help="also report lengths in this tokenizer's tokens")
    q.add_argument("--format", choices=["text", "compact", "anchored"], default="text",
                   help="span format: text (\"1 2 went ; 4 5\" after numbered words), compact (one token "
                        "per position, <@1><@2>went<@4><@5>; train with steer.edits.add_position_tokens) or "
                        "anchored (edits that quote the words they replace, \" go -> went\", after the plain "
                        "source)")
    q.add_argument("--mark-every", type=int, default=1,
                   help="compact: the prompt marks every m-th position only (shorter prompts; the model counts "
                        "the words in between)")

    q = _add(esub, "train", "fine-tune a model on make-data examples (span or rewrite targets)", cmd_edits_train)
    q.add_argument("--data", required=True, action="append", type=Path,
                   help="make-data output (.jsonl); repeat to mix several files")
    q.add_argument("--weights", default=None,
                   help="comma-separated share of each --data file in every batch (default: equal shares)")
    q.add_argument("--model", default=default_model(), help=MODEL_HELP)
    q.add_argument("--out", required=True, type=Path, help="output folder (model and tokenizer)")
    q.add_argument("--target", choices=["spans", "rewrite"], default="spans",
                   help="train on the span targets or on the full rewrites of the same examples")
    q.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    q.add_argument("--batch", type=int, default=16, help="examples per step")
    q.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW)")
    q.add_argument("--warmup", type=int, default=100, help="linear warm-up steps before the cosine decay")
    q.add_argument("--seed", type=int, default=0, help="seed of the example draws")
    q = _add(esub, "run", "edit every line of a file with a trained model", cmd_edits_run)
    q.add_argument("--model", required=True,
                   help="a model trained with `steer edits train` (or, with --mode instruct, any chat model)")
    q.add_argument("--sources", required=True, type=Path, help="one source text a line")
    q.add_argument("--out", default=None, type=Path, help="output file, one edited text a line (default: stdout)")
    q.add_argument("--task", choices=["gec", "simplify", "paraphrase", "formality"], default="gec",
                   help="the instruction the model was trained with")
    q.add_argument("--mode", choices=["compact", "anchored", "spans", "rewrite", "instruct"], default=None,
                   help="output kind (default: what `steer edits train` trained the model for, else compact when "
                        "the tokenizer has position tokens, else spans); "
                        "instruct: ask an untuned chat model for the edited sentence")
    q.add_argument("--beams", type=int, default=1, help="beam width (1: greedy)")
    q.add_argument("--batch", type=int, default=16, help="sources per generate call")
    q.add_argument("--max-new-tokens", type=int, default=128, help="token budget of one answer")
    q.add_argument("--mark-every", type=int, default=1, help="compact: as the training data was made")
    q.add_argument("--no-loop-ban", action="store_true",
                   help="decode without the repetition guard (by default no 4-gram of an answer occurs twice)")
    q.add_argument("--no-grammar", action="store_true",
                   help="decode span answers unconstrained (by default under their format's grammar, where the "
                        "tokenizer allows it: anchored spans need a byte-level BPE tokenizer)")

    p = _add(sub, "demo", "a small sweep (2 corpora, the seed paper's prior at 3 lambdas and the contrastive, "
             "plausibility-bounded variant at 2, 64 prompts, sampled) that runs in minutes on a CPU", cmd_demo)
    p.add_argument("--model", default=None,
                   help="model folder, GGUF file or hub id (default: $STEER_MODEL, else the shared "
                        "SmolLM2-135M-Instruct when ../shared/data holds it, else TinyLlama-1.1B from the hub)")
    p.add_argument("--out", default=Path("runs/demo"), type=Path, help="run folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    from steer.runs import RunFolderBusyError

    parser = build_parser()
    args = parser.parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None):  # one line, no source echo
        print(f"steer {args.command}: warning: {message}", file=sys.stderr)

    previous, warnings.showwarning = warnings.showwarning, show_warning
    try:
        return args.func(args)
    except Interrupted as err:
        print(f"\nsteer {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\nsteer {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RunFolderBusyError) as err:
        print(f"steer {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
