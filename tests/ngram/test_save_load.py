"""Save/load: lossless round trip; damaged, foreign or mismatched files are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ngram import NGramTable, TableFileError, TokenizerMismatchError


@pytest.fixture
def table():
    rng = np.random.default_rng(3)
    return NGramTable.from_token_ids([rng.integers(0, 9, size=50) for _ in range(4)], 9, 4)


def _ctx():
    return torch.tensor([[1, 2, 3], [0, 0, 0], [8, 7, 6]])


@pytest.mark.parametrize("opts", [dict(), dict(mode="logsum"), dict(order=3), dict(smoothing="kneser_ney")])
def test_round_trip_is_lossless(table, tmp_path, opts):
    path = tmp_path / "t.safetensors"
    table.save(path)
    loaded = NGramTable.load(path)
    assert loaded.order == table.order and loaded.vocab_size == table.vocab_size
    assert loaded.stats == table.stats and loaded.fingerprint == table.fingerprint
    torch.testing.assert_close(loaded.logprobs(_ctx(), **opts), table.logprobs(_ctx(), **opts),
                               rtol=0, atol=0)
    for name, v in table._saved_tensors().items():
        assert torch.equal(loaded._saved_tensors()[name], v), name


def test_round_trip_of_hashed_table(tmp_path, monkeypatch):
    from ngram import keys

    monkeypatch.setattr(keys, "exact_packing", lambda v, width: width < 2)
    table = NGramTable.from_token_ids([[1, 2, 3, 4, 1, 2, 3, 1]], 5, 4)
    table.save(tmp_path / "h.safetensors")
    loaded = NGramTable.load(tmp_path / "h.safetensors")
    assert loaded.hashed_orders == (3, 4)
    assert loaded.count([1, 2, 3, 4]) == 1 and loaded.count([2, 3, 1]) == 1


def test_metadata_records_format_and_stats(table, tmp_path):
    from safetensors import safe_open

    table.save(tmp_path / "t.safetensors")
    with safe_open(tmp_path / "t.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "steer-ngram" and meta["format_version"] == "1"
    assert meta["order"] == "4" and meta["vocab_size"] == "9"
    assert json.loads(meta["stats"])["n_tokens"] == 200


def test_truncated_file_is_refused(table, tmp_path):
    path = tmp_path / "t.safetensors"
    table.save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(TableFileError, match="rebuild"):
            NGramTable.load(path)


def test_altered_byte_is_refused(table, tmp_path):
    path = tmp_path / "t.safetensors"
    table.save(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(TableFileError, match="checksum"):
        NGramTable.load(path)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, path, metadata={"format": "pt"})
    with pytest.raises(TableFileError, match="not a steer n-gram table"):
        NGramTable.load(path)


def test_future_version_is_refused(table, tmp_path):
    from safetensors import safe_open

    path = tmp_path / "t.safetensors"
    table.save(path)
    with safe_open(path, "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["format_version"] = "99"
    save_file(tensors, path, metadata=meta)
    with pytest.raises(TableFileError, match="version"):
        NGramTable.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="rebuild"):
        NGramTable.load(tmp_path / "none.safetensors")


def test_tokenizer_mismatch_is_refused(tmp_path, llama2_tokenizer, gpt2_tokenizer):
    table = NGramTable.from_texts(["a small corpus of text", "and another line"], llama2_tokenizer, 2)
    path = tmp_path / "t.safetensors"
    table.save(path)
    NGramTable.load(path, tokenizer=llama2_tokenizer)  # same tokenizer: fine
    with pytest.raises(TokenizerMismatchError, match="rebuild"):
        NGramTable.load(path, tokenizer=gpt2_tokenizer)
    with pytest.raises(TokenizerMismatchError):
        table.check_tokenizer(gpt2_tokenizer)


def test_load_to_device_and_query_on_other_device(table, tmp_path):
    table.save(tmp_path / "t.safetensors")
    loaded = NGramTable.load(tmp_path / "t.safetensors", device="cpu")
    assert loaded.device == torch.device("cpu")
    moved = table.to("cpu")
    torch.testing.assert_close(moved.logprobs(_ctx()), table.logprobs(_ctx()))


def test_save_does_not_leave_partial_file_on_error(table, tmp_path):
    target = tmp_path / "sub" / "t.safetensors"  # missing folder: save fails
    with pytest.raises(OSError):
        table.save(target)
    assert not target.exists()
