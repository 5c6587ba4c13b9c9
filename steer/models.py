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


# The study model in the shared data folder: a real pretrained model, as the GGUF file users hold.
SHARED_STUDY_MODEL = Path("models") / "smollm2-135m-instruct"


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$STEER_SHARED_DATA``, else ``../shared/data`` from the working directory,
    else beside the source checkout steer runs from; None when none of them exists."""
    candidates = [os.environ.get("STEER_SHARED_DATA"), Path.cwd().parent / "shared" / "data",
                  Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def demo_model() -> tuple[str, str]:
    """(model, where it came from) for the demo: ``$STEER_MODEL``, else the shared SmolLM2-135M-Instruct
    GGUF when the shared data folder holds it, else :func:`default_model`'s hub model."""
    if os.environ.get("STEER_MODEL"):
        return os.environ["STEER_MODEL"], "$STEER_MODEL"
    shared = shared_data_dir()
    if shared is not None and (shared / SHARED_STUDY_MODEL).is_dir():
        return str(shared / SHARED_STUDY_MODEL), "SmolLM2-135M-Instruct (GGUF Q4_1) in the shared data folder"
    return DEFAULT_MODEL, "the seed paper's TinyLlama-1.1B from the hub (no shared data folder found)"


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


def resolve_model_source(name_or_path: str) -> str:
    """A GGUF file (or a folder holding one, or a packaged model's name such as ``"gemma3-270m"``:
    :data:`steer.gguf.PACKAGED`) -> its converted safetensors folder; anything else unchanged."""
    from steer.gguf import converted_folder, find_gguf, packaged_gguf

    gguf_file = packaged_gguf(str(name_or_path)) or find_gguf(name_or_path)
    return str(converted_folder(gguf_file)) if gguf_file is not None else name_or_path


def load_tokenizer(name_or_path: str):
    """The tokenizer of a model folder, GGUF file (converted once, as :func:`load_model` does) or hub id."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_source(str(name_or_path)))


def load_model(name_or_path: str, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local folder, a GGUF file, a packaged model or a hub id, in eval mode
    with gradients off.

    ``"gemma3-270m"`` names Gemma 3 270M (base, vocabulary 262,144), whose GGUF file the ``gemma``
    extra installs (:data:`steer.gguf.PACKAGED`).

    A ``.gguf`` file, or a folder holding exactly one (and no config.json), is
    read through transformers' GGUF loader once and cached de-quantised as a
    safetensors folder keyed by the file's sha256 (:func:`steer.gguf.converted_folder`);
    later loads read the cache. A corrupt or truncated file, or one of an
    architecture transformers cannot load, is refused naming the file.

    A hub id is loaded from the local Hugging Face cache when it is there;
    otherwise it is downloaded, unless the hub cannot be reached (offline mode
    or no network), which is said at once with a FileNotFoundError.

    A tokenizer without a pad token gets its EOS as pad; padding side is left,
    as batched generation needs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name_or_path = resolve_model_source(name_or_path)
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


# The document separator of GPT-2-style byte-level BPE pretraining (GPT-2, SmolLM, Qwen, StarCoder, ...).
DOCUMENT_SEPARATORS = ("<|endoftext|>",)


def _opens_every_turn(tokenizer, token: str | None) -> bool:
    """Whether ``token`` opens every turn of the tokenizer's chat template: a chat marker, not a document start."""
    if not token or not getattr(tokenizer, "chat_template", None):
        return False
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False)
    except Exception:  # a template that needs other roles or fields: nothing to learn from it
        return False
    return text.count(token) >= len(turns)


def document_separator_id(tokenizer) -> int | None:
    """The id of the pretraining document separator (``<|endoftext|>``) if the vocabulary has one."""
    vocab = tokenizer.get_vocab()
    for token in DOCUMENT_SEPARATORS:
        if token in vocab:
            return vocab[token]
    return None


def document_start_id(tokenizer) -> int | None:
    """The id a plain-text document starts with in the model's pretraining format, or None.

    The declared BOS, unless the chat template opens every turn with it (an
    instruct model that declares ``<|im_start|>`` as BOS, as SmolLM2 does):
    then the pretraining document separator, ``<|endoftext|>``, if the
    vocabulary has it, else nothing. llama2.c conversions get their ``<s>``.

    Example (SmolLM2-135M-Instruct): declared BOS ``<|im_start|>`` (id 1);
    ``document_start_id`` is 0, ``<|endoftext|>``. Mean log-probability per
    token of "The old man walked": -7.79 after ``<|im_start|>``, -4.75 after
    ``<|endoftext|>``.
    """
    bos = tokenizer.bos_token_id
    if bos is not None and not _opens_every_turn(tokenizer, tokenizer.bos_token):
        return bos
    return document_separator_id(tokenizer)


def stop_ids(tokenizer) -> list[int]:
    """Ids that end a continuation: the declared EOS and the document separator (where they differ)."""
    ids = [i for i in (tokenizer.eos_token_id, document_separator_id(tokenizer)) if i is not None]
    return list(dict.fromkeys(ids))


def document_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Each prompt's ids in the model's document format (unpadded): what :func:`encode_prompts` pads.

    A prompt that the tokenizer starts with no special token of its own gets
    :func:`document_start_id` prepended; one that already starts with a special
    token (the tokenizer's own BOS, a chat template's ``<|im_start|>``) is left as it is.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("`prompts` must be a non-empty list of strings")
    start = document_start_id(tokenizer)
    special = set(tokenizer.all_special_ids)
    rows = []
    for p, ids in zip(prompts, tokenizer(list(prompts), add_special_tokens=True)["input_ids"], strict=True):
        if start is not None and (not ids or ids[0] not in special):
            ids = [start, *ids]
        if not ids:
            raise ValueError(f"prompt {p!r} tokenises to nothing")
        rows.append(list(ids))
    return rows


def encode_prompts(tokenizer, prompts: list[str], device=None) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` for a batch of prompts, each in the model's document
    format (:func:`document_ids`: a llama2.c conversion's ``<s>`` or SmolLM2's ``<|endoftext|>`` first,
    unless the prompt already starts with a special token such as a chat template's ``<|im_start|>``)."""
    return pad_left(tokenizer, document_ids(tokenizer, prompts), device)


def pad_left(tokenizer, rows: list[list[int]], device=None) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` for id rows (as :func:`document_ids` gives them), left-padded
    with the tokenizer's pad id (0 if it has none)."""
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    if device is not None:
        input_ids, mask = input_ids.to(device), mask.to(device)
    return {"input_ids": input_ids, "attention_mask": mask}
