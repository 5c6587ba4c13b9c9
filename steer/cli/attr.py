"""`steer train-attr`: the prefix degeneracy model of conditional beam search."""

from __future__ import annotations

import sys
from pathlib import Path

from steer.cli.common import MODEL_HELP, add_command

EXAMPLE = ("example:\n  steer train-attr --model ../shared/data/models/base-llama2tok --prompts prompts.txt "
           "--out attr.safetensors")


def register(sub) -> None:
    from steer.models import default_model

    p = add_command(sub, "train-attr", "train the prefix degeneracy model for conditional beam search",
                    cmd_train_attr, EXAMPLE)
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--prompts", required=True, help="file with one training prompt a line")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--max-new-tokens", type=int, default=40, help="length of the generated training continuations")
    p.add_argument("--samples", type=int, default=2, help="sampled continuations per prompt")
    p.add_argument("--beams", default="1,5", help="beam widths whose outputs are also used")
    p.add_argument("--epochs", type=int, default=4, help="training epochs of the head")
    p.add_argument("--heldout", type=float, default=0.2, help="fraction of prompts held out for the report")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, the split and training")


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


