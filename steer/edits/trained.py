"""An edit model on disk: the make-data examples it learns from, its training, and what it writes.

:func:`train_edit_model` is what ``steer edits train`` runs: it reads no argv, so a script trains
the same model with the same files::

    from steer.edits.finetune import mix
    from steer.edits.trained import prepare, read_examples, train_edit_model
    from steer.models import load_model

    data = prepare(*mix([read_examples("gec.jsonl", "spans")]), target="spans")
    model, tokenizer = load_model("../shared/data/models/base-llama2tok")
    run = train_edit_model(model, tokenizer, data, "gec-model", steps=200)

The folder then holds the model, its tokenizer and ``edit_output.json`` (what it was trained to
write), which :func:`trained_output` reads back for ``steer edits run``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What a model was trained to write: {"target": ..., "format": ...}. Models trained before it
# hold edit_mode.json ({"mode": ...}).
EDIT_OUTPUT_FILE = "edit_output.json"
_OLD_MODE_FILE = "edit_mode.json"
_OLD_MODES = {"spans": ("spans", "text"), "compact": ("spans", "compact"), "anchored": ("spans", "anchored"),
              "rewrite": ("rewrite", None)}


def example_fields(target: str) -> tuple[str, str]:
    """The (prompt, target) fields of a make-data example that train a model for ``target``."""
    if target not in ("spans", "rewrite"):
        raise ValueError(f"`target` must be 'spans' or 'rewrite', got {target!r}")
    return ("prompt", "completion") if target == "spans" else ("rewrite_prompt", "rewrite")


def read_examples(path, target: str = "spans") -> list[dict]:
    """The examples of a ``steer edits make-data`` file (JSON lines), each with the text fields ``target`` needs."""
    fields = example_fields(target)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"examples file {str(path)!r} not found")
    out = []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
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
        raise ValueError(f"examples file {str(path)!r} holds no examples")
    return out


def span_format(examples: Sequence[dict]) -> str:
    """The span format of make-data examples: their "format" field, else compact if the prompts hold
    position tokens (files written before the field existed), else the text format."""
    from steer.edits.compact import POSITION

    formats = {ex.get("format") for ex in examples} - {None}
    if len(formats) > 1:
        raise ValueError(f"the examples mix span formats {sorted(formats)}: train one format at a time")
    return formats.pop() if formats else ("compact" if any(POSITION.format(0) in ex["prompt"] for ex in examples)
                                          else "text")


@dataclass(frozen=True)
class TrainingData:
    """Examples ready to train an edit model on, checked before any model loads (:func:`prepare`)."""

    target: str  # "spans" or "rewrite"
    examples: list[dict]
    weights: list[float]  # one per example (steer.edits.finetune.mix)
    fmt: str | None  # the span format; None for rewrites
    heldout: list[dict] | None


def prepare(examples: Sequence[dict], weights: Sequence[float], target: str = "spans",
            heldout: Sequence[dict] | None = None) -> TrainingData:
    """The examples (with their per-example weights, as :func:`steer.edits.finetune.mix` gives them) for
    ``target``, their span format read from them (mixed formats are refused)."""
    example_fields(target)
    fmt = span_format([*examples, *(heldout or ())]) if target == "spans" else None
    return TrainingData(target, list(examples), list(weights), fmt, None if heldout is None else list(heldout))


def train_edit_model(model, tokenizer, data: TrainingData, out, **options):
    """Train ``model`` on ``data`` and save it with what it writes into ``out``.

    Compact spans add the position tokens to the tokenizer and model first. Training checkpoints
    in ``out/checkpoint`` and resumes there when called again; the folder is removed once the
    model is saved. With held-out examples training stops on a held-out plateau.

    Args:
        **options: :func:`steer.edits.finetune.finetune`'s (steps, batch_size, lr, patience, progress, ...).

    Returns:
        The :class:`steer.edits.finetune.Training`.
    """
    from steer.edits.compact import add_position_tokens
    from steer.edits.finetune import finetune

    prompt_key, target_key = example_fields(data.target)
    if data.fmt == "compact":
        add_position_tokens(tokenizer, model)
    out = Path(out)
    run = finetune(model, tokenizer, data.examples, prompt_key=prompt_key, target_key=target_key,
                   weights=data.weights, heldout=data.heldout, checkpoint=out / "checkpoint", **options)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "checkpoint")  # the model is saved: its training state is no longer needed
    (out / EDIT_OUTPUT_FILE).write_text(json.dumps({"target": data.target, "format": data.fmt}) + "\n",
                                        encoding="utf-8")
    return run


def trained_output(model_dir, tokenizer) -> tuple[str, str | None]:
    """(target, format) the model at ``model_dir`` was trained for (its edit_output.json, or an older
    edit_mode.json), else spans, compact when the tokenizer has position tokens, else text."""
    from steer.edits.compact import POSITION

    saved, old = Path(model_dir) / EDIT_OUTPUT_FILE, Path(model_dir) / _OLD_MODE_FILE
    if saved.is_file():
        data = json.loads(saved.read_text(encoding="utf-8"))
        return data["target"], data.get("format")
    if old.is_file():
        return _OLD_MODES[json.loads(old.read_text(encoding="utf-8"))["mode"]]
    return "spans", "compact" if POSITION.format(0) in tokenizer.get_vocab() else "text"
