"""NGramTable: CSR n-gram storage and its verbs (build, merge, count, logprobs, save/load).

The estimators' maths live in :mod:`ngram.estimators`, the per-step lookup in
:mod:`ngram.lookup`, the file format and its checks in :mod:`ngram.persist`.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from ngram import counts as C
from ngram import estimators, keys
from ngram.fingerprint import tokenizer_fingerprint
from ngram.lookup import DENSE_ROWS_BYTES, OrderMeta, StepPlan, find_contexts, prepare_tail
from ngram.options import LookupOptions, resolve_options
from ngram.persist import MAX_ORDER, REBUILD, read_table, verify_contents, write_table

# Below this many tokens from_texts warns that the table barely steers.
SMALL_CORPUS_TOKENS = 1000


class TokenizerMismatchError(ValueError):
    """A table used with a tokenizer other than the one it was built with."""


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"`{name}` must be {rng}, got {value}")
    return value


class NGramTable:
    """Counts of all n-grams of orders 1..N of a corpus, in a model's token space.

    Unigram counts are dense; each order k >= 2 is stored in CSR form: the
    distinct contexts (the k-1 previous tokens) as sorted int64 keys, offsets,
    next-token ids and counts. Keys are an exact base-V packing when V**(k-1)
    fits in 63 bits, else a 62-bit hash with the context tokens kept so that a
    collision is detected at lookup. For Kneser-Ney, continuation counts of
    every order below N are computed at build time.

    Build with :meth:`from_texts` (binds the table to the tokenizer's
    fingerprint) or :meth:`from_token_ids`; query with :meth:`logprobs`,
    :meth:`count` and :meth:`prob`; persist with :meth:`save` / :meth:`load`.

    Example:
        >>> table = NGramTable.from_token_ids([[1, 2, 3, 2, 3]], vocab_size=5, order=3)
        >>> table.count([2, 3])
        2
        >>> lp = table.logprobs(torch.tensor([[1, 2]]), smoothing="kneser_ney")
        >>> round(lp.exp().sum().item(), 5)
        1.0
    """

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict):
        self.order = int(meta["order"])
        self.vocab_size = int(meta["vocab_size"])
        self.hash_seed = int(meta["hash_seed"])
        self.hashed_orders = tuple(int(k) for k in meta["hashed_orders"])
        self.fingerprint = meta.get("tokenizer_fingerprint") or None
        self.stats = dict(meta.get("stats", {}))
        self._stored = dict(tensors)
        self._order_metas: dict[int, OrderMeta] | None = None
        self.device = next(iter(tensors.values())).device
        self._cache: dict[torch.device, dict[str, torch.Tensor]] = {}
        # One StepPlan per (device, options), built on first use: a
        # memory-mapped table then costs nothing until it is queried.
        self._plans: dict[tuple, StepPlan] = {}
        self._derived = False

    # ------------------------------------------------------------------ build
    @classmethod
    def from_token_ids(
        cls,
        docs: Iterable,
        vocab_size: int,
        order: int,
        *,
        tokenizer_fingerprint: str | None = None,
    ) -> NGramTable:
        """Count n-grams of orders 1..``order`` in documents of token ids.

        Args:
            docs: iterable of 1-D integer sequences (lists, numpy arrays, tensors),
                one per document; n-grams never cross from one to the next.
            vocab_size: V, the size of the token space (every id in [0, V)).
            order: N, the highest order (1..MAX_ORDER).
            tokenizer_fingerprint: recorded in the table (``from_texts`` fills it).

        Returns:
            The table, on the CPU.
        """
        vocab_size = _check_int("vocab_size", vocab_size, 1)
        order = _check_int("order", order, 1, MAX_ORDER)
        started = time.perf_counter()
        tokens, lengths = C.flatten_docs(docs, vocab_size)
        remaining = C.remaining_in_doc(lengths)
        hashed = [k for k in range(2, order + 1) if not keys.exact_packing(vocab_size, k - 1)]

        for seed in range(C.MAX_HASH_ATTEMPTS):
            try:
                per_order = {
                    k: C.count_order(tokens, remaining, k, vocab_size, k in hashed, seed)
                    for k in range(2, order + 1)
                }
                break
            except C.HashCollision:
                continue
        else:  # pragma: no cover - needs MAX_HASH_ATTEMPTS 62-bit collisions in a row
            raise RuntimeError("context hash collided under every seed; report this corpus")
        unigram = np.bincount(tokens, minlength=vocab_size)
        stats = {"n_tokens": int(tokens.size), "n_docs": int(lengths.size)}
        return cls._assemble(unigram, per_order, order, vocab_size, hashed, seed, tokenizer_fingerprint, stats,
                             started)

    @classmethod
    def _assemble(cls, unigram: np.ndarray, per_order: dict, order: int, vocab_size: int, hashed: list,
                  seed: int, tokenizer_fingerprint: str | None, stats: dict, started: float) -> NGramTable:
        """The table from its counts: continuation counts derived, tensors packed, statistics filled in."""
        tensors = {"unigram.counts": torch.from_numpy(np.asarray(unigram))}
        if order >= 2:
            tensors["unigram.cont"] = torch.from_numpy(
                C.continuation_counts(None, per_order[2], 1, vocab_size, False, 2 in hashed, seed)
            )
        for k in range(2, order + 1):
            oc = per_order[k]
            if k < order:
                oc.cont_counts = C.continuation_counts(
                    oc, per_order[k + 1], k, vocab_size, k in hashed, k + 1 in hashed, seed
                )
            p = f"o{k}."
            tensors[p + "ctx_keys"] = torch.from_numpy(oc.ctx_keys)
            tensors[p + "offsets"] = torch.from_numpy(oc.offsets)
            tensors[p + "next_ids"] = torch.from_numpy(oc.next_ids.astype(np.int32))
            tensors[p + "counts"] = torch.from_numpy(_narrow(oc.counts))
            if oc.cont_counts is not None:
                tensors[p + "cont"] = torch.from_numpy(_narrow(oc.cont_counts))
            if oc.ctx_tokens is not None:
                tensors[p + "ctx_tokens"] = torch.from_numpy(oc.ctx_tokens.astype(np.int32))

        stats = {
            **stats,
            "ngram_types": {"1": int(np.count_nonzero(tensors["unigram.counts"].numpy()))},
            "contexts": {},
        }
        for k in range(2, order + 1):
            stats["ngram_types"][str(k)] = int(per_order[k].next_ids.size)
            stats["contexts"][str(k)] = int(per_order[k].ctx_keys.size)
        stats["build_seconds"] = round(time.perf_counter() - started, 3)
        meta = {
            "order": order,
            "vocab_size": vocab_size,
            "hash_seed": seed,
            "hashed_orders": hashed,
            "tokenizer_fingerprint": tokenizer_fingerprint,
            "stats": stats,
        }
        return cls(tensors, meta)

    @classmethod
    def merge(cls, tables: Sequence[NGramTable]) -> NGramTable:
        """One table holding the counts of several, exactly as if their corpora had been counted together.

        Counts of every order add up; Kneser-Ney continuation counts and the
        per-context statistics are recomputed from the merged counts, so the
        result equals, tensor for tensor, :meth:`from_token_ids` on all the
        tables' documents (n-grams never cross documents, so nothing is lost
        at the seams). Hashed contexts are re-keyed together, rehashing with
        another seed if two of them collide. This is the reduce step of a
        sharded build: count shards separately, then merge.

        Args:
            tables: tables with one order, vocabulary size and tokenizer fingerprint.

        Raises:
            ValueError: no tables, or tables that do not fit together (the message says which).

        Example:
            >>> a = NGramTable.from_token_ids([[1, 2, 3]], vocab_size=5, order=2)
            >>> b = NGramTable.from_token_ids([[2, 3, 4]], vocab_size=5, order=2)
            >>> NGramTable.merge([a, b]).count([2, 3])
            2
        """
        if isinstance(tables, NGramTable) or not tables:
            raise ValueError("`tables` must be a non-empty sequence of NGramTable")
        for i, t in enumerate(tables):
            if not isinstance(t, NGramTable):
                raise TypeError(f"`tables[{i}]` must be an NGramTable, got {type(t).__name__}")
        first = tables[0]
        for i, t in enumerate(tables[1:], start=1):
            for name in ("order", "vocab_size", "fingerprint"):
                if getattr(t, name) != getattr(first, name):
                    raise ValueError(f"`tables[{i}]` has {name} {getattr(t, name)!r} but `tables[0]` has "
                                     f"{getattr(first, name)!r}: only tables built alike can merge")
        started = time.perf_counter()
        order, vocab_size = first.order, first.vocab_size
        hashed = [k for k in range(2, order + 1) if not keys.exact_packing(vocab_size, k - 1)]
        parts = {k: [t._order_entries(k) for t in tables] for k in range(2, order + 1)}
        for seed in range(C.MAX_HASH_ATTEMPTS):
            try:
                per_order = {k: C.merge_order(parts[k], k, vocab_size, k in hashed, seed)
                             for k in range(2, order + 1)}
                break
            except C.HashCollision:
                continue
        else:  # pragma: no cover - needs MAX_HASH_ATTEMPTS 62-bit collisions in a row
            raise RuntimeError("context hash collided under every seed; report these tables")
        unigram = sum(t._stored["unigram.counts"].cpu().numpy().astype(np.int64) for t in tables)
        stats = {"n_tokens": sum(int(t.stats.get("n_tokens", 0)) for t in tables),
                 "n_docs": sum(int(t.stats.get("n_docs", 0)) for t in tables), "merged_from": len(tables)}
        return cls._assemble(unigram, per_order, order, vocab_size, hashed, seed, first.fingerprint, stats, started)

    @classmethod
    def from_token_shards(
        cls,
        shards: Sequence,
        vocab_size: int,
        order: int,
        *,
        memory_gb: float = 2.0,
        workers: int = 1,
        out=None,
        spill_dir=None,
        tokenizer_fingerprint: str | None = None,
        progress: Callable[[int], None] | None = None,
        engine: str = "processes",
        address: str | None = None,
    ) -> NGramTable:
        """Count a corpus too big for memory: shard by shard into sorted runs on disk, merged block by block.

        Working memory stays within ``memory_gb`` whatever the corpus size (a
        chunk of each shard is counted at a time, and the merge reads one block
        of the key space at a time); the table is written straight to ``out``
        and memory-mapped from there. The result equals :meth:`from_token_ids`
        on all the shards' documents, array for array. See :mod:`ngram.sharded`.

        Args:
            shards: a sequence of shards; a shard is an iterable of documents
                (1-D token-id sequences) or a callable returning one. With
                ``workers > 1`` shards are counted in worker processes and must
                pickle (a list of arrays, or a ``functools.partial`` that reads
                a file): a generator does not.
            vocab_size: V (every id in [0, V)).
            order: N; whole n-grams must pack into 63 bits (N <= 4 at V = 32,000).
            memory_gb: the budget for the build's processes together, in GiB.
            workers: processes counting shards at once.
            out: the table file to write; None: a temporary file, read into
                memory and removed (the table then occupies memory).
            spill_dir: where the temporary runs go (default: the system's
                temporary folder); they are removed at the end, also on errors
                and Ctrl-C. They take about 16 bytes per distinct n-gram of
                each chunk.
            tokenizer_fingerprint: recorded in the table.
            progress: called with the number of tokens counted, as counting goes.
            engine: "processes" (``workers`` local processes) or "ray": shards
                counted as Ray tasks (``steer[ray]``; :mod:`ngram.distributed`),
                on the cluster at ``address`` or, when None, a local Ray with
                ``workers`` CPUs. On a cluster ``spill_dir`` must be shared by
                all nodes.
            address: the Ray cluster's address (with ``engine="ray"``).

        Example:
            >>> shards = [functools.partial(read_ids, f) for f in files]  # doctest: +SKIP
            >>> table = NGramTable.from_token_shards(shards, 32000, 3, memory_gb=2, workers=2,
            ...                                      out="books.safetensors")  # doctest: +SKIP
        """
        from ngram import sharded

        vocab_size = _check_int("vocab_size", vocab_size, 1)
        order = _check_int("order", order, 1, MAX_ORDER)
        workers = _check_int("workers", workers, 1)
        if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not math.isfinite(memory_gb) \
                or memory_gb <= 0:
            raise ValueError(f"`memory_gb` must be a finite number > 0, got {memory_gb!r}")
        if isinstance(shards, (str, bytes)) or not isinstance(shards, Sequence) or not shards:
            raise ValueError(f"`shards` must be a non-empty sequence of shards, got {type(shards).__name__}")
        if out is not None:
            sharded.build(shards, vocab_size, order, out, memory_bytes=int(memory_gb * 2**30), workers=workers,
                          spill_dir=spill_dir, tokenizer_fingerprint=tokenizer_fingerprint, progress=progress,
                          engine=engine, address=address)
            return cls.load(out, mmap=True)
        with tempfile.TemporaryDirectory(prefix="steer-table-", dir=spill_dir) as tmp:
            path = os.path.join(tmp, "table.safetensors")
            sharded.build(shards, vocab_size, order, path, memory_bytes=int(memory_gb * 2**30), workers=workers,
                          spill_dir=spill_dir, tokenizer_fingerprint=tokenizer_fingerprint, progress=progress,
                          engine=engine, address=address)
            return cls.load(path)

    def _order_entries(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(context tokens [n, k-1], next ids [n], counts [n]) of every order-k entry, int64 numpy."""
        p = f"o{k}."
        t = {n: v.cpu().numpy() for n, v in self._stored.items() if n.startswith(p)}
        oc = C.OrderCounts(ctx_keys=t[p + "ctx_keys"].astype(np.int64), offsets=t[p + "offsets"].astype(np.int64),
                           next_ids=t[p + "next_ids"].astype(np.int64), counts=t[p + "counts"].astype(np.int64),
                           ctx_tokens=t[p + "ctx_tokens"].astype(np.int64) if p + "ctx_tokens" in t else None)
        ctx = C.context_token_matrix(oc, k, self.vocab_size, k in self.hashed_orders)  # (n_ctx, k-1)
        return np.repeat(ctx, np.diff(oc.offsets), axis=0), oc.next_ids, oc.counts

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer, order: int, *, batch_size: int = 1024):
        """Tokenise texts (no special tokens) and count their n-grams.

        Each text is one document. The table records the tokenizer's
        fingerprint, and its vocabulary size is ``len(tokenizer)``.

        Args:
            texts: iterable of strings, one per document.
            tokenizer: a Hugging Face tokenizer (the steered model's).
            order: N, the highest order.
            batch_size: texts tokenised per call.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("`texts` must be an iterable of strings (documents), got a single string")
        order = _check_int("order", order, 1, MAX_ORDER)
        fingerprint = tokenizer_fingerprint(tokenizer)
        docs, batch, n_texts, has_text = [], [], 0, False
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"`texts` must hold strings, got {type(text).__name__}")
            n_texts += 1
            has_text = has_text or not text.isspace() and text != ""
            batch.append(text)
            if len(batch) == batch_size:
                docs.extend(tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"])
                batch = []
        if batch:
            docs.extend(tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"])
        if n_texts == 0:
            raise ValueError("`texts` is empty: give at least one document")
        if not has_text:
            raise ValueError(f"`texts` holds no text: all {n_texts} documents are empty or whitespace")
        if not any(len(d) for d in docs):
            raise ValueError(f"`texts` tokenises to nothing ({n_texts} texts, 0 tokens)")
        n_tokens = sum(len(d) for d in docs)
        if n_tokens < SMALL_CORPUS_TOKENS:
            warnings.warn(
                f"a table of {n_tokens} tokens is too small to steer much: most contexts are unseen "
                f"and back off to unigrams; a style corpus of at least {SMALL_CORPUS_TOKENS:,} tokens "
                "(ideally 100,000 or more) is advised",
                UserWarning, stacklevel=2,
            )
        return cls.from_token_ids(
            docs, len(tokenizer), order, tokenizer_fingerprint=fingerprint
        )

    # ------------------------------------------------------------- derived
    @property
    def _metas(self) -> dict[int, OrderMeta]:
        self._ensure_derived()
        return self._order_metas

    def _ensure_derived(self) -> None:
        if not self._derived:
            self._derive(self._stored)
            self._derived = True

    def _derive(self, t: dict[str, torch.Tensor]) -> None:
        """Per-order lookup metadata from the stored CSR arrays."""
        self._order_metas = {
            k: OrderMeta(k=k, hashed=k in self.hashed_orders, n_ctx=int(t[f"o{k}.ctx_keys"].numel()))
            for k in range(2, self.order + 1)
        }

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        self._ensure_derived()
        if device == self.device:
            return self._stored
        if device not in self._cache:
            self._cache[device] = {n: v.to(device) for n, v in self._stored.items()}
        return self._cache[device]

    def to(self, device) -> NGramTable:
        """This table with its arrays on ``device`` (a new object; self is unchanged)."""
        device = torch.device(device)
        self._ensure_derived()
        table = object.__new__(NGramTable)
        table.__dict__.update(self.__dict__)
        table._stored = {n: v.to(device) for n, v in self._stored.items()}
        table.device = device
        table._cache = {}
        table._plans = {}
        return table

    # ------------------------------------------------------------- queries
    def count(self, ngram: Sequence[int]) -> int:
        """c(ngram): how often the 1..N ids occur in this order inside one document.

        Example:
            >>> t = NGramTable.from_token_ids([[0, 1, 0, 1]], vocab_size=2, order=2)
            >>> t.count([0, 1]), t.count([1, 0]), t.count([1])
            (2, 1, 2)
        """
        ids = self._check_ngram(ngram)
        if len(ids) == 1:
            return int(self._stored["unigram.counts"][ids[0]])
        k = len(ids)
        self._ensure_derived()
        t = self._stored
        ctx = torch.tensor([ids[:-1]], dtype=torch.long, device=self.device)
        hits = find_contexts(t, self._metas[k], *prepare_tail(ctx, self.order, self.vocab_size), self.vocab_size,
                             self.hash_seed)
        if hits is None or not bool(hits[0][0]):
            return 0
        idx = int(hits[1][0])
        lo, hi = int(t[f"o{k}.offsets"][idx]), int(t[f"o{k}.offsets"][idx + 1])
        nxt = t[f"o{k}.next_ids"][lo:hi].long()
        pos = int(torch.searchsorted(nxt, torch.tensor(ids[-1], device=self.device)))
        if pos < nxt.numel() and int(nxt[pos]) == ids[-1]:
            return int(t[f"o{k}.counts"][lo + pos])
        return 0

    def count_many(self, ngrams: torch.Tensor) -> torch.Tensor:
        """c(g) for every row g of ``ngrams`` (LongTensor [M, k], 1 <= k <= N), vectorised.

        Returns:
            LongTensor [M] on ``ngrams.device``; 0 for unseen n-grams and for rows
            holding ids outside [0, V).
        """
        self.check_contexts(ngrams, validate=False)
        m, k = ngrams.shape
        if not 1 <= k <= self.order:
            raise ValueError(f"`ngrams` must have 1..{self.order} columns, got {k}")
        t = self._on(ngrams.device)
        g = ngrams.long()
        ok = ((g >= 0) & (g < self.vocab_size)).all(dim=1)  # (M,)
        w = g[:, -1].clamp(0, self.vocab_size - 1)
        if k == 1:
            return torch.where(ok, t["unigram.counts"][w].long(), 0)
        hits = find_contexts(t, self._metas[k], *prepare_tail(g[:, :-1], self.order, self.vocab_size),
                             self.vocab_size, self.hash_seed)
        if hits is None:
            return torch.zeros(m, dtype=torch.long, device=g.device)
        # Entries are sorted by (context index, next id), so ctx_index * V + next
        # is a sorted global key: one searchsorted finds every n-gram at once.
        keys_ = self._entry_keys(t, k)
        want = hits[1] * self.vocab_size + w  # (M,)
        pos = torch.searchsorted(keys_, want).clamp(max=keys_.numel() - 1)
        found = hits[0] & ok & (keys_[pos] == want)
        return torch.where(found, t[f"o{k}.counts"][pos].long(), 0)

    def _entry_keys(self, t, k: int) -> torch.Tensor:
        name = f"o{k}.entry_keys"
        if name not in t:
            off = t[f"o{k}.offsets"]
            fan = off[1:] - off[:-1]
            ctx_index = torch.repeat_interleave(torch.arange(fan.shape[0], device=off.device), fan)
            t[name] = ctx_index * self.vocab_size + t[f"o{k}.next_ids"].long()
        return t[name]

    def prob(self, ngram: Sequence[int], **options) -> float:
        """p(w | h) for ngram = (*h, w) under ``options`` (as in :meth:`logprobs`)."""
        ids = self._check_ngram(ngram, max_len=None)
        ctx = torch.tensor([ids[:-1]], dtype=torch.long, device=self.device)
        return math.exp(float(self.logprobs(ctx, **options)[0, ids[-1]]))

    def _check_ngram(self, ngram, max_len: int | None = -1) -> list[int]:
        max_len = self.order if max_len == -1 else max_len
        if hasattr(ngram, "tolist"):
            ngram = ngram.tolist()
        if isinstance(ngram, (str, bytes)) or not isinstance(ngram, Sequence):
            raise TypeError(f"`ngram` must be a sequence of token ids, got {ngram!r}")
        if not ngram or (max_len is not None and len(ngram) > max_len):
            raise ValueError(f"`ngram` must hold 1..{max_len or 'any'} ids, got {len(ngram)}")
        ids = [_check_int("ngram", i, 0, self.vocab_size - 1) for i in ngram]
        return ids

    def options(self, **options) -> LookupOptions:
        """Validate lookup options once (see :meth:`logprobs`) for :meth:`logprobs_with`."""
        return resolve_options(self.order, **options)

    def logprobs(
        self,
        contexts: torch.Tensor,
        *,
        order: int | None = None,
        weights=None,
        alpha: float = 0.01,
        mode: str = "mixture",
        smoothing: str = "add_alpha",
        discount: float = 0.75,
        validate: bool = True,
    ) -> torch.Tensor:
        """Natural-log next-token distributions for every row of ``contexts`` at once.

        Runs on ``contexts.device`` (CPU or CUDA) with no loop over rows or
        vocabulary: contexts are found by searchsorted on the sorted keys, their
        CSR ranges gathered and scattered into dense rows. Let h_k be the last
        k-1 tokens of a row, c(h, w) the count of h followed by w, c(h) = sum_w
        c(h, w), V the vocabulary size, C the number of tokens in the corpus.

        Three forms:

        * ``order=k``: add-alpha estimate of one order,
          p_k(w|h) = (c(h,w) + alpha) / (c(h) + alpha * V), with c(h) = C for k = 1.
          A row whose h was never seen, or with fewer than k-1 tokens, gets
          c = 0, i.e. the uniform 1/V.
        * ``weights=(b_1..b_N)`` (default all 1): a combination over the orders
          that match the row (order 1 always; k >= 2 when the row has >= k-1
          tokens and c(h_k) > 0), each p_k add-alpha as above.
          ``mode="logsum"``: sum_matching b_k * log p_k(w|h_k) (not normalised);
          ``mode="mixture"``: log(sum_matching b_k p_k(w|h_k) / sum_matching b_k),
          a proper distribution. If b_1 = 0 and no higher order matches, the
          mixture row falls back to p_1 and the logsum row is all zeros.
        * ``smoothing="kneser_ney"``: interpolated Kneser-Ney over all orders
          with discount D. Order N uses raw counts; each order k < N uses
          continuation counts c_k(h,w) = |{u : c(u,h,w) > 0}|. If c_k(h) > 0:
          p_k(w|h) = max(c_k(h,w) - D, 0)/c_k(h) + D n_k(h)/c_k(h) p_{k-1}(w|h')
          with n_k(h) = |{w : c_k(h,w) > 0}| and h' = h without its first token;
          else p_k(w|h) = p_{k-1}(w|h'). Unigram: p_1(w) = max(c_1(w) - D, 0)/C1
          + D n_1/C1 * 1/V, C1 = sum_w c_1(w) (uniform if C1 = 0).

        Args:
            contexts: LongTensor [B, T], any T >= 0 (only the last N-1 tokens matter).
            order, weights, alpha, mode, smoothing, discount: select the form above.
            validate: check that ids lie in [0, V) (one host sync on CUDA). With
                False, a context holding an out-of-range id simply never matches.

        Returns:
            float32 [B, V] on ``contexts.device``.

        Example:
            >>> t = NGramTable.from_token_ids([[0, 1, 2, 1, 2]], vocab_size=3, order=2)
            >>> t.logprobs(torch.tensor([[1]]), order=2, alpha=1.0).exp()
            tensor([[0.2000, 0.2000, 0.6000]])

            Wrong: ``t.logprobs(torch.tensor([1]))`` (1-D); contexts are always [B, T].
        """
        opts = resolve_options(
            self.order, order=order, weights=weights, alpha=alpha, mode=mode,
            smoothing=smoothing, discount=discount,
        )
        return self.logprobs_with(contexts, opts, validate=validate)

    def logprobs_with(self, contexts: torch.Tensor, opts: LookupOptions, validate: bool = True):
        """:meth:`logprobs` with options already validated by :meth:`options`."""
        self.check_contexts(contexts, validate)
        return self.plan(opts, contexts.device)(contexts)

    def score(self, contexts: torch.Tensor, targets: torch.Tensor, *, validate: bool = True,
              **options) -> torch.Tensor:
        """Natural-log probability of one next token per context: log p(targets[i] | contexts[i]).

        A point query (KenLM's ``score``, infini-gram's ``prob``): equal to
        ``logprobs(contexts, **options).gather(1, targets[:, None])[:, 0]`` but
        never builds a [B, V] row, so scoring a text of M tokens costs O(M log n)
        rather than O(M V). Same options and estimates as :meth:`logprobs`
        (for ``mode="logsum"`` the value is the seed paper's unnormalised score).

        Args:
            contexts: integer ids [B, T], any T >= 0 (only the last N-1 matter);
                pad short rows on the left with -1, which matches nothing.
            targets: integer ids [B] in [0, V).
            validate: check ids' ranges (one host sync on CUDA).
            **options: as in :meth:`logprobs`.

        Returns:
            float32 [B] on ``contexts.device``.

        Example:
            >>> t = NGramTable.from_token_ids([[0, 1, 2, 1, 2]], vocab_size=3, order=2)
            >>> t.score(torch.tensor([[1]]), torch.tensor([2]), order=2, alpha=1.0).exp()
            tensor([0.6000])

            Wrong: ``t.score(torch.tensor([[1, 2]]), torch.tensor([[2]]))``; targets are 1-D, one per row.
        """
        return self.score_with(contexts, targets, self.options(**options), validate=validate)

    def score_with(self, contexts: torch.Tensor, targets: torch.Tensor, opts: LookupOptions,
                   validate: bool = True) -> torch.Tensor:
        """:meth:`score` with options already validated by :meth:`options`."""
        self.check_contexts(contexts, validate)
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"`targets` must be a torch.Tensor, got {type(targets).__name__}")
        if targets.dim() != 1 or targets.shape[0] != contexts.shape[0]:
            raise ValueError(f"`targets` must be 1-D with one id per context row ({contexts.shape[0]}), "
                             f"got shape {tuple(targets.shape)}")
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
            raise TypeError(f"`targets` must hold integer ids, got dtype {targets.dtype}")
        if validate and targets.numel():
            bad = (targets < 0) | (targets >= self.vocab_size)
            if bool(bad.any()):
                raise ValueError(f"`targets` holds id {int(targets[bad][0])}, outside "
                                 f"[0, vocab_size={self.vocab_size})")
        plan = self.plan(opts, contexts.device)
        return plan.score(plan.tail(contexts), targets.to(contexts.device))

    def plan(self, opts: LookupOptions, device, accelerator: bool | None = None,
             dense_bytes: int | None = None) -> StepPlan:
        """The per-step lookup of ``opts`` on ``device`` (built on first use, then cached).

        ``plan(opts, device)(contexts)`` equals ``logprobs_with(contexts, opts,
        validate=False)``; ``plan(...).step(tail)`` takes exactly the last N-1
        ids of every row and has static shapes (what ``torch.compile`` wants).
        ``accelerator`` picks the layout (default: by device type); forcing it
        on a CPU checks the accelerator path there. ``dense_bytes`` bounds the
        memory spent on precomputed rows for the contexts with the most next
        tokens (default :data:`ngram.lookup.DENSE_ROWS_BYTES`, 64 MiB; 0: none);
        it changes the speed, never the values.
        """
        device = torch.device(device)
        dense_bytes = DENSE_ROWS_BYTES if dense_bytes is None else _check_int("dense_bytes", dense_bytes, 0)
        key = (device, opts, accelerator, dense_bytes)
        if key not in self._plans:
            stored = {n: v.cpu() for n, v in self._stored.items()}
            if opts.kind == "kneser_ney":
                coeffs = estimators.kneser_ney(stored, self.order, self.vocab_size, self.hashed_orders,
                                               self.hash_seed, opts.discount)
            elif opts.kind == "order":
                weights = tuple(1.0 if k == opts.order else 0.0 for k in range(1, self.order + 1))
                coeffs = estimators.add_alpha(stored, self.order, self.vocab_size, weights, opts.alpha, "logsum",
                                              single=True)
            else:
                coeffs = estimators.add_alpha(stored, self.order, self.vocab_size, opts.weights, opts.alpha,
                                              opts.mode)
            self._plans[key] = StepPlan(coeffs, stored, self.order, self.vocab_size, self.hashed_orders,
                                        self.hash_seed, device, accelerator, dense_bytes)
        return self._plans[key]

    def to_arpa(self, path, discount: float = 0.75) -> None:
        """Write the interpolated Kneser-Ney estimate (discount ``discount``) as an ARPA file (:mod:`ngram.arpa`).

        Its words are token ids; KenLM and other toolkits read it, and :meth:`from_arpa` reads it back.
        """
        from ngram.arpa import write_arpa

        write_arpa(self, path, discount)

    @staticmethod
    def from_arpa(path, vocab_size: int | None = None, tokenizer=None):
        """An :class:`ngram.arpa.ArpaModel` of an ARPA backoff file whose words are token ids."""
        from ngram.arpa import ArpaModel

        return ArpaModel.read(path, vocab_size=vocab_size, tokenizer=tokenizer)

    def check_contexts(self, contexts, validate: bool = False) -> None:
        """Refuse anything but integer ids [B, T]; with ``validate`` also ids outside [0, V) (one host sync)."""
        if not isinstance(contexts, torch.Tensor):
            raise TypeError(f"`contexts` must be a torch.Tensor, got {type(contexts).__name__}")
        if contexts.dim() != 2:
            raise ValueError(f"`contexts` must be 2-D [B, T], got shape {tuple(contexts.shape)}")
        if contexts.dtype.is_floating_point or contexts.dtype.is_complex or contexts.dtype == torch.bool:
            raise TypeError(f"`contexts` must hold integer ids, got dtype {contexts.dtype}")
        if validate and contexts.numel():
            bad = (contexts < 0) | (contexts >= self.vocab_size)
            if bool(bad.any()):
                value = int(contexts[bad][0])
                raise ValueError(f"`contexts` holds id {value}, outside [0, vocab_size={self.vocab_size})")

    # ------------------------------------------------------------ tokenizer
    def check_tokenizer(self, tokenizer) -> None:
        """Raise TokenizerMismatchError unless ``tokenizer`` is the one this table was built with.

        A table built from raw ids has no fingerprint; then only the vocabulary
        size is checked.
        """
        if self.fingerprint is None:
            if len(tokenizer) != self.vocab_size:
                raise TokenizerMismatchError(
                    f"table has vocab_size {self.vocab_size} but the tokenizer has {len(tokenizer)} "
                    f"tokens; {REBUILD}"
                )
            return
        fp = tokenizer_fingerprint(tokenizer)
        if fp != self.fingerprint:
            raise TokenizerMismatchError(
                f"table was built for tokenizer {self.fingerprint[:19]}..., not for this one "
                f"({fp[:19]}...): its ids mean other tokens; {REBUILD}"
            )

    # ----------------------------------------------------------- save/load
    def _meta(self) -> dict:
        return {"order": self.order, "vocab_size": self.vocab_size, "hash_seed": self.hash_seed,
                "hashed_orders": list(self.hashed_orders), "tokenizer_fingerprint": self.fingerprint,
                "stats": self.stats}

    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        derived = ("entry_keys",)
        return {
            n: v.detach().cpu().contiguous()
            for n, v in self._stored.items()
            if n.split(".", 1)[1] not in derived
        }

    def save(self, path) -> None:
        """Write the table to one ``.safetensors`` file (atomically: a crash leaves no half file).

        Metadata holds the format version, order, vocab size, tokenizer
        fingerprint, corpus statistics and a sha256 of the tensor contents.
        """
        write_table(path, self._saved_tensors(), self._meta())

    @classmethod
    def load(cls, path, device=None, tokenizer=None, mmap: bool = False, verify: bool | None = None) -> NGramTable:
        """Read a table written by :meth:`save`, refusing damaged or foreign files.

        Args:
            path: the ``.safetensors`` file.
            device: where the arrays go (default CPU). With ``mmap=True`` leave
                it None and move the table explicitly later (``table.to("cuda")``).
            tokenizer: if given, the table must have been built with it.
            mmap: map the file instead of reading it: opening takes a header
                parse whatever the size, and memory grows only with the pages
                lookups touch (``safetensors`` layout, ``torch.from_file``).
            verify: check the contents' sha256 and every array's ranges, which
                reads the whole file. Default: True when reading, False when
                mapping (sizes and the header are always checked; call
                :meth:`verify` to check a mapped table's contents later).

        Raises:
            FileNotFoundError: no such file.
            TableFileError: truncated, altered, or not a steer n-gram table.
            TokenizerMismatchError: built with another tokenizer.

        Example:
            >>> big = NGramTable.load("background.safetensors", mmap=True)  # doctest: +SKIP
            >>> big = big.to("cuda")  # explicit: copies the arrays to the GPU  # doctest: +SKIP
        """
        path = os.fspath(path)
        verify = (not mmap) if verify is None else bool(verify)
        tensors, parsed, sha256 = read_table(path, mmap=mmap, verify=verify)
        table = cls(tensors, parsed)
        table._content_sha256 = sha256
        table._source = path
        if device is not None:
            table = table.to(device)
        if tokenizer is not None:
            table.check_tokenizer(tokenizer)
        return table

    def verify(self) -> None:
        """Check the contents against the checksum and every array's ranges (reads the whole table).

        Raises:
            TableFileError: the contents differ from what was saved, or are out of range.
        """
        verify_contents(self._saved_tensors(), self._meta(), getattr(self, "_source", "this table"),
                        getattr(self, "_content_sha256", None))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (what :meth:`save` writes, without the metadata)."""
        return sum(v.numel() * v.element_size() for v in self._saved_tensors().values())

    def __repr__(self) -> str:
        return (
            f"NGramTable(order={self.order}, vocab_size={self.vocab_size}, "
            f"tokens={self.stats.get('n_tokens')}, device={self.device})"
        )


def _narrow(a: np.ndarray) -> np.ndarray:
    """int32 when every value fits, else int64 (halves the bytes of most tables)."""
    return a.astype(np.int32) if a.size == 0 or a.max() < 2**31 else a.astype(np.int64)
