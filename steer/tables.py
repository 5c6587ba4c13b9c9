"""Style tables for a corpus in a model's token space, cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

from ngram import NGramTable, TableFileError, tokenizer_fingerprint
from steer.corpora import Corpus


def default_cache_dir() -> Path:
    """``$STEER_CACHE_DIR/tables`` or ``~/.cache/steer/tables``."""
    root = os.environ.get("STEER_CACHE_DIR") or Path.home() / ".cache" / "steer"
    return Path(root) / "tables"


def table_for(corpus: Corpus, tokenizer, order: int = 3, cache_dir=None) -> NGramTable:
    """The table of the corpus's steer split in ``tokenizer``'s token space, built once and cached.

    The cache key is the steer split's hash + the tokenizer fingerprint + the
    order; a damaged cache file is rebuilt.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fp = tokenizer_fingerprint(tokenizer).split(":")[1][:16]
    path = cache / f"{corpus.steer_digest[:16]}-d{len(corpus.steer)}-{fp}-n{order}.safetensors"
    if path.exists():
        try:
            return NGramTable.load(path, tokenizer=tokenizer)
        except TableFileError:
            path.unlink()
    table = NGramTable.from_texts(corpus.steer, tokenizer, order)
    cache.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table
