"""The table file format: what a saved table holds, and the checks that refuse damaged or foreign files.

One ``.safetensors`` file: the CSR arrays as raw tensors (nothing is
unpickled) and a JSON header with the format name and version, order,
vocabulary size, hash seed, tokenizer fingerprint, corpus statistics and a
sha256 of the tensor contents.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from ngram.files import read_checked, read_mapped, write_atomic

MAX_ORDER = 10
FORMAT_NAME = "steer-ngram"
FORMAT_VERSION = "1"
REBUILD = (
    "rebuild it with `NGramTable.from_texts(texts, tokenizer, order).save(path)` "
    "(or `steer build-table`) in the token space of the model you steer"
)


class TableFileError(ValueError):
    """A table file that is missing parts, damaged, truncated or of another format."""


def write_table(path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` and the table's ``meta`` (order, vocab_size, hash_seed, hashed_orders,
    tokenizer_fingerprint, stats) atomically, with the format header and a content checksum."""
    write_atomic(tensors, path, header_fields(meta, digest(tensors)))


def header_fields(meta: dict, content_sha256: str) -> dict[str, str]:
    """The file header of a table: format, version, its ``meta`` and the sha256 of its contents."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "order": str(meta["order"]),
        "vocab_size": str(meta["vocab_size"]),
        "hash_seed": str(meta["hash_seed"]),
        "hashed_orders": json.dumps(list(meta["hashed_orders"])),
        "tokenizer_fingerprint": meta["tokenizer_fingerprint"] or "",
        "stats": json.dumps(meta["stats"]),
        "content_sha256": content_sha256,
    }


def read_table(path, mmap: bool, verify: bool) -> tuple[dict, dict, str | None]:
    """(tensors, meta, content sha256) of a table file, or TableFileError saying what is wrong.

    ``verify``: check the checksum and scan every array's ranges (reads the
    whole file); without it only the header, shapes and offsets' ends.
    """
    path = os.fspath(path)
    if mmap:
        header, tensors = read_mapped(path, REBUILD, TableFileError)
    else:
        header, tensors = read_checked(path, REBUILD, TableFileError)
    if header.get("format") != FORMAT_NAME:
        raise TableFileError(f"{path!r} is not a steer n-gram table (format {header.get('format')!r}); {REBUILD}")
    if header.get("format_version") != FORMAT_VERSION:
        raise TableFileError(
            f"{path!r} has table format version {header.get('format_version')!r}, this steer reads "
            f"{FORMAT_VERSION!r}; {REBUILD}"
        )
    if verify and digest(tensors) != header.get("content_sha256"):
        raise TableFileError(f"{path!r} is damaged: its contents do not match its checksum; {REBUILD}")
    try:
        meta = {
            "order": int(header["order"]),
            "vocab_size": int(header["vocab_size"]),
            "hash_seed": int(header["hash_seed"]),
            "hashed_orders": json.loads(header["hashed_orders"]),
            "tokenizer_fingerprint": header.get("tokenizer_fingerprint", ""),
            "stats": json.loads(header.get("stats", "{}")),
        }
        check_structure(tensors, meta, scan=verify)
    except (KeyError, ValueError, TypeError) as err:
        raise TableFileError(f"{path!r} is inconsistent ({err}); {REBUILD}") from err
    return tensors, meta, header.get("content_sha256")


def verify_contents(tensors: dict, meta: dict, source: str, expected_sha256: str | None) -> None:
    """Checksum (when one was saved) and a full range scan of a table's arrays."""
    if expected_sha256 is not None and digest(tensors) != expected_sha256:
        raise TableFileError(f"{source!r} is damaged: its contents do not match its checksum; {REBUILD}")
    try:
        check_structure(tensors, meta, scan=True)
    except (KeyError, ValueError, TypeError) as err:
        raise TableFileError(f"{source!r} is inconsistent ({err}); {REBUILD}") from err


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        v = tensors[name].contiguous()
        h.update(f"{name}:{v.dtype}:{tuple(v.shape)}\n".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def check_structure(t: dict[str, torch.Tensor], meta: dict, scan: bool = True) -> None:
    """Shape and range checks, so a consistent-looking but wrong file is refused.

    With ``scan=False`` only shapes and the ends of the offsets are checked,
    which reads a few bytes per array (a memory-mapped table stays unread).
    """
    order, v = meta["order"], meta["vocab_size"]
    if not 1 <= order <= MAX_ORDER or v < 1:
        raise ValueError(f"order {order} / vocab_size {v} out of range")
    if tuple(t["unigram.counts"].shape) != (v,):
        raise ValueError("unigram counts do not match vocab_size")
    for k in range(2, order + 1):
        p = f"o{k}."
        keys_, off, nxt, cnt = t[p + "ctx_keys"], t[p + "offsets"], t[p + "next_ids"], t[p + "counts"]
        if off.numel() != keys_.numel() + 1 or int(off[0]) != 0 or int(off[-1]) != nxt.numel():
            raise ValueError(f"order {k}: offsets do not match the entries")
        hashed = k in meta["hashed_orders"]
        if hashed and tuple(t[p + "ctx_tokens"].shape) != (keys_.numel(), k - 1):
            raise ValueError(f"order {k}: context tokens do not match the keys")
        if not scan:
            if cnt.numel() != nxt.numel() or (k < order and t[p + "cont"].numel() != nxt.numel()):
                raise ValueError(f"order {k}: count/id length mismatch")
            continue
        if keys_.numel() > 1 and not bool((keys_[1:] > keys_[:-1]).all()):
            raise ValueError(f"order {k}: context keys are not strictly increasing")
        if bool((off[1:] <= off[:-1]).any()) or cnt.numel() != nxt.numel():
            raise ValueError(f"order {k}: empty context or count/id length mismatch")
        if nxt.numel() and (int(nxt.min()) < 0 or int(nxt.max()) >= v or int(cnt.min()) < 1):
            raise ValueError(f"order {k}: next ids or counts out of range")
        if k < order and t[p + "cont"].numel() != nxt.numel():
            raise ValueError(f"order {k}: continuation counts do not match the entries")
