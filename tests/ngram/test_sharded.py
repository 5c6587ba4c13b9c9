"""Bounded-memory builds (ngram.sharded): array for array the in-memory build, runs cleaned up, bad input refused."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from ngram import NGramTable, sharded
from tests.ngram.test_merge import _assert_same


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Chunks of a few hundred tokens and blocks of a few dozen pairs: many runs, many blocks."""
    monkeypatch.setattr(sharded, "MIN_CHUNK_TOKENS", 300)
    monkeypatch.setattr(sharded, "MIN_BLOCK_PAIRS", 48)
    monkeypatch.setattr(sharded, "SAMPLE_STRIDE", 4)
    bounds = []
    original = sharded._block_bounds

    def counting(*args):
        out = original(*args)
        bounds.append(len(out))
        return out

    monkeypatch.setattr(sharded, "_block_bounds", counting)
    return bounds


def _zipf_docs(seed: int, n: int, vocab: int):
    rng = np.random.default_rng(seed)
    # Zipf-like ids, some empty and some one-token documents: n-grams must never cross documents.
    return [(rng.zipf(1.4, size=int(rng.integers(0, 80))) % vocab).tolist() for _ in range(n)]


def _read(docs):
    return docs


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [1, 2])
def test_bounded_build_equals_the_in_memory_build(order, workers, tiny_blocks, tmp_path):
    docs = _zipf_docs(order * 7 + workers, 300, 23)
    shards = [docs[i::3] for i in range(3)]
    if workers > 1:  # a picklable callable shard, as a worker process reads it
        shards[0] = functools.partial(_read, shards[0])
    out = tmp_path / "t.safetensors"
    built = NGramTable.from_token_shards(shards, 23, order, memory_gb=1e-6, workers=workers, out=out)
    reference = NGramTable.from_token_ids([d for s in (docs[i::3] for i in range(3)) for d in s], 23, order)
    _assert_same(built, reference)
    if order >= 2:
        assert max(tiny_blocks) > 3  # the merge really ran in many blocks
    NGramTable.load(out).verify()  # checksum and ranges of the streamed file
    assert list(tmp_path.iterdir()) == [out]  # nothing else left behind


def test_in_memory_result_without_out_and_same_lookups(tiny_blocks, tmp_path):
    docs = _zipf_docs(5, 200, 17)
    built = NGramTable.from_token_shards([docs[:90], docs[90:]], 17, 3, memory_gb=1e-6, spill_dir=tmp_path)
    reference = NGramTable.from_token_ids(docs, 17, 3)
    ctx = torch.tensor([[1, 2], [3, 3], [16, 0]])
    for smoothing in ("add_alpha", "kneser_ney"):
        assert torch.equal(built.logprobs(ctx, smoothing=smoothing), reference.logprobs(ctx, smoothing=smoothing))
    assert list(tmp_path.iterdir()) == []  # spill folder removed


def test_every_array_is_aligned_so_a_mapped_load_views_it_in_place(tmp_path):
    import json
    import struct

    docs = _zipf_docs(3, 100, 31)
    out = tmp_path / "t.safetensors"
    NGramTable.from_token_shards([docs[:7], docs[7:]], 31, 3, out=out)
    raw = out.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__")
    width = {"I64": 8, "I32": 4}
    assert (8 + n) % 8 == 0
    assert all(info["data_offsets"][0] % width[info["dtype"]] == 0 for info in header.values())


def test_spill_folder_removed_on_interrupt(tmp_path):
    def interrupted():
        yield [1, 2, 3]
        raise KeyboardInterrupt

    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(KeyboardInterrupt):
        NGramTable.from_token_shards([[[1, 2, 3, 4]] * 50, interrupted], 8, 3, spill_dir=spill,
                                     out=tmp_path / "t.safetensors")
    assert list(spill.iterdir()) == []
    assert not (tmp_path / "t.safetensors").exists()


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="order <= 4 at vocab_size 32000"):
        NGramTable.from_token_shards([[[1, 2]]], 32000, 5)
    with pytest.raises(ValueError, match="`memory_gb`"):
        NGramTable.from_token_shards([[[1, 2]]], 8, 2, memory_gb=0)
    with pytest.raises(ValueError, match="`shards`"):
        NGramTable.from_token_shards([], 8, 2)
    with pytest.raises(ValueError, match="no tokens"):
        NGramTable.from_token_shards([[[]], []], 8, 2)
    with pytest.raises(ValueError, match="outside"):
        NGramTable.from_token_shards([[[1, 9]]], 8, 2)
    with pytest.raises(TypeError, match="`workers`"):
        NGramTable.from_token_shards([[[1, 2]]], 8, 2, workers=1.5)
