"""Context keys: how k-1 context tokens become one sortable int64.

The same functions run on numpy arrays (build time) and torch tensors (lookup
time), so a key computed on the GPU matches the key stored at build time.
"""

from __future__ import annotations

# Two Mersenne-like primes below 2**31. Each polynomial hash stays below 2**31,
# so ``h * base + t + 1`` stays below 2**62 and int64 arithmetic never overflows
# (signed overflow would be undefined on some backends).
_P1 = 2_147_483_647
_P2 = 2_147_483_629
_INT63 = 2**63 - 1


def exact_packing(vocab_size: int, width: int) -> bool:
    """True when ``width`` tokens pack exactly into an int64 (V**width <= 2**63 - 1)."""
    return vocab_size**width <= _INT63


def hash_bases(seed: int) -> tuple[int, int]:
    """The two multipliers of the context hash for a given ``seed``."""
    return 1_000_003 + 7_919 * seed, 999_983 + 104_729 * seed


def pack_exact(columns, vocab_size: int):
    """Exact key of a context: sum_j t_j * V**(m-1-j), in base V (Horner's rule).

    Args:
        columns: sequence of m integer arrays (numpy or torch), one per context
            position, oldest first; all the same shape.
        vocab_size: V.

    Returns:
        An int64 array of the same shape as each column. Sorting keys sorts the
        contexts lexicographically.
    """
    key = columns[0]
    for col in columns[1:]:
        key = key * vocab_size + col
    return key


def pack_hash(columns, seed: int):
    """62-bit key of a context from two polynomial hashes modulo primes below 2**31.

    key = h1 * 2**31 + h2, with h_i = fold(h * base_i + t + 1) mod P_i. Distinct
    contexts can share a key; the table keeps the context tokens of every key so
    that a collision is detected, never silently merged.
    """
    b1, b2 = hash_bases(seed)
    h1 = columns[0] * 0
    h2 = columns[0] * 0
    for col in columns:
        h1 = (h1 * b1 + col + 1) % _P1
        h2 = (h2 * b2 + col + 1) % _P2
    return h1 * 2**31 + h2


def pack(columns, vocab_size: int, hashed: bool, seed: int = 0):
    """Key of a context by the table's scheme (exact base-V packing or the hash)."""
    if hashed:
        return pack_hash(columns, seed)
    return pack_exact(columns, vocab_size)
