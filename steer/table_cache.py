"""Style tables for a corpus in a model's token space, cached on disk."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ngram import NGramTable, TableFileError, tokenizer_fingerprint
from steer.cache import cache_root
from steer.corpora import Corpus


def default_cache_dir() -> Path:
    """``$STEER_CACHE_DIR/tables`` or ``~/.cache/steer/tables``."""
    return cache_root() / "tables"


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


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str):
    from steer.models import load_tokenizer

    return load_tokenizer(name)


@dataclass(frozen=True)
class TokenisedDocs:
    """A shard for :meth:`NGramTable.from_token_shards`: documents read when called, tokenised batch by batch.

    Picklable (a path and a reader), so worker processes read and tokenise
    their own shards; each process loads the tokenizer once.
    """

    docs: Callable[[], list[str]]  # e.g. steer.corpora.FileSteerDocs
    tokenizer: str  # tokenizer (or model) folder or hub id
    batch_size: int = 1024

    def __call__(self) -> Iterator[list[int]]:
        tok = _tokenizer(self.tokenizer)
        texts = self.docs()
        for i in range(0, len(texts), self.batch_size):
            yield from tok(texts[i:i + self.batch_size], add_special_tokens=False, verbose=False)["input_ids"]


def build_table_bounded(corpus, tokenizer: str, order: int, out, *, memory_gb: float, workers: int = 1,
                        judge_fraction: float = 0.2, encoding: str = "utf-8", spill_dir=None,
                        progress: Callable[[int], None] | None = None, engine: str = "processes",
                        address: str | None = None) -> NGramTable:
    """The table of a corpus's steer split built within ``memory_gb``, one shard per corpus file.

    Equal to ``NGramTable.from_texts(load_corpus(corpus).steer, tokenizer, order)``, but
    no more than one file's text per worker is held at a time.
    """
    from steer.corpora import steer_split_by_file

    tok = _tokenizer(str(tokenizer))
    readers = steer_split_by_file(corpus, judge_fraction=judge_fraction, encoding=encoding)
    shards = [TokenisedDocs(r, str(tokenizer)) for r in readers]
    return NGramTable.from_token_shards(shards, len(tok), order, memory_gb=memory_gb, workers=workers, out=out,
                                        spill_dir=spill_dir, tokenizer_fingerprint=tokenizer_fingerprint(tok),
                                        progress=progress, engine=engine, address=address)
