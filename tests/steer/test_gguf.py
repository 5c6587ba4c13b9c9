"""GGUF files as a model source: equal to transformers' own GGUF load, cached once, bad files refused by name."""

from __future__ import annotations

import sys

import pytest
import torch

import steer
from steer.gguf import GGUFError, check_gguf, converted_folder, find_gguf


def _tiny_gguf(path, arch: str) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.slow
def test_loads_the_shared_gguf_with_the_logits_of_transformers_own_gguf_load(smollm2, smollm2_gguf):
    from transformers import AutoModelForCausalLM

    model, tokenizer = smollm2
    direct = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                                  dtype=torch.float32).eval()
    ids = tokenizer(["The old man walked to the river and"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours, theirs = model(ids).logits, direct(ids).logits
    assert torch.equal(ours, theirs)
    assert not hasattr(model.config, "quantization_config")
    assert model.config.vocab_size == 49152 and not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_second_load_reads_the_cache_and_never_the_gguf_loader(smollm2, smollm2_gguf, monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    first, _ = smollm2
    folder = converted_folder(smollm2_gguf)
    assert (folder / "model.safetensors").exists() and (folder / "steer_gguf.json").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("the GGUF file was read again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", refuse)
    for source in (smollm2_gguf, smollm2_gguf.parent):  # the file, or the folder holding it
        again, tokenizer = steer.load_model(str(source))
        assert torch.equal(again.model.embed_tokens.weight, first.model.embed_tokens.weight)
        assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


def test_a_truncated_gguf_is_refused_naming_the_file(smollm2_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as f:
        cut.write_bytes(f.read(3_000_000))
    with pytest.raises(GGUFError, match=r"cut\.gguf.*truncated or corrupt"):
        steer.load_model(str(cut))


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(GGUFError, match=r"model\.gguf.*is not a GGUF file"):
        steer.load_model(str(bad))


def test_an_architecture_transformers_cannot_load_is_refused(tmp_path):
    path = tmp_path / "odd.gguf"
    _tiny_gguf(path, "rwkv6")
    with pytest.raises(GGUFError, match=r"odd\.gguf.*'rwkv6' model, which transformers cannot load"):
        check_gguf(path)
    with pytest.raises(GGUFError, match="rwkv6"):
        steer.load_model(str(path))


def test_missing_gguf_package_names_it(tmp_path, monkeypatch):
    path = tmp_path / "a.gguf"
    _tiny_gguf(path, "llama")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match="needs the `gguf` package: pip install gguf"):
        steer.load_model(str(path))


def test_a_folder_is_a_gguf_source_only_with_exactly_one_file(tmp_path):
    assert find_gguf(tmp_path) is None
    _tiny_gguf(tmp_path / "a.gguf", "llama")
    assert find_gguf(tmp_path) == tmp_path / "a.gguf"
    _tiny_gguf(tmp_path / "b.gguf", "llama")
    with pytest.raises(ValueError, match="holds 2 GGUF files"):
        find_gguf(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert find_gguf(tmp_path) is None  # an ordinary model folder


def test_an_unfinished_conversion_is_not_taken_for_a_cache_entry(tmp_path, monkeypatch):
    path = tmp_path / "a.gguf"
    _tiny_gguf(path, "rwkv6")
    from steer import gguf as steer_gguf

    digest = steer_gguf.file_sha256(path)
    half = tmp_path / "cache" / f"gguf-{digest[:16]}"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # no marker: an interrupted conversion
    with pytest.raises(GGUFError):  # so the file is checked (and refused) rather than the folder loaded
        converted_folder(path, cache_dir=tmp_path / "cache")
