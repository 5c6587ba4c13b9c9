"""The bounded build's map step on Ray (local mode): the same table as the in-memory build."""

from __future__ import annotations

import functools

import pytest

from ngram import NGramTable, sharded
from tests.ngram.test_merge import _assert_same
from tests.ngram.test_sharded import _read, _zipf_docs

pytest.importorskip("ray", reason="the Ray engine needs the steer[ray] extra (pip install 'steer[ray]')")


def test_ray_local_mode_build_equals_the_in_memory_build(tmp_path, monkeypatch):
    monkeypatch.setattr(sharded, "MIN_CHUNK_TOKENS", 300)
    monkeypatch.setattr(sharded, "MIN_BLOCK_PAIRS", 48)
    monkeypatch.setattr(sharded, "SAMPLE_STRIDE", 4)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    docs = _zipf_docs(11, 300, 29)
    shards = [functools.partial(_read, docs[i::4]) for i in range(4)]
    seen = []
    out = tmp_path / "t.safetensors"
    built = NGramTable.from_token_shards(shards, 29, 3, engine="ray", workers=2, out=out, spill_dir=tmp_path,
                                         memory_gb=1e-6, progress=seen.append)
    _assert_same(built, NGramTable.from_token_ids([d for i in range(4) for d in docs[i::4]], 29, 3))
    assert sum(seen) == built.stats["n_tokens"] and len(seen) == 4
    assert list(tmp_path.iterdir()) == [out]


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="`engine`"):
        NGramTable.from_token_shards([[[1, 2]]], 8, 2, engine="spark")
