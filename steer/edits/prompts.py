"""The instruction format shared by training data and decoding: one template per task and output kind."""

from __future__ import annotations

INSTRUCTIONS = {
    "gec": "Correct the grammatical errors in the sentence.",
    "simplify": "Simplify the sentence.",
    "paraphrase": "Paraphrase the sentence.",
    "formality": "Rewrite the sentence in a formal style.",
}
TASKS = tuple(INSTRUCTIONS)
# One vocabulary for every edit-span module: a model is trained to write one of the TARGETS, the
# edits over its source ("spans", in one of the FORMATS) or the whole rewritten text ("rewrite"); an
# untuned instruction-following model can be asked for the rewritten sentence instead ("instruct").
FORMATS = ("text", "compact", "anchored")
TARGETS = ("spans", "rewrite")
# What the instruct kind asks an untuned chat model to answer with, per task.
ANSWERS = {"gec": "corrected", "simplify": "simplified", "paraphrase": "paraphrased", "formality": "rewritten"}


def output_kind(target: str = "spans", fmt: str | None = None, instruct: bool = False) -> str:
    """What the model writes, checked: its span format ("text", "compact" or "anchored"; spans),
    "rewrite", or "instruct" (an untuned model asked for the rewritten sentence).

    Example:
        >>> output_kind(), output_kind("spans", "anchored"), output_kind("rewrite"), output_kind(instruct=True)
        ('text', 'anchored', 'rewrite', 'instruct')
    """
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {TARGETS}, got {target!r}")
    if not isinstance(instruct, bool):
        raise ValueError(f"`instruct` must be True or False, got {instruct!r}")
    if target == "spans" and not instruct:
        fmt = "text" if fmt is None else fmt
        if fmt not in FORMATS:
            raise ValueError(f"`fmt` must be one of {FORMATS}, got {fmt!r}")
        return fmt
    if fmt is not None:
        raise ValueError(f"`fmt` is the format of span answers; drop it for target={target!r}"
                         + (" with instruct=True" if instruct else ""))
    return "instruct" if instruct else "rewrite"


def make_prompt(source: str, task: str = "gec", target: str = "spans", fmt: str | None = None,
                mark_every: int = 1, instruct: bool = False) -> str:
    """The prompt for one source: instruction, the source with its positions shown, a cue.

    Span formats: ``text``, words numbered ("0:He 1:go"); ``compact``, every word boundary marked
    with its position token ("<@0>He<@1>go<@2>", steer.edits.compact), one token per word, or one
    every ``mark_every`` words; ``anchored`` (steer.edits.anchored, edits that quote the words they
    replace), the plain source. ``target="rewrite"``: the plain source; ``instruct``: a request for
    the rewritten sentence.

    Example:
        >>> print(make_prompt("He go home", "gec", "spans", "text").splitlines()[1:])
        ['Source: 0:He 1:go 2:home', 'Edits:']
    """
    if task not in INSTRUCTIONS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    kind = output_kind(target, fmt, instruct)
    if kind == "instruct":
        return f"{INSTRUCTIONS[task]} Answer with the {ANSWERS[task]} sentence only.\n\n{' '.join(source.split())}"
    if kind in ("rewrite", "anchored"):
        cue = "Rewrite" if kind == "rewrite" else "Edits"
        return f"{INSTRUCTIONS[task]}\nSource: {' '.join(source.split())}\n{cue}:"
    if kind == "compact":
        from steer.edits.compact import compact_source

        return f"{INSTRUCTIONS[task]}\nSource:{compact_source(source, mark_every)}\nEdits:"
    numbered = " ".join(f"{i}:{w}" for i, w in enumerate(source.split()))
    return (f'{INSTRUCTIONS[task]} Answer with edits "start end replacement" separated by " ; ", or NONE.\n'
            f"Source: {numbered}\nEdits:")


def uses_chat(tokenizer, chat: bool | None = None) -> bool:
    """Whether prompts go through the tokenizer's chat template: ``chat``, or if None, whether it has one."""
    if chat is not None and not isinstance(chat, bool):
        raise TypeError(f"`chat` must be True, False or None (use the template if the tokenizer has one), "
                        f"got {chat!r}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has:
        raise ValueError("`chat=True` but the tokenizer has no chat template")
    return has if chat is None else chat


def as_chat(tokenizer, prompt: str) -> str:
    """``prompt`` as the user's turn of the tokenizer's chat template, ready for the assistant's answer.

    The template's own defaults apply (SmolLM2's adds its default system turn), as they do for
    anyone who calls ``apply_chat_template``.
    """
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
