"""`steer edits`: edit-span data, training and decoding."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steer.cli.common import MODEL_HELP, Formatter, add_command

EXAMPLES = {
    "make-data": ("examples:\n  steer edits make-data --pairs ../shared/data/edits/jfleg/dev --out gec.jsonl\n"
                  "  steer edits make-data --pairs ../shared/data/edits/mrpc/msr_paraphrase_train.txt "
                  "--task paraphrase --out para.jsonl"),
    "train": ("example:\n  steer edits make-data --pairs ../shared/data/edits/jfleg/dev --format compact "
              "--out gec.jsonl\n"
              "  steer edits train --data gec.jsonl --model ../shared/data/models/base-llama2tok --out gec-model"),
    "run": ("example:\n  steer edits run --model gec-model --sources ../shared/data/edits/jfleg/test/test.src "
            "--out corrected.txt"),
}


def register(sub) -> None:
    from steer.edits.prompts import FORMATS

    p = sub.add_parser("edits", help="edit-span decoding tools", description="edit-span decoding tools",
                       formatter_class=Formatter)
    esub = p.add_subparsers(dest="edits_command", required=True, metavar="EDITS_COMMAND")
    q = add_command(esub, "make-data", "instruction + source -> span target training data, with length statistics",
                    cmd_edits_make_data, EXAMPLES["make-data"])
    q.add_argument("--pairs", required=True,
                   help="pairs: source<TAB>target TSV, {source, target} JSONL, a .src/.orig/.norm file with its "
                        ".ref*/.simp.*/.turk.* references, the MRPC TSV, or a folder of such sources")
    q.add_argument("--out", required=True, type=Path, help="output .jsonl")
    q.add_argument("--task", choices=["gec", "simplify", "paraphrase", "formality"], default="gec",
                   help="instruction used in the prompts")
    q.add_argument("--tokenizer", default=None, help="also report lengths in this tokenizer's tokens")
    q.add_argument("--format", choices=FORMATS, default="text",
                   help="span format: text (\"1 2 went ; 4 5\" after numbered words), compact (one token "
                        "per position, <@1><@2>went<@4><@5>; train with steer.edits.add_position_tokens) or "
                        "anchored (edits that quote the words they replace, \" go -> went\", after the plain "
                        "source)")
    q.add_argument("--mark-every", type=int, default=1,
                   help="compact: the prompt marks every m-th position only (shorter prompts; the model counts "
                        "the words in between)")

    _register_train(esub)
    _register_run(esub)


def _register_train(esub) -> None:
    from steer.edits.prompts import TARGETS
    from steer.models import default_model

    q = add_command(esub, "train", "fine-tune a model on make-data examples (span or rewrite targets)",
                    cmd_edits_train, EXAMPLES["train"])
    q.add_argument("--data", required=True, action="append", type=Path,
                   help="make-data output (.jsonl); repeat to mix several files")
    q.add_argument("--weights", default=None,
                   help="comma-separated share of each --data file in every batch (default: equal shares)")
    q.add_argument("--model", default=default_model(), help=MODEL_HELP)
    q.add_argument("--out", required=True, type=Path, help="output folder (model and tokenizer)")
    q.add_argument("--target", choices=TARGETS, default="spans",
                   help="train on the span targets or on the full rewrites of the same examples")
    q.add_argument("--steps", type=int, default=2000,
                   help="optimiser steps (the most: with --heldout, training stops earlier on a plateau)")
    q.add_argument("--batch", type=int, default=16, help="examples per step")
    q.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW)")
    q.add_argument("--warmup", type=int, default=100, help="linear warm-up steps before the cosine decay")
    q.add_argument("--seed", type=int, default=0, help="seed of the example draws")
    q.add_argument("--heldout", action="append", type=Path, default=None,
                   help="make-data output kept out of training (repeatable): its loss is measured every "
                        "--eval-every steps, training stops on a plateau and the best model is saved")
    q.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    q.add_argument("--patience", type=int, default=3,
                   help="with --heldout: stop after this many evaluations without a new best loss")
    q.add_argument("--min-delta", type=float, default=0.0,
                   help="with --heldout: a new best loss must be lower by more than this share of the best")
    q.add_argument("--checkpoint-every", type=int, default=100,
                   help="steps between checkpoints in OUT/checkpoint; the same command again resumes there")
    q.add_argument("--bf16", action="store_true",
                   help="forward and backward passes in bfloat16 (weights and optimiser in float32); "
                        "about 1.7x faster on a CPU with AVX512-BF16")


def _register_run(esub) -> None:
    from steer.edits.prompts import FORMATS, TARGETS

    q = add_command(esub, "run", "edit every line of a file with a trained model", cmd_edits_run,
                    EXAMPLES["run"])
    q.add_argument("--model", required=True,
                   help="a model trained with `steer edits train` (or, with --instruct, any chat model)")
    q.add_argument("--sources", required=True, type=Path, help="one source text a line")
    q.add_argument("--out", default=None, type=Path, help="output file, one edited text a line (default: stdout)")
    q.add_argument("--task", choices=["gec", "simplify", "paraphrase", "formality"], default="gec",
                   help="the instruction the model was trained with")
    q.add_argument("--target", choices=TARGETS, default=None,
                   help="what the model writes: edits over the source (spans) or the whole text (rewrite); "
                        "default: what `steer edits train` trained it for, else spans")
    q.add_argument("--format", choices=FORMATS, default=None,
                   help="the format of its span answers (default: what it was trained on, else compact when the "
                        "tokenizer has position tokens, else text)")
    q.add_argument("--instruct", action="store_true",
                   help="ask an untuned chat model for the edited sentence (the baseline a user tries first)")
    q.add_argument("--beams", type=int, default=1, help="beam width (1: greedy)")
    q.add_argument("--batch", type=int, default=16, help="sources per generate call (1 with --prompt-lookup)")
    q.add_argument("--max-new-tokens", type=int, default=128, help="token budget of one answer")
    q.add_argument("--mark-every", type=int, default=1, help="compact: as the training data was made")
    q.add_argument("--prompt-lookup", type=int, default=None, metavar="K",
                   help="decode with prompt-lookup drafts of K tokens (one source at a time, greedy; the same "
                        "answers, faster where an answer copies the source)")
    q.add_argument("--no-loop-ban", action="store_true",
                   help="decode without the repetition guard (by default no 4-gram of an answer occurs twice)")
    q.add_argument("--no-grammar", action="store_true",
                   help="decode span answers unconstrained (by default under their format's grammar, where the "
                        "tokenizer allows it: anchored spans need a byte-level BPE tokenizer)")


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



def cmd_edits_train(args) -> int:
    from steer.edits.finetune import mix
    from steer.edits.trained import prepare, read_examples, train_edit_model
    from steer.models import load_model

    sets = [read_examples(f, args.target) for f in args.data]
    heldout = [ex for f in args.heldout or () for ex in read_examples(f, args.target)] or None
    try:  # no --weights: every file weighs the same; mix checks the shares
        mixed = mix(sets, None if args.weights is None else [float(w) for w in args.weights.split(",")])
    except ValueError as e:
        raise ValueError(f"`--weights` must hold one non-negative share per --data file ({len(sets)}), "
                         f"got {args.weights!r}") from e
    data = prepare(*mixed, target=args.target, heldout=heldout)  # everything checked before the model loads
    model, tokenizer = load_model(args.model)
    stop = f"at most {args.steps} steps, stopping on a held-out plateau" if heldout else f"{args.steps} steps"
    print(f"{len(data.examples):,} examples from {len(sets)} file(s); training every parameter of {args.model} "
          f"for {stop} of {args.batch} ({'rewrites' if data.fmt is None else f'{data.fmt} spans'})")

    def progress(step, loss):
        if (step + 1) % max(args.steps // 20, 1) == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}: loss {loss:.3f}", flush=True)

    run = train_edit_model(model, tokenizer, data, args.out,
                           steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=args.seed,
                           eval_every=args.eval_every, patience=args.patience if heldout else None,
                           min_delta=args.min_delta, checkpoint_every=args.checkpoint_every, bf16=args.bf16,
                           progress=progress,
                           on_heldout=lambda step, loss: print(f"step {step}: held-out loss {loss:.4f}", flush=True))
    resumed = f", resumed at step {run.resumed_at}" if run.resumed_at else ""
    held = (f"; held-out loss {run.heldout[0][1]:.3f} -> {dict(run.heldout)[run.best_step]:.3f}, the best, "
            f"at step {run.best_step} ({'a plateau' if run.stopped == 'plateau' else 'the last evaluation'})"
            if run.heldout else "")
    print(f"trained {len(run.losses)} steps in {run.seconds:.0f} s{resumed} (loss {run.losses[0]:.3f} -> "
          f"{run.losses[-1]:.3f}){held} -> {args.out}")
    return 0


def cmd_edits_run(args) -> int:
    from steer.edits.generate import edit_generate
    from steer.edits.trained import trained_output
    from steer.models import load_model

    if not Path(args.sources).exists():
        raise FileNotFoundError(f"`--sources` file {str(args.sources)!r} not found")
    lines = Path(args.sources).read_text(encoding="utf-8").splitlines()
    sources = [line for line in lines if line.strip()]
    if not sources:
        raise ValueError(f"`--sources` file {str(args.sources)!r} holds no text")
    model, tokenizer = load_model(args.model)
    if args.instruct:
        target, fmt = "rewrite", None
    else:
        target, fmt = trained_output(args.model, tokenizer)
        target = args.target or target
        fmt = None if target == "rewrite" else args.format or fmt or "text"
    results, secs = edit_generate(model, tokenizer, sources, task=args.task, target=target, fmt=fmt,
                                  instruct=args.instruct, num_beams=args.beams,
                                  max_new_tokens=args.max_new_tokens,
                                  batch_size=1 if args.prompt_lookup else args.batch,
                                  prompt_lookup=args.prompt_lookup,
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
    label = "instruct" if args.instruct else fmt or target
    print(f"{len(sources)} sources ({label}): {changed} changed, {sum(not r.valid for r in results)} left as they "
          f"were for want of a complete answer; {secs:.1f} s of generation"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


