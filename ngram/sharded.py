"""Bounded-memory table builds: count shards into sorted runs on disk, then merge the runs block by block.

The map step reads a shard's documents a chunk at a time (a chunk holds as
many tokens as the memory budget allows), counts every k-gram of the chunk
with one sort, and appends the sorted (key, count) pairs to a *run* file on
disk. The reduce step merges all runs of an order in *blocks* of the key
space: block bounds are read off a strided sample of every run, so a block
holds at most a budgeted number of pairs whichever runs they come from; each
block is cut out of every run with two binary searches (the run files are
memory-mapped, so only the cut pages are read), sorted and summed. Blocks
come out in key order, so the table's arrays are written straight to disk,
and the finished file is memory-mapped rather than read.

Kneser-Ney continuation counts of order k - 1 are how many distinct k-grams
end in each (k - 1)-gram: each merged block of order k emits its entries'
suffix keys as one more sorted run for order k - 1, which is reduced with the
same blocks as that order's counts. Orders are therefore reduced from N down
to 2.

Keys are the whole k-gram packed in base V (``t_1 V^(k-1) + ... + t_k``), so
sorting keys sorts by (context, next token), a context is ``key // V`` and
the next token ``key % V``: bounded builds need every order's k-grams to pack
into 63 bits (N <= 4 at V = 32,000); larger orders build in memory.

The result equals :meth:`NGramTable.from_token_ids` on the same documents,
array for array (tested).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ngram import counts as C
from ngram import keys

# Bytes of working memory per token of a map chunk (tokens, positions in
# document, one order's keys, their sorted copy and the distinct ones, with
# numpy temporaries) and per (key, count) pair of a reduce block (the pairs cut
# from every run, the sort order, sorted copies, the continuation counts cut
# beside them, the suffix run and the columns written). Set from measured peaks
# (benchmarks/scale_bench.py: about 190 bytes per pair at the reduce's peak),
# with room to spare.
MAP_BYTES_PER_TOKEN = 100
REDUCE_BYTES_PER_PAIR = 256
# Every SAMPLE_STRIDE-th key of a run bounds the blocks: a block holds at most
# (q + 2 runs) * SAMPLE_STRIDE pairs when it spans q sample points.
SAMPLE_STRIDE = 1024
MIN_CHUNK_TOKENS = 1 << 16
MIN_BLOCK_PAIRS = 1 << 16


def check_packable(vocab_size: int, order: int) -> None:
    """A bounded build keys whole k-grams in base V: they must fit in 63 bits for every order."""
    if not keys.exact_packing(vocab_size, order):
        top = max(k for k in range(1, order + 1) if keys.exact_packing(vocab_size, k))
        raise ValueError(f"a bounded-memory build packs whole n-grams into 63 bits, which holds order <= {top} "
                         f"at vocab_size {vocab_size}; got order {order}: build it in memory "
                         "(NGramTable.from_token_ids) or lower the order")


@dataclass
class Budget:
    """How the memory budget is spent: tokens per map chunk, pairs per reduce block."""

    memory_bytes: int
    workers: int
    baseline_bytes: int  # what a process holds before it counts anything

    @property
    def chunk_tokens(self) -> int:
        free = self.memory_bytes - (self.workers + 1) * self.baseline_bytes
        return max(MIN_CHUNK_TOKENS, free // max(1, self.workers) // MAP_BYTES_PER_TOKEN)

    @property
    def block_pairs(self) -> int:
        return max(MIN_BLOCK_PAIRS, (self.memory_bytes - self.baseline_bytes) // REDUCE_BYTES_PER_PAIR)


def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------- map
@dataclass
class ShardCounts:
    """What counting one shard leaves: its runs on disk and its dense unigram counts."""

    unigram: np.ndarray
    n_tokens: int
    n_docs: int
    runs: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)  # k -> [(file stem, start, length)]


def _chunks(docs: Iterable, vocab_size: int, chunk_tokens: int):
    """(tokens, lengths) of consecutive groups of whole documents of about ``chunk_tokens`` tokens
    (a document is never split: one longer than a chunk is a chunk of its own)."""
    group, size = [], 0
    for doc in docs:
        group.append(doc)
        size += len(doc)
        if size >= chunk_tokens:
            yield C.flatten_docs(group, vocab_size)
            group, size = [], 0
    if group and any(len(d) for d in group):
        yield C.flatten_docs(group, vocab_size)


def _append(path: str, a: np.ndarray) -> None:
    with open(path, "ab") as f:
        a.tofile(f)


def count_shard(shard, vocab_size: int, order: int, chunk_tokens: int, stem: str,
                progress: Callable[[int], None] | None = None) -> ShardCounts:
    """Map: count a shard's k-grams chunk by chunk into sorted runs appended to ``stem``.o<k>.{keys,counts}.

    Args:
        shard: an iterable of documents (1-D token-id sequences), or a
            callable returning one (read lazily, e.g. in a worker process).
        stem: path prefix of this shard's run files.
        progress: called with the number of tokens of every counted chunk.
    """
    docs = shard() if callable(shard) else shard
    out = ShardCounts(unigram=np.zeros(vocab_size, np.int64), n_tokens=0, n_docs=0,
                      runs={k: [] for k in range(2, order + 1)})
    written = dict.fromkeys(range(2, order + 1), 0)
    for tokens, lengths in _chunks(docs, vocab_size, chunk_tokens):
        out.unigram += np.bincount(tokens, minlength=vocab_size)
        out.n_tokens += int(tokens.size)
        out.n_docs += int(lengths.size)
        remaining = C.remaining_in_doc(lengths)
        for k in range(2, order + 1):
            starts = np.flatnonzero(remaining >= k)
            key = tokens[starts]
            for j in range(1, k):  # Horner's rule over the k tokens (keys.pack_exact, in place)
                key *= vocab_size
                key += tokens[starts + j]
            del starts
            key.sort()
            first = C.group_starts(key[1:] != key[:-1])
            cnt = np.diff(np.append(first, key.size)).astype(np.int64, copy=False)
            uniq = key[first]
            del key
            _append(f"{stem}.o{k}.keys", uniq)
            _append(f"{stem}.o{k}.counts", cnt)
            out.runs[k].append((stem, written[k], int(uniq.size)))
            written[k] += int(uniq.size)
        if progress is not None:
            progress(int(tokens.size))
    return out


def _count_shard_task(args) -> ShardCounts:
    shard, vocab_size, order, chunk_tokens, stem = args
    return count_shard(shard, vocab_size, order, chunk_tokens, stem)


# ---------------------------------------------------------------------- reduce
def _read(path: str, start: int, count: int) -> np.ndarray:
    """``count`` int64 values of a file from value ``start``, read into memory (not mapped: a mapped
    page stays resident, counted in the process's memory, until the map goes)."""
    return np.fromfile(path, np.int64, count=count, offset=start * 8)


class _Runs:
    """Sorted runs of (key, count) pairs in files: binary searches on a map, the pairs themselves read."""

    def __init__(self, runs: list[tuple[str, int, int]], suffix: str):
        self.runs = [(f"{stem}.{suffix}", start, length) for stem, start, length in runs if length]
        maps: dict[str, np.ndarray] = {}
        self.keys = []  # mapped views, for binary searches only (a few pages each)
        for stem, start, length in self.runs:
            if stem not in maps:
                maps[stem] = np.memmap(f"{stem}.keys", np.int64, "r")
            self.keys.append(maps[stem][start:start + length])

    def sample(self, piece: int = 1 << 22) -> np.ndarray:
        """Every SAMPLE_STRIDE-th key of every run, read piece by piece."""
        parts = []
        for stem, start, length in self.runs:
            for i in range(0, length, piece):
                block = _read(f"{stem}.keys", start + i, min(piece, length - i))
                parts.append(block[(SAMPLE_STRIDE - 1 - i) % SAMPLE_STRIDE::SAMPLE_STRIDE].copy())
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def cut(self, lo: int | None, hi: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Merged (sorted distinct keys, summed counts) of every pair with lo <= key < hi (None: unbounded)."""
        ks, cs = [], []
        for (stem, start, _), k in zip(self.runs, self.keys, strict=True):
            a = 0 if lo is None else int(np.searchsorted(k, lo))
            b = k.size if hi is None else int(np.searchsorted(k, hi))
            if b > a:
                ks.append(_read(f"{stem}.keys", start + a, b - a))
                cs.append(_read(f"{stem}.counts", start + a, b - a))
        if not ks:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        key, cnt = np.concatenate(ks), np.concatenate(cs)
        del ks, cs
        # Sorting puts every run's copy of a key side by side; add.reduceat sums them.
        order = np.argsort(key)
        key, cnt = key[order], cnt[order]
        del order
        first = C.group_starts(key[1:] != key[:-1])
        return key[first], np.add.reduceat(cnt, first)


def _block_bounds(sample: np.ndarray, n_runs: int, block_pairs: int) -> list[int]:
    """Keys that cut the key space into blocks of at most ``block_pairs`` pairs.

    Between two consecutive sample points of one run lie at most
    SAMPLE_STRIDE pairs, so a block spanning q points of the merged sample
    holds at most (q + 2 n_runs) * SAMPLE_STRIDE pairs.
    """
    q = max(1, block_pairs // SAMPLE_STRIDE - 2 * n_runs)
    # Bounds at every q-th point of the sorted sample (duplicates kept: a key sampled in
    # several runs counts once per run); a key repeats at most once per run, so dropping
    # repeated bounds adds at most n_runs points to a block.
    return [int(x) for x in np.unique(np.sort(sample)[q::q])]


class _Column:
    """One output array written to disk block by block (int64); counts keep their running maximum,
    which decides whether they are stored as int32."""

    def __init__(self, path: Path, track_max: bool = False):
        self.path, self.n, self.max, self.track_max = path, 0, 0, track_max
        path.write_bytes(b"")

    def add(self, a: np.ndarray) -> None:
        if a.size:
            _append(str(self.path), a.astype(np.int64, copy=False))
            self.n += int(a.size)
            if self.track_max:
                self.max = max(self.max, int(a.max()))


def reduce_order(k: int, order: int, vocab_size: int, count_runs: list, cont_runs: list, block_pairs: int,
                 folder: Path, unigram_cont: np.ndarray) -> tuple[dict[str, _Column], list]:
    """Merge order k's runs into its CSR columns on disk; return them and the suffix runs for order k - 1."""
    counts, conts = _Runs(count_runs, f"o{k}"), _Runs(cont_runs, f"c{k}")
    sample = np.concatenate([counts.sample(), conts.sample()])
    bounds = _block_bounds(sample, len(counts.keys) + len(conts.keys), block_pairs)
    cols = {name: _Column(folder / f"o{k}.{name}.bin", track_max=name == "counts")
            for name in ("ctx_keys", "offsets", "next_ids", "counts")}
    if k < order:
        cols["cont"] = _Column(folder / f"o{k}.cont.bin", track_max=True)
    suffix_stem, suffix_runs, suffix_written = str(folder / "suffix"), [], 0
    vk = vocab_size ** (k - 1)
    last_ctx, n_entries = -1, 0
    for lo, hi in zip([None, *bounds], [*bounds, None], strict=True):
        key, cnt = counts.cut(lo, hi)
        if key.size == 0:
            continue
        ctx, nxt = key // vocab_size, key % vocab_size
        # A new context starts where ctx changes, and at the block's start unless the
        # previous block ended inside the same context.
        new = np.concatenate(([ctx[0] != last_ctx], ctx[1:] != ctx[:-1]))
        starts = np.flatnonzero(new)
        cols["ctx_keys"].add(ctx[starts])
        cols["offsets"].add(starts + n_entries)
        cols["next_ids"].add(nxt)
        cols["counts"].add(cnt)
        if k < order:
            ckey, ccnt = conts.cut(lo, hi)
            cont = np.zeros(key.size, np.int64)
            # Every suffix of a counted (k+1)-gram is a counted k-gram, so each ckey is found.
            cont[np.searchsorted(key, ckey)] = ccnt
            cols["cont"].add(cont)
        if k > 2:
            # The suffix (t_2..t_k) of each distinct k-gram adds one continuation to that (k-1)-gram.
            suffix = np.sort(key % vk)
            first = C.group_starts(suffix[1:] != suffix[:-1])
            ones = np.diff(np.append(first, suffix.size)).astype(np.int64, copy=False)
            _append(f"{suffix_stem}.c{k - 1}.keys", suffix[first])
            _append(f"{suffix_stem}.c{k - 1}.counts", ones)
            suffix_runs.append((suffix_stem, suffix_written, int(first.size)))
            suffix_written += int(first.size)
        else:
            unigram_cont += np.bincount(nxt, minlength=vocab_size)
        last_ctx = int(ctx[-1])
        n_entries += int(key.size)
    cols["offsets"].add(np.array([n_entries]))
    return cols, suffix_runs


# ---------------------------------------------------------------------- the file
_ST_DTYPES = {np.dtype(np.int64): ("I64", "torch.int64"), np.dtype(np.int32): ("I32", "torch.int32")}


def _final_dtype(name: str, col: _Column) -> np.dtype:
    """The dtype the in-memory build stores: next ids int32; an order's counts and continuation
    counts int32 when they fit; keys, offsets and the unigram arrays int64."""
    if name.endswith(".next_ids"):
        return np.dtype(np.int32)
    if not name.startswith("unigram.") and name.endswith((".counts", ".cont")):
        return np.dtype(np.int32) if col.max < 2**31 else np.dtype(np.int64)
    return np.dtype(np.int64)


def _blocks(path: Path, dtype: np.dtype, n: int, step: int = 1 << 22):
    """The int64 column at ``path`` as ``dtype`` arrays of at most ``step`` values."""
    for i in range(0, n, step):
        yield _read(str(path), i, min(step, n - i)).astype(dtype, copy=False)


def write_columns(path, columns: dict[str, _Column], header_meta: Callable[[str], dict[str, str]]) -> None:
    """Write the columns as one safetensors table file, atomically, without holding any column in memory.

    int64 arrays come first so every array stays aligned to its element size
    (a memory-mapped load can then view every array in place). The content
    sha256 is computed as :func:`ngram.persist.digest` does, in name order.
    """
    dtypes = {name: _final_dtype(name, col) for name, col in columns.items()}
    layout = sorted(columns, key=lambda n: (-dtypes[n].itemsize, n))
    h = hashlib.sha256()
    for name in sorted(columns):
        col, dt = columns[name], dtypes[name]
        h.update(f"{name}:{_ST_DTYPES[dt][1]}:{(col.n,)}\n".encode())
        for block in _blocks(col.path, dt, col.n):
            h.update(block.tobytes())
    header, offset = {}, 0
    for name in layout:
        size = columns[name].n * dtypes[name].itemsize
        header[name] = {"dtype": _ST_DTYPES[dtypes[name]][0], "shape": [columns[name].n],
                        "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = header_meta(h.hexdigest())
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name in layout:
                for block in _blocks(columns[name].path, dtypes[name], columns[name].n):
                    f.write(block.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------- the build
ENGINES = ("processes", "ray")


def build(shards: Sequence, vocab_size: int, order: int, out, *, memory_bytes: int, workers: int = 1,
          spill_dir=None, tokenizer_fingerprint: str | None = None, progress: Callable[[int], None] | None = None,
          engine: str = "processes", address: str | None = None) -> dict:
    """Count ``shards`` within ``memory_bytes`` and write the table file ``out``; return its metadata.

    ``progress`` is called with a token count whenever a chunk (one worker)
    or a shard (several workers) has been counted. The spill folder is a
    temporary folder inside ``spill_dir`` (default: the system's), removed at
    the end, on errors and on Ctrl-C. ``engine="ray"`` counts the shards as
    Ray tasks (:mod:`ngram.distributed`; ``address`` of a cluster, or a local
    Ray when None); the merge runs here either way.
    """
    from ngram.persist import header_fields

    check_packable(vocab_size, order)
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}")
    started = time.perf_counter()
    budget = Budget(memory_bytes, workers, current_rss_bytes())
    with tempfile.TemporaryDirectory(prefix="steer-build-", dir=spill_dir) as tmp:
        folder = Path(tmp)
        args = [(s, vocab_size, order, budget.chunk_tokens, str(folder / f"shard{i}")) for i, s in enumerate(shards)]
        if engine == "ray":
            from ngram.distributed import count_on_ray

            results = count_on_ray(args, address=address, workers=workers, progress=progress)
        elif workers > 1 and len(args) > 1:
            results = []
            with ProcessPoolExecutor(max_workers=workers) as pool:
                try:
                    for res in pool.map(_count_shard_task, args):
                        results.append(res)
                        if progress is not None:
                            progress(res.n_tokens)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        else:
            results = [count_shard(*a, progress=progress) for a in args]
        counted = time.perf_counter()
        n_tokens = sum(r.n_tokens for r in results)
        if n_tokens == 0:
            raise ValueError("`shards` hold no tokens: nothing to count")
        unigram = sum(r.unigram for r in results)
        columns = {"unigram.counts": _Column(folder / "unigram.counts.bin")}
        columns["unigram.counts"].add(unigram)
        unigram_cont = np.zeros(vocab_size, np.int64)
        cont_runs: list = []
        types, contexts = {}, {}
        for k in range(order, 1, -1):
            count_runs = [run for r in results for run in r.runs[k]]
            cols, cont_runs = reduce_order(k, order, vocab_size, count_runs, cont_runs, budget.block_pairs,
                                           folder, unigram_cont)
            columns.update({f"o{k}.{name}": col for name, col in cols.items()})
            types[str(k)], contexts[str(k)] = cols["next_ids"].n, cols["ctx_keys"].n
        if order >= 2:
            columns["unigram.cont"] = _Column(folder / "unigram.cont.bin")
            columns["unigram.cont"].add(unigram_cont)
        stats = {"n_tokens": n_tokens, "n_docs": sum(r.n_docs for r in results),
                 "ngram_types": {"1": int(np.count_nonzero(unigram)), **dict(sorted(types.items()))},
                 "contexts": dict(sorted(contexts.items())), "shards": len(results)}
        stats["count_seconds"] = round(counted - started, 3)
        stats["merge_seconds"] = round(time.perf_counter() - counted, 3)  # the table file written after
        stats["build_seconds"] = round(time.perf_counter() - started, 3)
        meta = {"order": order, "vocab_size": vocab_size, "hash_seed": 0, "hashed_orders": [],
                "tokenizer_fingerprint": tokenizer_fingerprint, "stats": stats}
        write_columns(out, columns, lambda sha: header_fields(meta, sha))
    return meta
