"""Reading and writing safetensors files safely: atomic writes, damaged files turned into clear errors,
memory-mapped reads."""

from __future__ import annotations

import json
import os
import struct

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


# safetensors dtype codes -> torch dtypes (the ones a table file may hold).
_DTYPES = {"I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "BOOL": torch.bool}


def read_mapped(path, missing_hint: str, error: type[Exception] = ValueError):
    """(metadata, tensors) of a safetensors file, the tensors memory-mapped rather than read.

    The file is mapped copy-on-write (``torch.from_file(shared=False)``): a
    page is read from disk the first time a tensor touching it is used, so
    opening costs a header parse whatever the file's size, and memory grows
    with use. A tensor whose bytes are not aligned to its element size is
    copied instead. The header (sizes, offsets, dtypes) is checked against the
    file's length; the contents are not read (see the caller's ``verify``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no file at {path!r}; {missing_hint}")
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header length {n} beyond the end of the file")
            header = json.loads(f.read(n))
        metadata = header.pop("__metadata__", None) or {}
        data = torch.from_file(path, shared=False, size=size, dtype=torch.uint8)  # (size,), lazily paged
        tensors = {}
        for name, info in header.items():
            dtype = _DTYPES[info["dtype"]]
            start, end = (8 + n + int(x) for x in info["data_offsets"])
            shape = [int(d) for d in info["shape"]]
            numel = 1
            for d in shape:
                numel *= d
            width = torch.empty(0, dtype=dtype).element_size()
            if not 8 + n <= start <= end <= size or end - start != numel * width:
                raise ValueError(f"tensor {name!r} does not fit the file (offsets {info['data_offsets']})")
            raw = data[start:end]
            if start % width:  # a view needs the element size's alignment
                raw = raw.clone()
            tensors[name] = raw.view(dtype).reshape(shape)
        return metadata, tensors
    except (OSError, ValueError, KeyError, TypeError, struct.error, RuntimeError) as err:
        raise error(f"{path!r} is not a readable file of this kind ({err}); {missing_hint}") from err
