"""`steer sweep`, `steer report` and `steer demo`: the style study, its results, and a small one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steer.cli.common import MODEL_HELP, Interrupted, add_command, corpus_help
from steer.cli.flags import given, options
from steer.cli.generate import family_flags
from steer.corpora import corpus_label

EXAMPLES = {
    "sweep": ("examples:\n  steer sweep --model ../shared/data/models/base-llama2tok --corpus don_quixote "
              "--corpus cnn_highlights --lambdas 0,0.1,0.5 --baseline prompt --out runs/study\n"
              "  steer sweep --model ../shared/data/models/base-llama2tok --corpus don_quixote --lambdas 0 "
              "--method contrastive+plausible+kl --knob contrastive+plausible+kl=0.02,0.06 --out runs/variants\n"
              "An interrupted sweep resumes when the same command is run again."),
    "report": "example:\n  steer report runs/study",
    "demo": "example:\n  steer demo\n  steer demo --model ../shared/data/models/base-llama2tok",
}
DEMO_PROMPTS = 64


def register(sub) -> None:
    from steer.methods import listed_names, switches
    from steer.models import default_model

    p = add_command(sub, "sweep", "the style study: corpora x lambdas (and baselines) -> metrics, samples, plot",
                    cmd_sweep, EXAMPLES["sweep"])
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--corpus", action="append", required=True,
                   help=corpus_help() + ", or a table file from `steer build-table` (repeat for several)")
    p.add_argument("--lambdas", default="0,0.02,0.05,0.1,0.2,0.5,1", help="comma-separated prior weights")
    p.add_argument("--prompts", default=None, help="file with one prompt a line (default: the built-in neutral set)")
    p.add_argument("--samples", type=int, default=1, help="continuations per prompt (seeds seed, seed+1, ...)")
    p.add_argument("--out", required=True, type=Path, help="run folder (resumed if it holds the same sweep)")
    p.add_argument("--baseline", action="append", choices=switches(),
                   help="also measure style prompting (and prior + prompt) or a LoRA adapter (repeat)")
    others = listed_names()
    p.add_argument("--method", action="append", choices=others, metavar="METHOD",
                   help="also run a steering variant (repeat): " + ", ".join(others))
    p.add_argument("--knob", action="append", metavar="METHOD=V1,V2",
                   help="knob values of a --method (λ, or ε for the KL-budget methods), instead of its defaults")
    p.add_argument("--background", default="background",
                   help="corpus contrastive and activation methods measure against (ordinary text)")
    p.add_argument("--judges", default="heldout_ppl,classifier,diversity",
                   help="comma-separated held-out judges (classifier needs steer[eval]); empty for none")
    p.add_argument("--fluency-judge", default=None, metavar="MODEL",
                   help="also score every continuation's perplexity under this model, of another family than "
                        "--model (cross_ppl): a fluency judge the steered model does not compute")
    p.add_argument("--table-metrics", action="store_true",
                   help="also score the text with the steering table itself (steer_table_ppl, overlap_n) and "
                        "against the unsteered text; they favour the prior by construction")
    family_flags(p)

    p = add_command(sub, "report", "write a run folder's results from the cells finished so far (runs nothing)",
                    cmd_report, EXAMPLES["report"])
    p.add_argument("out", type=Path, help="the sweep's run folder")

    p = add_command(sub, "demo", "a small sweep (2 corpora, the seed paper's prior at 3 lambdas and the contrastive, "
                    "plausibility-bounded variant at 2, 64 prompts, sampled) that runs in minutes on a CPU", cmd_demo,
                    EXAMPLES["demo"])
    p.add_argument("--model", default=None,
                   help="model folder, GGUF file or hub id (default: $STEER_MODEL, else the shared "
                        "SmolLM2-135M-Instruct when ../shared/data holds it, else TinyLlama-1.1B from the hub)")
    p.add_argument("--out", default=Path("runs/demo"), type=Path, help="run folder")


def cmd_sweep(args) -> int:
    from steer.baselines.lora import LoraTrainConfig
    from steer.baselines.prompt import StylePrompt
    from steer.generation import DecodeConfig
    from steer.options import ActivationOptions, CorpusOptions, GuidedOptions, HSOOptions, PriorOptions
    from steer.sweep import SweepConfig, builtin_prompts, parse_lambdas, read_prompts

    prompts = read_prompts(args.prompts) if args.prompts else builtin_prompts()
    decoding, corpus = given(args, DecodeConfig), given(args, CorpusOptions)
    config = SweepConfig(
        model=args.model, corpora=args.corpus, lambdas=parse_lambdas(args.lambdas), prompts=prompts,
        samples=args.samples, **decoding, **corpus, prior=options(args, PriorOptions),
        baselines=args.baseline or [], judges=[j for j in args.judges.split(",") if j.strip()],
        methods=args.method or [], knobs=_parse_knobs(args.knob or []), background=args.background,
        table_metrics=args.table_metrics, fluency_judge=args.fluency_judge,
        guided=given(args, GuidedOptions), activation=given(args, ActivationOptions), hso=given(args, HSOOptions),
        style_prompt=given(args, StylePrompt), lora=given(args, LoraTrainConfig))
    return _run_sweep(config, args.out)


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



def _run_sweep(config, out) -> int:
    from tqdm import tqdm

    from steer.sweep import run_sweep

    total = len(config.cells())
    bar = tqdm(total=total, desc="sweep", unit="cell")

    def progress(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    def lora_progress(step: int, loss: float) -> None:
        bar.set_postfix_str(f"LoRA step {step}/{config.lora.steps} loss {loss:.3f}")

    try:
        rows = run_sweep(config, out, progress=progress, lora_progress=lora_progress)
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(f"interrupted after {bar.n}/{total} cells; rerun the same command to resume") from None
    bar.close()
    _print_summary(rows)
    _print_judge_notes(out)
    _print_holding(out)
    print(f"\nwrote {out}/results.csv, comparisons.csv, samples.jsonl, config.json, judge.json"
          + (", metrics_vs_lambda.png, pareto.png" if (Path(out) / "metrics_vs_lambda.png").exists() else
             " (install steer[plot] for the figures)"))
    return 0



def cmd_report(args) -> int:
    from steer.sweep import report_sweep

    rows, done, total = report_sweep(args.out)
    _print_summary(rows)
    _print_holding(args.out)
    state = "finished" if done == total else f"{total - done} still to run (rerun the sweep's command to resume)"
    print(f"\n{done}/{total} cells: {state}; wrote {args.out}/results.csv, comparisons.csv and the figures")
    return 0



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
        corpus = corpus_label(r["corpus"])
        print(f"{corpus[:18]:18s} {r['method']:{mw}s} {r['lam']:5.3g} {_num(r['judge_hit'], '.2f', 5)} "
              f"{ci:>13s} {_num(r['heldout_style_ppl'], '.1f', 9)} {_num(r['base_ppl'], '.1f', 9)} "
              f"{_pct(r['base_ppl_rel'])} {_num(r['degenerate_rate'], '.2f', 6)} {_num(r['distinct_2'], '.3f', 6)} "
              f"{_num(r['self_bleu'], '.3f', 6)} {_num(r['js_div'], '.3f', 6)} "
              f"{_num(r['infer_ms_per_token'], '.2f', 7)}")
    print("hit: share of continuations the held-out style classifier assigns to the corpus, with its 95 % "
          "bootstrap interval over prompts; held_ppl: word perplexity under Kneser-Ney of the corpus's judge "
          "split (never seen by any method); base_ppl: under the unsteered model (fluency), Δ vs λ = 0; degen: "
          "share of degenerate continuations (empty, short, looping, copying the prompt); dist2: distinct word "
          "bigrams / all; sBLEU: self-BLEU across the cell (high = alike); JS: Jensen-Shannon divergence "
          "steered vs unsteered, bits; ms/tok: generation time per token. comparisons.csv compares the prior with "
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
    """Where each method holds the default constraints (comparisons.csv, kind constraints), as widest knob ranges."""
    from steer.matched import Constraints, widest_holding_range
    from steer.sweep import read_comparisons

    table = [dict(r, knob=float(r["knob"]), holds=r["holds"] == "True") for r in read_comparisons(out, "constraints")]
    if not table:
        return
    c = Constraints()
    print(f"\nconstraints: hit >= unsteered + {c.min_hit_gain:g}, base_ppl <= {c.max_ppl_ratio:g}x, "
          f"dist2 >= {c.min_distinct2_ratio:g}x, degenerate <= unsteered + {c.max_extra_degenerate:g}")
    for corpus, method in dict.fromkeys((r["corpus"], r["method"]) for r in table):
        held = widest_holding_range(table, corpus, method)
        where = "nowhere" if held is None else f"over knob {held[0]:g}-{held[1]:g} ({held[2]:.3g}x wide)"
        print(f"  {corpus_label(corpus)} {method}: holds {where}")
    if read_comparisons(out, "holding"):
        print("  comparisons.csv, kind holding: each holding cell against each baseline, paired over prompts")
