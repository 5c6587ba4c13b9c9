"""Loading a frozen causal LM and its tokenizer, and encoding prompts for it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_MODEL = "TinyLlama/TinyLlama_v1.1"


def default_model() -> str:
    """``$STEER_MODEL`` if set, else TinyLlama-1.1B (the seed paper's model; needs internet once)."""
    return os.environ.get("STEER_MODEL") or DEFAULT_MODEL


def load_model(name_or_path: str, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local folder or a hub id, in eval mode with gradients off.

    A tokenizer without a pad token gets its EOS as pad; padding side is left,
    as batched generation needs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    looks_local = path.exists() or str(name_or_path).startswith((".", "/", "~"))
    if looks_local and not (path / "config.json").exists():
        raise FileNotFoundError(f"`model` {str(name_or_path)!r} is not a model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load model {str(name_or_path)!r}: {err}. Give a local folder or set STEER_MODEL"
        ) from None
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def encode_prompts(tokenizer, prompts: list[str], device=None) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` for a batch of prompts, each starting with BOS.

    Tokenizers that do not add BOS themselves (llama2.c conversions) get it
    prepended, so every model sees its training format.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("`prompts` must be a non-empty list of strings")
    rows = []
    bos = tokenizer.bos_token_id
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=True)["input_ids"]
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids:
            raise ValueError(f"prompt {p!r} tokenises to nothing")
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    if device is not None:
        input_ids, mask = input_ids.to(device), mask.to(device)
    return {"input_ids": input_ids, "attention_mask": mask}
