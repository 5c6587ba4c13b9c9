"""Tables at corpus scale: bounded-memory builds against the in-memory build, merge, memory-mapped loading.

Data: synthetic token ids, i.i.d. Zipf (exponent 1.1) over a 32,000-token
vocabulary, in documents of 1,000 tokens, written once to ``.npy`` shard files
of 10M tokens (independent draws make far more distinct trigrams than real
text of the same length, so this is the hard case for memory). Each build runs
in its own process; a sampler sums the resident memory of that process and its
workers every 20 ms: peak_rss_mib (RSS, which counts the pages a worker shares
with its parent once per process) and peak_pss_mib (PSS, shared pages split).
Bounded builds: ``NGramTable.from_token_shards`` with a 2 GiB budget and 2
workers, N = 3; the in-memory build
(``from_token_ids`` on the same shards, then ``save``) beside it where it fits.
Then: ``NGramTable.merge`` of the two 10M halves' tables, the largest table's
memory-mapped open and its first lookup. Last line: one JSON object.

    python benchmarks/scale_bench.py [--sizes 10,50,200] [--in-memory 10,50] [--memory-gb 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

V = 32_000
SHARD_TOKENS = 10_000_000
DOC_TOKENS = 1_000


def write_shards(folder: Path, n_shards: int) -> list[Path]:
    """Shard files of SHARD_TOKENS Zipf ids each (made once, reused across sizes)."""
    ranks = np.arange(1, V + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -1.1)
    cdf /= cdf[-1]
    paths = []
    for i in range(n_shards):
        path = folder / f"zipf{i}.npy"
        if not path.exists():
            rng = np.random.default_rng(i)
            ids = np.searchsorted(cdf, rng.random(SHARD_TOKENS)).astype(np.int32)
            np.save(path, ids)
        paths.append(path)
    return paths


def read_docs(path: str) -> list[np.ndarray]:
    """A shard file as documents of DOC_TOKENS tokens (views of one array)."""
    ids = np.load(path)
    return [ids[i:i + DOC_TOKENS] for i in range(0, ids.size, DOC_TOKENS)]


# ---------------------------------------------------------------------- one build, in a child process
def child(args) -> None:
    from ngram import NGramTable

    paths = [str(p) for p in args.paths]
    started = time.perf_counter()
    if args.child == "bounded":
        shards = [functools.partial(read_docs, p) for p in paths]
        table = NGramTable.from_token_shards(shards, V, 3, memory_gb=args.memory_gb, workers=args.workers,
                                             out=args.out, spill_dir=args.spill)
    else:
        docs = [d for p in paths for d in read_docs(p)]
        table = NGramTable.from_token_ids(docs, V, 3)
        table.save(args.out)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "ngram_types": table.stats["ngram_types"],
                      "stats": {k: table.stats[k] for k in ("count_seconds", "merge_seconds") if k in table.stats}}))


def _tree_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) of a process and its children. RSS counts a page shared by several
    processes (the libraries a worker inherits) once per process; PSS splits it between them."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    rss = pss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return rss, pss


def run_child(kind: str, paths: list[Path], out: Path, opts) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--out", str(out), "--memory-gb", str(opts.memory_gb),
           "--workers", str(opts.workers), "--spill", str(opts.spill), "--paths", *map(str, paths)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, done = [0, 0], threading.Event()

    def sample():
        while not done.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} build failed ({proc.returncode})")
    res = json.loads(stdout.strip().splitlines()[-1])
    n = len(paths) * SHARD_TOKENS
    row = {"seconds": round(res["seconds"], 2), "peak_rss_mib": round(peak[0] / 2**20),
           "peak_pss_mib": round(peak[1] / 2**20),
           "tokens_per_s": round(n / res["seconds"]), "ngram_types": res["ngram_types"],
           "file_mib": round(out.stat().st_size / 2**20, 1)}
    row.update({k: round(v, 2) for k, v in res["stats"].items()})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,50,200", help="bounded builds, millions of tokens (multiples of 10)")
    ap.add_argument("--in-memory", default="10,50", help="in-memory builds beside them, millions of tokens")
    ap.add_argument("--memory-gb", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="folder for the shard files (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spill", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--paths", nargs="*", type=Path, default=[], help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        child(opts)
        return
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    in_memory = [int(s) for s in opts.in_memory.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        tmp = Path(tmp)
        data = opts.data or tmp / "data"
        data.mkdir(parents=True, exist_ok=True)
        opts.spill = tmp
        paths = write_shards(data, max(sizes + in_memory) // 10)
        figures = {"data": "iid Zipf(1.1) ids, V = 32000, 1000-token documents", "order": 3,
                   "memory_gb": opts.memory_gb, "workers": opts.workers, "cpu_threads": os.cpu_count()}
        for n in sorted(set(sizes) | set(in_memory)):
            use = paths[: n // 10]
            if n in in_memory:
                row = run_child("in_memory", use, tmp / f"mem{n}.safetensors", opts)
                figures[f"in_memory_{n}m"] = row
                print(f"in-memory {n}M tokens: {json.dumps(row)}", flush=True)
                (tmp / f"mem{n}.safetensors").unlink()
            if n in sizes:
                out = tmp / f"bounded{n}.safetensors"
                row = run_child("bounded", use, out, opts)
                figures[f"build_{n}m"] = row
                print(f"bounded {n}M tokens: {json.dumps(row)}", flush=True)
                if n in in_memory:
                    ratio = figures[f"in_memory_{n}m"]["tokens_per_s"] / row["tokens_per_s"]
                    figures[f"in_memory_vs_bounded_{n}m"] = round(ratio, 2)
                if n != max(sizes):
                    out.unlink()

        from ngram import NGramTable

        halves = [NGramTable.from_token_ids(read_docs(str(p)), V, 3) for p in paths[:2]]
        started = time.perf_counter()
        NGramTable.merge(halves)
        figures["merge_s"] = round(time.perf_counter() - started, 2)
        print(f"merge of two 10M-token tables: {figures['merge_s']} s", flush=True)
        del halves

        import torch

        biggest = tmp / f"bounded{max(sizes)}.safetensors"
        started = time.perf_counter()
        table = NGramTable.load(biggest, mmap=True)
        figures["mmap_open_s"] = round(time.perf_counter() - started, 4)
        ctx = torch.from_numpy(np.load(paths[0])[:64].astype(np.int64)).view(32, 2)
        started = time.perf_counter()
        counts = table.count_many(torch.cat([ctx, ctx[:, :1]], dim=1))
        figures["first_count_s"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        table.logprobs(ctx, smoothing="kneser_ney")
        figures["first_logprobs_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        table.logprobs(ctx, smoothing="kneser_ney")
        figures["next_logprobs_ms"] = round(1000 * (time.perf_counter() - started), 2)
        figures["table_file_mib"] = round(biggest.stat().st_size / 2**20)
        assert int(counts.sum()) >= 0
        print(f"mmap open {figures['mmap_open_s']} s; first count_many {figures['first_count_s']} s; "
              f"first logprobs {figures['first_logprobs_s']} s (builds the lookup plan); "
              f"then {figures['next_logprobs_ms']} ms", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
