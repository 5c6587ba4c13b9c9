"""Loading a frozen causal LM and its tokenizer, and encoding prompts for it."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

DEFAULT_MODEL = "TinyLlama/TinyLlama_v1.1"


def default_model() -> str:
    """``$STEER_MODEL`` if set, else TinyLlama-1.1B (the seed paper's model; needs internet once)."""
    return os.environ.get("STEER_MODEL") or DEFAULT_MODEL


_USE_LOCAL = "give a local model folder (`--model DIR` on the command line) or set STEER_MODEL"
_TRUE = ("1", "true", "yes", "on")


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the model hub cannot be reached, or None when it can.

    Offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) is read from
    the environment; otherwise one TCP connection to the hub endpoint is tried
    with a short timeout, so that an unreachable hub is found in seconds
    rather than after a minute of retries.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname or endpoint, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return f"the model hub ({host}) cannot be reached from this machine"
    return None


def load_model(name_or_path: str, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local folder or a hub id, in eval mode with gradients off.

    A hub id is loaded from the local Hugging Face cache when it is there;
    otherwise it is downloaded, unless the hub cannot be reached (offline mode
    or no network), which is said at once with a FileNotFoundError.

    A tokenizer without a pad token gets its EOS as pad; padding side is left,
    as batched generation needs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    looks_local = path.exists() or str(name_or_path).startswith((".", "/", "~"))
    if looks_local and not (path / "config.json").exists():
        raise FileNotFoundError(f"`model` {str(name_or_path)!r} is not a model folder (no config.json)")

    def load(local_only: bool):
        tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_only)
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, local_files_only=local_only), tok

    try:
        model, tokenizer = load(local_only=True)
    except OSError as err:
        if looks_local:
            raise FileNotFoundError(f"cannot load model {str(name_or_path)!r}: {str(err).rstrip('.')}") from None
        reason = hub_offline_reason()
        if reason is not None:
            raise FileNotFoundError(
                f"`model` {str(name_or_path)!r} is a hub id that is not in the local cache, and {reason}; "
                f"{_USE_LOCAL}"
            ) from None
        try:
            model, tokenizer = load(local_only=False)
        except OSError as err2:
            raise FileNotFoundError(
                f"cannot load model {str(name_or_path)!r}: {str(err2).rstrip('.')}; {_USE_LOCAL}"
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
