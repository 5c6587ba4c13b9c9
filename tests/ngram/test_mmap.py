"""Memory-mapped tables: same answers as read tables, lazy memory, damaged files still refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ngram import NGramTable, TableFileError


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50, size=int(rng.integers(5, 60))).tolist() for _ in range(300)]
    table = NGramTable.from_token_ids(docs, 50, 3, tokenizer_fingerprint="sha256:abc")
    path = tmp_path / "t.safetensors"
    table.save(path)
    return table, path


def test_mapped_table_answers_like_the_read_one(saved):
    table, path = saved
    mapped = NGramTable.load(path, mmap=True)
    ctx = torch.randint(0, 50, (16, 2))
    for opts in [dict(smoothing="kneser_ney"), dict(mode="logsum", weights=(0.2, 0.3, 0.5)), dict(order=3)]:
        torch.testing.assert_close(mapped.logprobs(ctx, **opts), table.logprobs(ctx, **opts))
    grams = torch.randint(0, 50, (64, 3))
    assert torch.equal(mapped.count_many(grams), table.count_many(grams))
    mapped.verify()
    moved = mapped.to("cpu")  # moving stays explicit and gives a plain in-memory table
    torch.testing.assert_close(moved.logprobs(ctx, smoothing="kneser_ney"), table.logprobs(ctx, smoothing="kneser_ney"))


def test_damaged_files_are_refused_when_mapped(saved, tmp_path):
    _, path = saved
    raw = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(TableFileError, match="does not fit the file|not a readable"):
        NGramTable.load(cut, mmap=True)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(TableFileError):
        NGramTable.load(garbage, mmap=True)
    altered = tmp_path / "altered.safetensors"
    altered.write_bytes(raw[:-8] + bytes(8))  # last bytes of the data changed, sizes intact
    table = NGramTable.load(altered, mmap=True)  # the header is fine: mapping does not read the data ...
    with pytest.raises(TableFileError, match="damaged"):
        table.verify()  # ... verify() does
    with pytest.raises(TableFileError, match="damaged"):
        NGramTable.load(altered, mmap=True, verify=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
def test_opening_a_mapped_table_does_not_read_it(tmp_path):
    path = tmp_path / "big.safetensors"
    rng = np.random.default_rng(1)
    tokens = rng.zipf(1.2, size=3_000_000) % 32000
    NGramTable.from_token_ids([tokens], 32000, 3).save(path)
    size_mib = path.stat().st_size / 2**20
    assert size_mib > 30
    code = textwrap.dedent(f"""
        import time
        from ngram import NGramTable

        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

        before = rss()
        t0 = time.perf_counter()
        table = NGramTable.load({str(path)!r}, mmap={{mmap}})
        print(time.perf_counter() - t0, rss() - before)
    """)
    out = {}
    for mmap in (True, False):
        done = subprocess.run([sys.executable, "-c", code.replace("{mmap}", str(mmap))], capture_output=True,
                              text=True, check=True)
        out[mmap] = [float(x) for x in done.stdout.split()]
    assert out[True][1] < 0.1 * size_mib  # mapped: memory does not grow with the file
    assert out[False][1] > 0.5 * size_mib  # read: it does
    assert out[True][0] < 1.0
