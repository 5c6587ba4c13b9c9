"""steer's counts against infini-gram's on the same ids (the `peers` extra; skipped without it).

The index is built as ``benchmarks/ngram_peers.py`` builds it: token files written here, then
infini-gram's own indexer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ngram import NGramTable

pytest.importorskip("infini_gram")

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("ngram_peers", ROOT / "benchmarks" / "ngram_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_equal_infinigrams_on_the_same_ids(tmp_path):
    from infini_gram.engine import InfiniGramEngine

    rng = np.random.default_rng(0)
    docs = [rng.zipf(1.5, int(n)).clip(max=99).astype(np.int32) for n in rng.integers(5, 300, 40)]
    _benchmark().infinigram_index(tmp_path, docs, threads=1)
    engine = InfiniGramEngine(index_dir=str(tmp_path / "infinigram"), eos_token_id=0, vocab_size=65535)
    table = NGramTable.from_token_ids([d.tolist() for d in docs], 100, 4)
    probes = [d[i:i + k].tolist() for d in docs[:20] for k in (1, 2, 3, 4) for i in range(0, len(d) - k, 7)]
    probes += [[98, 97, 96], [5, 99]]  # likely unseen
    assert [table.count(g) for g in probes] == [engine.count(input_ids=g)["count"] for g in probes]
