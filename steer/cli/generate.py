"""`steer generate`: one steered continuation beside the unsteered one, from a spec file or from flags."""

from __future__ import annotations

import sys
from pathlib import Path

from steer.cli.common import MODEL_HELP, add_command, corpus_help, print_corpus
from steer.cli.flags import add_flags, given
from steer.corpora import corpus_label

EXAMPLE = (
    "examples:\n"
    "  steer generate --model ../shared/data/models/base-llama2tok --corpus don_quixote --lam 0.1 "
    "\"The old man walked\"\n"
    "  steer generate --model ../shared/data/models/base-llama2tok --table quixote.safetensors "
    "\"The old man walked\"\n"
    "  steer generate --model ../shared/data/models/smollm2-135m-instruct --corpus cnn_highlights "
    "--method activation+contrastive+plausible --knob 0.25 --decoding sample --top-p 0.95 "
    "--ban-loops 3,3 --save-spec cnn.json \"The news spread quickly through\"\n"
    "  steer generate --model ../shared/data/models/smollm2-135m-instruct --spec cnn.json "
    "\"The news spread quickly through\"")
# Flag prefix of each option family (families whose options cannot collide take none).
PREFIXES = {"corpus": "", "prior": "", "guided": "", "activation": "activation-", "hso": "hso-",
            "prompt": "prompt-", "lora": "lora-", "decoding": ""}


def family_flags(p, exclude: tuple[str, ...] = ()) -> None:
    """One flag per option of every family (:mod:`steer.options`) but ``exclude``, prefixed as :data:`PREFIXES`
    says."""
    from steer.options import families

    for name, cls in families().items():
        if name not in exclude:
            add_flags(p, cls, PREFIXES[name])


def register(sub) -> None:
    from steer.methods import REGISTRY
    from steer.models import default_model

    p = add_command(sub, "generate", "one steered continuation, printed beside the unsteered one", cmd_generate,
                    EXAMPLE)
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--model", default=default_model(), help=MODEL_HELP)
    p.add_argument("--spec", type=Path, default=None,
                   help="a steering spec (JSON: method, knob, corpus, background, options) instead of the method "
                        "flags below")
    p.add_argument("--save-spec", type=Path, default=None, help="also write the setting used as a spec file")
    p.add_argument("--corpus", default=None, help=corpus_help() + " (or give --table)")
    p.add_argument("--table", default=None, type=Path,
                   help="a table saved by `steer build-table` (instead of --corpus)")
    # Methods that train an adapter are trained by `steer train-lora` or a sweep, not here.
    names = [name for name, m in REGISTRY.items() if "lora" not in m.options]
    p.add_argument("--method", default=None, choices=names, metavar="METHOD",
                   help="the steering method, as a sweep names it (default: prior): " + ", ".join(names))
    p.add_argument("--knob", type=float, default=None,
                   help="the method's knob (λ, ε for the KL-budget methods, the scale for activation, steps for "
                        "hso); the paper's prior also takes --lam")
    p.add_argument("--lam", type=float, default=None,
                   help="weight of the paper's prior (>= 0; 0 = unsteered), for --method prior and prior+prompt "
                        "(default: 0.1)")
    p.add_argument("--background", default=None,
                   help="corpus contrastive and activation methods measure against (default: background)")
    family_flags(p, exclude=("lora",))


def spec_from_args(args):
    """The steering spec the command line describes: --spec, or the method, knob, corpus and option flags."""
    from steer.methods import REFERENCE, get_method
    from steer.options import families
    from steer.spec import SteeringSpec

    set_flags = {name: given(args, cls) for name, cls in families().items()}
    if args.spec is not None:
        extra = [f"--{k}" for k in ("corpus", "table", "method", "knob", "lam", "background")
                 if getattr(args, k) is not None] + [f"{name} options" for name, v in set_flags.items() if v]
        if extra:
            raise ValueError(f"--spec holds the whole setting; drop {', '.join(extra)} (or edit the spec file)")
        return SteeringSpec.load(args.spec)
    method = get_method(args.method or REFERENCE)
    if (args.corpus is None) == (args.table is None):
        raise ValueError("give exactly one of --corpus (text) and --table (a file from `steer build-table`), "
                         "or --spec")
    if args.table is not None and not Path(args.table).exists():
        raise FileNotFoundError(f"`table` file {str(args.table)!r} not found")
    knob = args.knob
    if args.lam is not None:
        if "prior" not in method.options:
            raise ValueError(f"--lam is the weight of the paper's prior; method {method.name!r} takes --knob")
        if knob is not None:
            raise ValueError("give one of --lam and --knob")
        knob = args.lam
    if knob is None and "prior" in method.options:
        knob = 0.1
    if knob is None and method.knob:
        example = method.knobs[len(method.knobs) // 2] if method.knobs else 1.0
        raise ValueError(f"method {method.name!r} needs --knob (its {method.knob}; e.g. --knob {example:g})")
    unused = [name for name, v in set_flags.items() if v and name not in method.families()]
    if unused:
        print(f"note: method {method.name!r} reads the option families {list(method.families())}; the "
              f"{', '.join(unused)} options given do not apply to it", file=sys.stderr)
    corpus = args.corpus if args.corpus is not None else str(args.table)
    return SteeringSpec(method.name, corpus, knob, args.background if method.needs_background else None,
                        {name: set_flags[name] for name in method.families()})


def cmd_generate(args) -> int:
    from steer.generation import continue_prompts
    from steer.methods import get_method
    from steer.models import load_model
    from steer.spec import Workshop, is_table_file

    # Everything that does not need the model is checked before it loads.
    spec = spec_from_args(args)
    sources = None
    if not is_table_file(spec.corpus):  # read once: shown here, then handed to the method
        copts = spec.get("corpus")
        from steer.corpora import load_corpus

        corpus = load_corpus(spec.corpus, judge_fraction=copts.judge_fraction, encoding=copts.encoding)
        print_corpus(corpus)
        sources = {spec.corpus: corpus}
    if args.save_spec is not None:
        spec.save(args.save_spec)
        print(f"wrote {args.save_spec}", file=sys.stderr)
    model, tokenizer = load_model(args.model)
    steering = spec.build(model, tokenizer, Workshop(model, tokenizer, sources=sources))
    decode = spec.get("decoding")
    prompt_ids, plain = continue_prompts(model, tokenizer, [args.prompt], (), decode)
    _, steered = steering.generate_ids([args.prompt])

    def text(cont):  # the user's prompt and the continuation: a method's prefix is not shown
        return tokenizer.decode(prompt_ids[0] + cont, skip_special_tokens=True)

    method = get_method(spec.method)
    label = spec.method + (f", {method.knob}={spec.knob:g}" if method.knob else "")
    print(f"model: {args.model}   corpus: {corpus_label(spec.corpus)}   method: {label}")
    print(f"\n[unsteered]\n{text(plain[0])}")
    print(f"\n[steered, {label}]\n{text(steered[0])}")
    return 0
