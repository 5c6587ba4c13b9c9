"""The n-gram engine: vectorised counting, CSR tables, smoothing and batched lookup.

Knows token ids, counts and tensors; knows nothing of models or steering.
"""

from ngram.arpa import ArpaFormatError, ArpaModel
from ngram.files import read_checked, write_atomic
from ngram.fingerprint import tokenizer_fingerprint
from ngram.lookup import ContrastPlan, last_ids
from ngram.persist import MAX_ORDER, TableFileError
from ngram.table import NGramTable, TokenizerMismatchError

__all__ = [
    "ArpaFormatError",
    "ArpaModel",
    "MAX_ORDER",
    "ContrastPlan",
    "NGramTable",
    "TableFileError",
    "TokenizerMismatchError",
    "last_ids",
    "read_checked",
    "tokenizer_fingerprint",
    "write_atomic",
]
