"""The n-gram engine: vectorised counting, CSR tables, smoothing and batched lookup.

Knows token ids, counts and tensors; knows nothing of models or steering.
"""

from ngram.fingerprint import tokenizer_fingerprint
from ngram.persist import MAX_ORDER, TableFileError
from ngram.table import NGramTable, TokenizerMismatchError

__all__ = [
    "MAX_ORDER",
    "NGramTable",
    "TableFileError",
    "TokenizerMismatchError",
    "tokenizer_fingerprint",
]
