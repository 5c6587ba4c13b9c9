"""ARPA backoff files: a table's Kneser-Ney estimate out, any backoff model over token ids in.

ARPA is the text format every n-gram toolkit reads and writes (KenLM, SRILM, NGPU-LM). Its words
here are token ids written as decimal numbers. Probabilities are log10 in the file and natural logs
in steer (ln p = log10 p * ln 10).

Interpolated Kneser-Ney is exactly a backoff model: for a seen n-gram (h, w) the file holds the
interpolated p(w | h), and for each context h its backoff weight g(h) = D n(h) / c(h), so that an
unseen w gets g(h) p(w | h'). :func:`write_arpa` writes a table's estimate that way, and
:class:`ArpaModel` answers ``logprobs`` by backoff from any such file.

Example:
    >>> import tempfile, torch
    >>> from ngram import NGramTable
    >>> table = NGramTable.from_token_ids([[1, 2, 3, 2, 3, 4]], vocab_size=6, order=3)
    >>> path = tempfile.mkdtemp() + "/t.arpa"
    >>> table.to_arpa(path)
    >>> model = NGramTable.from_arpa(path, vocab_size=6)
    >>> row = model.logprobs(torch.tensor([[2, 3]]))
    >>> torch.allclose(row, table.logprobs(torch.tensor([[2, 3]]), smoothing="kneser_ney"), atol=1e-6)
    True
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ngram import estimators, keys

LN10 = math.log(10.0)
# Words a toolkit expects in every file; written at log10 p = -99 (never queried) and skipped on reading.
SPECIAL = ("<s>", "</s>", "<unk>")
_FLOOR = -99.0


class ArpaFormatError(ValueError):
    """An ARPA file that cannot be read: the message names the file, the line and the reason."""


def write_arpa(table, path, discount: float = 0.75) -> None:
    """Write ``table``'s interpolated Kneser-Ney estimate (discount ``discount``) as an ARPA backoff model.

    Every unigram is listed (the estimate gives every token some mass), every stored n-gram of
    orders 2..N with its interpolated probability, and every context's backoff weight on the line of
    the n-gram it is. The file is written to a temporary name and moved into place.
    """
    if not (isinstance(discount, (int, float)) and not isinstance(discount, bool) and 0 < discount < 1):
        raise ValueError(f"`discount` must be a number in (0, 1), got {discount!r}")
    stored = {name: t.cpu() for name, t in table._on(table.device).items()}
    v, n = table.vocab_size, table.order
    coeffs = estimators.kneser_ney(stored, n, v, table.hashed_orders, table.hash_seed, float(discount))
    _, full, _ = estimators.chain_values(coeffs, stored, v, table.hashed_orders, table.hash_seed)
    sections = []  # per order: (word columns [n_k, k], log10 p [n_k]); order 1 first
    sections.append((np.arange(v, dtype=np.int64)[:, None], np.log10(coeffs.unigram)))
    contexts = {}  # order -> its contexts' ids [n_ctx, k-1], for the entries and for the backoff weights
    for k, oc, lin in zip(coeffs.orders, coeffs.per_order, full, strict=True):
        p = f"o{k}."
        off = stored[p + "offsets"].numpy().astype(np.int64)
        ctx = np.repeat(np.arange(off.size - 1), np.diff(off))
        tokens = contexts[k] = estimators.context_tokens(stored, k, v, table.hashed_orders)  # (n_ctx, k-1)
        words = np.concatenate([tokens[ctx], stored[p + "next_ids"].numpy().astype(np.int64)[:, None]], axis=1)
        # ln p_k(w | h) = full + ln G(h) (chain_values), G the product of the backoff weights down the chain.
        sections.append((words, (lin + np.log(oc.row[ctx, 0])) / LN10))
    bows = [_backoffs(stored, k, n, contexts[k], float(discount), sections[k - 2][0])
            for k in range(2, n + 1)] + [None]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write("\\data\\\n")
        f.write(f"ngram 1={v + len(SPECIAL)}\n")
        for k in range(2, n + 1):
            f.write(f"ngram {k}={sections[k - 1][0].shape[0]}\n")
        for k, ((words, logp), bow) in enumerate(zip(sections, bows, strict=True), start=1):
            f.write(f"\n\\{k}-grams:\n")
            if k == 1:
                for word in SPECIAL:
                    f.write(f"{_FLOOR:.1f}\t{word}\n")
            text = [" ".join(map(str, row)) for row in words.tolist()]
            if bow is None:
                f.writelines(f"{lp:.9g}\t{t}\n" for lp, t in zip(logp.tolist(), text, strict=True))
            else:
                for lp, t, b in zip(logp.tolist(), text, bow.tolist(), strict=True):
                    f.write(f"{lp:.9g}\t{t}\n" if b == 0.0 else f"{lp:.9g}\t{t}\t{b:.9g}\n")
        f.write("\n\\end\\\n")
    os.replace(tmp, path)


def _backoffs(stored: dict, k: int, top: int, tokens: np.ndarray, d: float, lower_words: np.ndarray) -> np.ndarray:
    """log10 g_k(h) of every (k-1)-gram ``lower_words`` [n, k-1] of the section below (0: not an order-k context).

    g_k(h) = D n_k(h) / c_k(h), 1 where c_k(h) = 0 (raw counts at the top order, continuation counts below).
    """
    _, _, tot, types = estimators._order_arrays(stored, k, "counts" if k == top else "cont")
    g = np.where(tot > 0, d * types / np.where(tot > 0, tot, 1.0), 1.0)
    have = _row_keys(tokens)  # the order-k contexts' ids
    want = _row_keys(lower_words)
    out = np.zeros(lower_words.shape[0])
    if have.size == 0:
        return out
    order = np.argsort(have, kind="stable")
    at = np.minimum(np.searchsorted(have[order], want), have.size - 1)
    found = have[order][at] == want
    out[found] = np.log10(g[order][at[found]])
    return out


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """One sortable value per row of ids (lexicographic): a structured view, so any width and vocabulary fit."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return rows.view([(f"f{i}", np.int64) for i in range(rows.shape[1])]).ravel()


# Per order k >= 2: its contexts' keys and CSR entries, and the backoff weights of the (k-1)-grams.
_ORDER_ARRAYS = ("ctx_keys", "offsets", "next_ids", "logp", "bow_keys", "bow")


class ArpaModel:
    """An ARPA backoff model over token ids, answering :meth:`logprobs` for batches of contexts by backoff.

    Read with :meth:`ngram.NGramTable.from_arpa` (or :meth:`read`). Per order k >= 2 it keeps, keyed
    by the context's k-1 ids, the context's entries (CSR: next ids and ln p) and, keyed by the
    (k-1)-gram itself, its backoff weight. A row is built upward from the unigrams: order k adds
    the backoff weight of the row's k-1 last ids and overwrites the tokens seen after them.

    Args: see :meth:`read`.
    """

    def __init__(self, vocab_size: int, unigram: np.ndarray, orders: list[dict], path: str = ""):
        self.vocab_size = vocab_size
        self.order = len(orders) + 1
        self.path = path
        arrays = {"unigram": torch.from_numpy(unigram.astype(np.float32))}  # ln p_1, [V]
        arrays.update({f"{k}.{name}": torch.from_numpy(a) for k, o in enumerate(orders, start=2)
                       for name, a in o.items()})
        self._arrays = {torch.device("cpu"): arrays}  # device -> the arrays there, moved once

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._arrays:
            self._arrays[device] = {name: t.to(device) for name, t in self._arrays[torch.device("cpu")].items()}
        return self._arrays[device]

    @classmethod
    def read(cls, path, vocab_size: int | None = None, tokenizer=None) -> ArpaModel:
        """Read an ARPA file whose words are token ids (``<s>``, ``</s>``, ``<unk>`` skipped).

        Args:
            path: the ARPA file.
            vocab_size: V; default ``len(tokenizer)``, else the largest id + 1.
            tokenizer: the tokenizer whose ids the words are (gives V).

        Raises:
            ArpaFormatError: a malformed file (line number and reason), or ids outside [0, V).
        """
        path = str(path)
        if vocab_size is None and tokenizer is not None:
            vocab_size = len(tokenizer)
        if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
                                       or vocab_size < 1):
            raise ValueError(f"`vocab_size` must be an int >= 1, got {vocab_size!r}")
        counts, grams = _parse(path)
        top = max((int(w.max()) for w, _, _ in grams.values() if w.size), default=-1)
        v = vocab_size if vocab_size is not None else top + 1
        if top >= v:
            raise ArpaFormatError(f"{path}: token id {top} is outside the vocabulary [0, {v})")
        n = max(counts)
        if not keys.exact_packing(v, max(n - 1, 1)):
            raise ArpaFormatError(f"{path}: order {n} over {v} tokens does not key exactly in int64")
        words1, logp1, bow1 = grams[1]
        unigram = np.full(v, _FLOOR * LN10)
        unigram[words1[:, 0]] = logp1 * LN10
        bows = {1: (words1, bow1)}
        orders = []
        for k in range(2, n + 1):
            words, logp, bow = grams[k]
            bows[k] = (words, bow)
            lower_words, lower_bow = bows[k - 1]
            ctx = keys.pack_exact(list(words[:, :-1].T), v) if words.size else np.zeros(0, np.int64)
            sort = np.lexsort((words[:, -1], ctx)) if words.size else np.zeros(0, np.int64)
            ctx_sorted = ctx[sort]
            uniq, start = np.unique(ctx_sorted, return_index=True)
            offsets = np.append(start, ctx_sorted.size).astype(np.int64)
            bow_keys = keys.pack_exact(list(lower_words.T), v)
            has = lower_bow != 0
            bow_order = np.argsort(bow_keys[has])
            orders.append({"ctx_keys": uniq.astype(np.int64), "offsets": offsets,
                           "next_ids": words[sort, -1].astype(np.int64),
                           "logp": (logp[sort] * LN10).astype(np.float32),
                           "bow_keys": bow_keys[has][bow_order].astype(np.int64),
                           "bow": (lower_bow[has][bow_order] * LN10).astype(np.float32)})
        return cls(v, unigram, orders, path)

    def check_tokenizer(self, tokenizer) -> None:
        """An ARPA file names no tokenizer: only the vocabulary size is checked."""
        if len(tokenizer) > self.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the ARPA model {self.vocab_size}")

    def logprobs(self, contexts: torch.Tensor) -> torch.Tensor:
        """ln p(w | the last N-1 ids of each row) for every w, float32 [B, V]; ids < 0 match nothing."""
        if not isinstance(contexts, torch.Tensor) or contexts.dim() != 2 or contexts.dtype.is_floating_point:
            raise TypeError("`contexts` must be an integer torch.Tensor [B, T]")
        device = contexts.device
        b = contexts.shape[0]
        arrays = self._on(device)
        row = arrays["unigram"].expand(b, -1).clone()
        for k in range(2, self.order + 1):
            o = {name: arrays[f"{k}.{name}"] for name in _ORDER_ARRAYS}
            tail = _tail(contexts, k - 1)  # (B, k-1), -1 where the row is shorter
            ok = (tail >= 0).all(dim=1) & (tail < self.vocab_size).all(dim=1)
            key = keys.pack_exact(list(tail.clamp(min=0).long().T), self.vocab_size)
            # Unseen tokens: the (k-1)-gram's backoff weight on top of the lower orders' row.
            row.add_(_lookup(o["bow_keys"], o["bow"], key, ok).unsqueeze(1))
            # Seen tokens: their own probability.
            at, found = _find(o["ctx_keys"], key, ok)
            start = torch.where(found, o["offsets"][at], 0)
            length = torch.where(found, o["offsets"][at + 1] - o["offsets"][at], 0)
            total = int(length.sum())
            if total:
                # Row r owns entries start_r .. start_r + length_r - 1: one flat gather for all rows.
                owner = torch.repeat_interleave(torch.arange(b, device=device), length, output_size=total)
                first = torch.cumsum(length, 0) - length
                pos = start[owner] + torch.arange(total, device=device) - first[owner]
                row[owner, o["next_ids"][pos]] = o["logp"][pos]
        return row

    def score(self, contexts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ln p(target | context) per row, float32 [B]."""
        return self.logprobs(contexts).gather(1, targets.long().view(-1, 1)).squeeze(1)


def _tail(contexts: torch.Tensor, m: int) -> torch.Tensor:
    """The last m ids of every row, left-padded with -1."""
    if contexts.shape[1] >= m:
        return contexts[:, contexts.shape[1] - m:]
    pad = torch.full((contexts.shape[0], m - contexts.shape[1]), -1, dtype=contexts.dtype, device=contexts.device)
    return torch.cat([pad, contexts], dim=1)


def _find(sorted_keys: torch.Tensor, key: torch.Tensor, ok: torch.Tensor):
    if sorted_keys.numel() == 0:
        return torch.zeros_like(key), torch.zeros_like(ok)
    at = torch.searchsorted(sorted_keys, key).clamp(max=sorted_keys.numel() - 1)
    return at, ok & (sorted_keys[at] == key)


def _lookup(sorted_keys: torch.Tensor, values: torch.Tensor, key: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    at, found = _find(sorted_keys, key, ok)
    if sorted_keys.numel() == 0:
        return torch.zeros(key.shape, dtype=torch.float32, device=key.device)
    return torch.where(found, values[at], 0.0)


def _parse(path: str):
    """({order: count}, {order: (words int64 [n, k], log10 p float64 [n], log10 bow float64 [n])})."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"ARPA file {path!r} not found")
    counts: dict[int, int] = {}
    rows: dict[int, tuple[list, list, list]] = {}
    state, k = "start", 0
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            where = f"{path}, line {number}"
            if state == "start":
                if text == "\\data\\":
                    state = "data"
                continue  # text before \data\ is a comment
            if text == "\\end\\":
                state = "end"
                break
            if text.startswith("\\") and text.endswith("-grams:"):
                try:
                    k = int(text[1:-len("-grams:")])
                except ValueError:
                    raise ArpaFormatError(f"{where}: bad section header {text!r}") from None
                if k not in counts:
                    raise ArpaFormatError(f"{where}: section {k}-grams is not in the \\data\\ counts")
                state, rows[k] = "grams", ([], [], [])
                continue
            if state == "data":
                if not text.startswith("ngram "):
                    raise ArpaFormatError(f"{where}: expected 'ngram K=COUNT' in \\data\\, got {text[:40]!r}")
                try:
                    order, count = (int(x) for x in text[len("ngram "):].split("="))
                except ValueError:
                    raise ArpaFormatError(f"{where}: bad count line {text[:40]!r}") from None
                if order < 1 or count < 0:
                    raise ArpaFormatError(f"{where}: bad count line {text[:40]!r}")
                counts[order] = count
                continue
            parts = text.split()
            if len(parts) not in (k + 1, k + 2):
                raise ArpaFormatError(f"{where}: a {k}-gram line needs log10 p, {k} words and an optional "
                                      f"backoff; got {len(parts)} fields")
            words = parts[1:k + 1]
            if any(w in SPECIAL for w in words):
                continue
            try:
                logp = float(parts[0])
                bow = float(parts[k + 1]) if len(parts) == k + 2 else 0.0
                ids = [int(w) for w in words]
            except ValueError:
                raise ArpaFormatError(f"{where}: expected numbers and token ids, got {text[:60]!r}") from None
            if not (math.isfinite(logp) and math.isfinite(bow)) or logp > 0 or min(ids) < 0:
                raise ArpaFormatError(f"{where}: log10 p must be finite and <= 0, ids >= 0; got {text[:60]!r}")
            w, p, b = rows[k]
            w.append(ids)
            p.append(logp)
            b.append(bow)
    if state != "end":
        raise ArpaFormatError(f"{path}: no \\end\\ line (truncated file?)" if state != "start"
                              else f"{path}: no \\data\\ section: not an ARPA file")
    expected = set(range(1, max(counts) + 1)) if counts else set()
    if set(counts) != expected or set(rows) != expected:
        raise ArpaFormatError(f"{path}: orders {sorted(counts)} counted, sections {sorted(rows)} found; "
                              f"both must be 1..N")
    grams = {}
    for k, (w, p, b) in rows.items():
        grams[k] = (np.asarray(w, dtype=np.int64).reshape(-1, k), np.asarray(p, dtype=np.float64),
                    np.asarray(b, dtype=np.float64))
    return counts, grams
