"""steer's n-gram engine beside KenLM and infini-gram, on the same corpus and queries.

The corpus is the steer split of the background books (``corpora/base``, about 4M tokens) in
SmolLM2-135M-Instruct's token space (V = 49,152); the queries come from its held-out judge split.
For each order (``--orders``):

- **build**: steer's table from the token ids (one int32 array per document; its time, the
  process's peak memory and the saved file) in a subprocess of its own; KenLM's ``lmplz`` where it
  is on PATH (it needs Boost to build, ``docs/benchmarks.md`` says how; otherwise the line says
  so), given steer's peak memory to sort in (``-S``); KenLM's load of steer's ARPA file
  (interpolated Kneser-Ney, the same estimate); infini-gram's suffix-array index of the same ids
  (its documented indexer, run on token files written here: ``tokenized.0``, 0xFFFF before each
  document, u16 ids; ``offset.0``, u64 byte offsets).
- **rows** at B = 1, 8, 64: steer's ``logprobs`` (Kneser-Ney) for B held-out contexts; KenLM's
  ``BaseScore`` for every token of the vocabulary from each context's state (its Python API has no
  whole-row call); infini-gram's ``ntd`` of each suffix of the context (orders 2..N, exact:
  ``max_support`` at the suffix's count) plus the unigram counts, densified to [V] rows.
- **point**: the same ``--pairs`` (context, next token) pairs of held-out text: steer's batched
  ``score``; KenLM's streaming ``full_scores`` over each held-out sequence (one C++ loop per
  sequence, the fastest of its Python API); infini-gram's ``prob`` per pair.
- **agreement**: steer's Kneser-Ney against KenLM's scores of the same ARPA file, over every row
  and point value (ln; KenLM's log10 times ln 10); the counts of every point pair's n-gram,
  steer's against infini-gram's (which estimates no Kneser-Ney: counts are what both answer).

steer's timings are the best of ``--repeats`` at each of ``--threads`` torch threads, and so is
KenLM's streaming point loop (milliseconds long); the other peer figures are one run of loops
seconds long. Last line: one JSON object, keys ``rows_b1``, ``rows_b8``, ``rows_b64``, ``point``,
``build`` (each with ``steer_ms``, ``kenlm_ms``, ``infinigram_ms`` and the ratios ``vs_kenlm``,
``vs_infinigram``; per order), and ``max_abs_diff_vs_kenlm``. Needs the ``peers`` extra (kenlm,
infini-gram) in the main environment.

    python benchmarks/ngram_peers.py [--orders 3,5] [--pairs 5080] [--threads 1,2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from point_query import best  # noqa: E402  (the best-of-n timer)

SHARED = ROOT.parent / "shared" / "data"
LN10 = math.log(10.0)


def corpus_ids(work: Path):
    """(steer documents, held-out sequences, V) in SmolLM2's tokens, tokenised once into ``work``."""
    cache = work / "ids.npz"
    if not cache.exists():
        from steer.corpora import load_corpus
        from steer.models import load_tokenizer

        tok = load_tokenizer(str(SHARED / "models" / "smollm2-135m-instruct"))
        corpus = load_corpus("background")
        docs = [np.asarray(tok(d, add_special_tokens=False)["input_ids"], dtype=np.int32) for d in corpus.steer]
        held = np.asarray(tok("\n".join(corpus.judge), add_special_tokens=False)["input_ids"], dtype=np.int32)
        np.savez(cache, lengths=np.array([len(d) for d in docs]), ids=np.concatenate(docs), held=held,
                 vocab=np.array([len(tok)]))
    z = np.load(cache)
    docs = np.split(z["ids"], np.cumsum(z["lengths"])[:-1])
    return docs, z["held"], int(z["vocab"][0])


def build_phase(work: Path, order: int) -> None:
    """Run in a subprocess: build steer's table, save it, print time, peak memory and size."""
    from ngram import NGramTable

    docs, _, vocab = corpus_ids(work)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    table = NGramTable.from_token_ids(docs, vocab, order)  # one id array per document, as a tokenizer gives
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = work / f"steer.o{order}.safetensors"
    table.save(path)
    print(json.dumps({"seconds": secs, "peak_mb": peak / 1024, "peak_over_input_mb": (peak - base) / 1024,
                      "file_mb": path.stat().st_size / 2**20, "nbytes_mb": table.nbytes / 2**20}))


def peak_of(cmd: list[str], env=None) -> tuple[float, float, str]:
    """(seconds, peak RSS of the command's own process in MB, stdout) of a command.

    The peak is that process's alone (``wait4``), not the largest of every child so far.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, out.read(), err.read())
        return secs, usage.ru_maxrss / 1024, out.read().decode()


def infinigram_index(work: Path, docs, threads: int) -> tuple[float, float]:
    """Build infini-gram's index of ``docs`` (seconds, index MB), once per work folder."""
    index = work / "infinigram"
    if not (index / "table.0").exists():
        index.mkdir(exist_ok=True)
        offsets, pos = [], 0
        with open(index / "tokenized.0", "wb") as f:
            for d in docs:
                data = b"\xff\xff" + d.astype("<u2").tobytes()
                offsets.append(pos)
                f.write(data)
                pos += len(data)
        np.asarray(offsets, dtype="<u8").tofile(index / "offset.0")
        empty = work / "empty"
        empty.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "infini_gram.indexing", "--data_dir", str(empty), "--save_dir",
                        str(index), "--token_dtype", "u16", "--cpus", str(threads), "--mem", "8",
                        # the indexer raises its open-file limit to this; it may not pass the hard limit
                        "--ulimit", str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])], check=True,
                       capture_output=True)
        (work / "infinigram.seconds").write_text(str(time.perf_counter() - t0))
    size = sum(p.stat().st_size for p in index.iterdir()) / 2**20
    return float((work / "infinigram.seconds").read_text()), size


def kenlm_row(lm, kenlm, context, vocab: int) -> np.ndarray:
    """KenLM's ln p(w | context) for every w: V BaseScore calls from the context's state."""
    state = kenlm.State()
    lm.NullContextWrite(state)
    for token in context:
        nxt = kenlm.State()
        lm.BaseScore(state, str(token), nxt)
        state = nxt
    out = kenlm.State()
    words = [str(w) for w in range(vocab)]
    return np.array([lm.BaseScore(state, w, out) for w in words]) * LN10


def infinigram_row(engine, context, order: int, vocab: int, unigram: np.ndarray) -> list[np.ndarray]:
    """infini-gram's next-token counts of every suffix of ``context`` (orders 2..N), densified, and the unigrams."""
    rows = [unigram]
    for k in range(2, order + 1):
        prompt = [int(t) for t in context[len(context) - (k - 1):]]
        count = engine.count(input_ids=prompt)["count"]
        dense = np.zeros(vocab, dtype=np.int64)
        if count:
            result = engine.ntd(prompt_ids=prompt, max_support=count)["result_by_token_id"]
            ids = np.fromiter(result.keys(), dtype=np.int64, count=len(result))
            dense[ids] = [r["cont_cnt"] for r in result.values()]
        rows.append(dense)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", default="3,5")
    ap.add_argument("--pairs", type=int, default=5080)
    ap.add_argument("--rows", default="1,8,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", default=None, help="folder for the ids, tables, ARPA files and index (kept)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("STEER_CORPORA_DIR", str(SHARED / "corpora"))
    work = Path(args.work or Path(tempfile.gettempdir()) / "steer-ngram-peers")
    work.mkdir(parents=True, exist_ok=True)
    if args.phase:
        build_phase(work, int(args.phase))
        return {}

    import kenlm
    from infini_gram.engine import InfiniGramEngine

    from ngram import NGramTable

    docs, held, vocab = corpus_ids(work)
    n_tokens = int(sum(len(d) for d in docs))
    threads = [int(t) for t in args.threads.split(",")]
    batch_sizes = [int(b) for b in args.rows.split(",")]
    result = {"corpus": "background books, steer split", "tokens": n_tokens, "vocab": vocab,
              "heldout_tokens": int(held.size), "torch_threads": threads}
    ig_secs, ig_mb = infinigram_index(work, docs, max(threads))
    engine = InfiniGramEngine(index_dir=str(work / "infinigram"), eos_token_id=0, vocab_size=65535)
    unigram_counts = np.bincount(np.concatenate(docs), minlength=vocab).astype(np.int64)
    diffs = []
    for order in [int(o) for o in args.orders.split(",")]:
        _, _, line = peak_of([sys.executable, __file__, "--work", str(work), "--phase", str(order)])
        built = json.loads(line.strip().splitlines()[-1])
        table = NGramTable.load(work / f"steer.o{order}.safetensors")
        arpa = work / f"steer.o{order}.arpa"
        t0 = time.perf_counter()
        table.to_arpa(arpa)
        arpa_secs = time.perf_counter() - t0
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        lm = kenlm.Model(str(arpa))
        kenlm_load = time.perf_counter() - t0
        kenlm_mb = _rss_mb() - rss0
        lmplz = shutil.which("lmplz")
        build = {"steer_ms": round(built["seconds"] * 1e3, 1), "steer_peak_mb": round(built["peak_mb"], 1),
                 "steer_file_mb": round(built["file_mb"], 1), "arpa_write_ms": round(arpa_secs * 1e3, 1),
                 "kenlm_ms": None, "kenlm_load_arpa_ms": round(kenlm_load * 1e3, 1),
                 "kenlm_memory_mb": round(kenlm_mb, 1), "infinigram_ms": round(ig_secs * 1e3, 1),
                 "infinigram_index_mb": round(ig_mb, 1),
                 "lmplz": "not on PATH (KenLM's builder needs Boost to compile)" if lmplz is None else lmplz}
        if lmplz is not None:
            text = work / "corpus.txt"
            if not text.exists():
                text.write_text("\n".join(" ".join(map(str, d.tolist())) for d in docs) + "\n")
            # lmplz sorts within the memory it is given (-S), spilling to -T beyond it: given steer's peak.
            secs, peak, _ = peak_of([lmplz, "-o", str(order), "--discount_fallback", "--text", str(text), "--arpa",
                                     str(work / f"lmplz.o{order}.arpa"), "-S", f"{int(built['peak_mb'])}M",
                                     "-T", str(work)])
            build.update(kenlm_ms=round(secs * 1e3, 1), kenlm_peak_mb=round(peak, 1))
            build["vs_kenlm"] = round(build["kenlm_ms"] / build["steer_ms"], 2)
        build["vs_infinigram"] = round(build["infinigram_ms"] / build["steer_ms"], 2)
        grams = sum(int(v) for v in table.stats["ngram_types"].values())
        build["ngrams"] = grams
        build["steer_bytes_per_ngram"] = round(table.nbytes / grams, 2)
        build["kenlm_bytes_per_ngram"] = round(kenlm_mb * 2**20 / grams, 2)  # its resident growth on loading
        build["infinigram_bytes_per_token"] = round(ig_mb * 2**20 / n_tokens, 2)  # a suffix array indexes tokens
        result[f"build_o{order}"] = build
        print(f"build_o{order}", build, flush=True)

        # Held-out contexts: every position of the held-out text with N-1 tokens before it.
        rng = np.random.default_rng(order)
        starts = rng.choice(held.size - order, size=max(batch_sizes), replace=False)
        contexts = torch.from_numpy(np.stack([held[s:s + order - 1] for s in starts]).astype(np.int64))
        opts = table.options(smoothing="kneser_ney")
        table.logprobs_with(contexts[:1], opts)  # the plan, once
        for b in batch_sizes:
            key = f"rows_b{b}_o{order}"
            entry = {}
            for n in threads:
                torch.set_num_threads(n)
                steer_rows, secs = best(lambda t=table, x=contexts[:b], o=opts: t.logprobs_with(x, o, validate=False),
                                        args.repeats)
                entry[f"steer_ms_{n}t"] = round(secs * 1e3, 3)
            entry["steer_ms"] = min(v for k, v in entry.items() if k.startswith("steer_ms_"))
            t0 = time.perf_counter()
            ken = np.stack([kenlm_row(lm, kenlm, c.tolist(), vocab) for c in contexts[:b]])
            entry["kenlm_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            diffs.append(float(np.abs(ken - steer_rows.numpy()).max()))
            t0 = time.perf_counter()
            for c in contexts[:b].tolist():
                infinigram_row(engine, c, order, vocab, unigram_counts)
            entry["infinigram_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            entry["vs_kenlm"] = round(entry["kenlm_ms"] / entry["steer_ms"], 1)
            entry["vs_infinigram"] = round(entry["infinigram_ms"] / entry["steer_ms"], 1)
            entry["max_abs_diff_vs_kenlm"] = diffs[-1]
            result[key] = entry
            print(key, entry, flush=True)

        # Point queries: held-out sequences of 48 tokens, the last 40 of each scored.
        n_seq = -(-args.pairs // 40)
        seqs = [held[i * 48:(i + 1) * 48] for i in range(n_seq)]
        ctx = torch.from_numpy(np.stack([s[j - (order - 1):j] for s in seqs for j in range(8, 48)])
                               .astype(np.int64))[: args.pairs]
        tgt = torch.from_numpy(np.array([s[j] for s in seqs for j in range(8, 48)], dtype=np.int64))[: args.pairs]
        table.score_with(ctx[:2], tgt[:2], opts)
        entry = {"pairs": int(tgt.numel())}
        for n in threads:
            torch.set_num_threads(n)
            steer_scores, secs = best(lambda t=table, c=ctx, w=tgt, o=opts: t.score_with(c, w, o, validate=False),
                                      args.repeats)
            entry[f"steer_ms_{n}t"] = round(secs * 1e3, 3)
        entry["steer_ms"] = min(v for k, v in entry.items() if k.startswith("steer_ms_"))
        sentences = [" ".join(map(str, s.tolist())) for s in seqs]
        # Milliseconds long, so timed as steer's is: the best of --repeats.
        streamed, secs = best(lambda m=lm, ss=sentences: [list(m.full_scores(s, bos=False, eos=False)) for s in ss],
                              args.repeats)
        entry["kenlm_ms"] = round(secs * 1e3, 2)
        ken = np.array([sc[j][0] for sc in streamed for j in range(8, 48)])[: args.pairs] * LN10
        diffs.append(float(np.abs(ken - steer_scores.numpy()).max()))
        t0 = time.perf_counter()
        for c, w in zip(ctx.tolist(), tgt.tolist(), strict=True):
            engine.prob(prompt_ids=c, cont_id=w)
        entry["infinigram_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        # One pair at a time: steer's call against KenLM's cold query (the context's state, then the target).
        single = min(200, len(tgt))
        _, secs = best(lambda t=table, c=ctx[:1], w=tgt[:1], o=opts: t.score_with(c, w, o, validate=False), 50)
        entry["b1_steer_us"] = round(secs * 1e6, 1)
        words = [[str(x) for x in c] for c in ctx[:single].tolist()]
        targets = [str(w) for w in tgt[:single].tolist()]
        t0 = time.perf_counter()
        for c, w in zip(words, targets, strict=True):
            state = kenlm.State()
            lm.NullContextWrite(state)
            for x in c:
                nxt = kenlm.State()
                lm.BaseScore(state, x, nxt)
                state = nxt
            lm.BaseScore(state, w, kenlm.State())
        entry["b1_kenlm_us"] = round((time.perf_counter() - t0) / single * 1e6, 2)
        grams = torch.cat([ctx, tgt[:, None]], dim=1)
        ours = table.count_many(grams).tolist()
        theirs = [engine.count(input_ids=g)["count"] for g in grams.tolist()]
        entry["counts_equal_infinigram"] = ours == theirs
        entry["vs_kenlm"] = round(entry["kenlm_ms"] / entry["steer_ms"], 1)
        entry["vs_infinigram"] = round(entry["infinigram_ms"] / entry["steer_ms"], 1)
        entry["max_abs_diff_vs_kenlm"] = diffs[-1]
        result[f"point_o{order}"] = entry
        print(f"point_o{order}", entry, flush=True)
        del lm
    result["max_abs_diff_vs_kenlm"] = max(diffs)
    # The named keys: the highest order's figures.
    top = max(int(o) for o in args.orders.split(","))
    for b in batch_sizes:
        result[f"rows_b{b}"] = result[f"rows_b{b}_o{top}"]
    result["point"], result["build"] = result[f"point_o{top}"], result[f"build_o{top}"]
    print(json.dumps(result))
    return result


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if __name__ == "__main__":
    main()
