"""`steer train-lora`: a LoRA adapter trained on a style corpus (needs steer[lora])."""

from __future__ import annotations

from pathlib import Path

from steer.cli.common import MODEL_HELP, add_command, corpus_help, print_corpus
from steer.cli.flags import add_flags, options

EXAMPLE = ("example:\n  steer train-lora --model ../shared/data/models/base-llama2tok --corpus don_quixote "
           "--out adapters/quixote")


def register(sub) -> None:
    from steer.baselines.lora import LoraTrainConfig
    from steer.models import default_model

    p = add_command(sub, "train-lora", "train a LoRA adapter on a style corpus (needs steer[lora])", cmd_train_lora,
                    EXAMPLE)
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--corpus", required=True, help=corpus_help())
    p.add_argument("--encoding", default="utf-8", help="text encoding of corpus files")
    p.add_argument("--out", required=True, type=Path, help="adapter folder (PEFT format + steer_lora.json)")
    add_flags(p, LoraTrainConfig)


def cmd_train_lora(args) -> int:
    from tqdm import tqdm

    from steer.baselines.lora import LoraTrainConfig, train_lora
    from steer.corpora import load_corpus
    from steer.models import load_model

    config = options(args, LoraTrainConfig)
    corpus = load_corpus(args.corpus, encoding=args.encoding)
    print_corpus(corpus)
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


