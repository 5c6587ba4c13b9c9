"""A tokenizer's fingerprint: a hash of its vocabulary, to bind tables to a token space."""

from __future__ import annotations

import hashlib


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 over the tokenizer's (id, piece) pairs, sorted by id.

    Two tokenizers with the same vocabulary (the same piece at every id) share a
    fingerprint, whatever their class or normaliser; a table built in one token
    space is refused in another.

    Args:
        tokenizer: anything with ``get_vocab() -> dict[str, int]`` (Hugging Face
            tokenizers have it).

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    if not hasattr(tokenizer, "get_vocab"):
        raise TypeError(
            f"`tokenizer` must have a get_vocab() method (a Hugging Face tokenizer), "
            f"got {type(tokenizer).__name__}"
        )
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    h = hashlib.sha256()
    for piece, idx in items:
        h.update(f"{idx}\t{piece}\n".encode("utf-8", "surrogatepass"))
    return "sha256:" + h.hexdigest()
