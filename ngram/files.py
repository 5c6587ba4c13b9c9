"""Reading and writing safetensors files safely: atomic writes, damaged files turned into clear errors."""

from __future__ import annotations

import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def write_atomic(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: folder {folder!r} does not exist")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checked(path, missing_hint: str, error: type[Exception] = ValueError):
    """(metadata, tensors) of a safetensors file; a missing or unreadable file raises with ``missing_hint``.

    Nothing is unpickled: safetensors holds raw tensor bytes and a JSON header.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file at {path!r}; {missing_hint}")
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}, {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # safetensors raises several types for damaged files
        raise error(f"{path!r} is not a readable file of this kind ({err}); {missing_hint}") from err
