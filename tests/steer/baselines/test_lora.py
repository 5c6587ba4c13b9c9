"""LoRA baseline: windows, training lowers loss, save/load round trip, and refusals."""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from steer.baselines.lora import (
    META_FILE,
    LoraTrainConfig,
    adapter_bytes,
    corpus_windows,
    load_lora,
    train_lora,
)
from tests.conftest import tiny_llama

DOCS = ["the pixels dream of light and the light dreams of pixels"] * 40


@pytest.fixture(scope="module")
def tok(aidreams):
    return aidreams[1]


def _loss(model, windows):
    with torch.no_grad():
        return float(model(input_ids=windows, labels=windows).loss)


def test_windows_start_with_bos_and_cover_the_corpus(tok):
    w = corpus_windows(tok, DOCS, 16)
    assert w.shape[1] == 16 and (w[:, 0] == tok.bos_token_id).all()
    with pytest.raises(ValueError, match="corpus too small"):
        corpus_windows(tok, ["tiny"], 64)


def test_training_lowers_loss_and_round_trips(tok, tmp_path):
    model = tiny_llama(len(tok))
    windows = corpus_windows(tok, DOCS, 16)
    before = _loss(model, windows)
    cfg = LoraTrainConfig(rank=4, steps=30, lr=1e-2, batch_size=4, window=16,
                          target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
    res = train_lora(model, tok, DOCS, cfg, tmp_path / "ad", corpus_name="c", model_name="tiny")
    after = _loss(res.model, windows)
    assert after < before - 0.2
    assert _loss(model, windows) == pytest.approx(before)  # the frozen model is untouched
    meta = json.loads((tmp_path / "ad" / META_FILE).read_text())
    assert meta["steps"] == 30 and len(meta["loss_curve"]) == 30 and "wall_seconds" in meta
    assert (tmp_path / "ad" / "adapter_config.json").exists()
    loaded, _ = load_lora(model, tmp_path / "ad")
    assert _loss(loaded, windows) == pytest.approx(after, rel=1e-5)
    assert adapter_bytes(loaded) > 0


def test_adapter_for_another_model_is_refused(tok, tmp_path):
    cfg = LoraTrainConfig(rank=2, steps=1, batch_size=2, window=16)
    train_lora(tiny_llama(len(tok), seed=0), tok, DOCS, cfg, tmp_path / "ad")
    with pytest.raises(ValueError, match="another base model"):
        load_lora(tiny_llama(len(tok), seed=1), tmp_path / "ad")
    with pytest.raises(FileNotFoundError, match="not a steer LoRA adapter"):
        load_lora(tiny_llama(len(tok)), tmp_path)


@pytest.mark.parametrize("kw, match", [(dict(rank=0), "`rank`"), (dict(lr=-1.0), "`lr`"),
                                       (dict(window=1), "`window`"), (dict(dropout=1.0), "`dropout`"),
                                       (dict(steps=2.5), "`steps`")])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        LoraTrainConfig(**kw)


def test_missing_peft_names_the_extra(tok, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft":
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match=r"steer\[lora\]"):
        train_lora(tiny_llama(len(tok)), tok, DOCS, LoraTrainConfig(steps=1, window=16), tmp_path / "x")


def test_early_stopping_ends_training_and_keeps_the_best_adapter(tok, tmp_path):
    model = tiny_llama(len(tok))
    docs = [f"the pixels dream of light {i} and the light dreams of pixels" for i in range(200)]
    # A learning rate this high overfits at once: the held-out loss stops improving.
    cfg = LoraTrainConfig(rank=4, steps=400, lr=0.3, batch_size=4, window=16, eval_every=5, patience=2,
                          target_modules=["q_proj", "v_proj"])
    res = train_lora(model, tok, docs, cfg, tmp_path / "ad")
    meta = res.meta
    assert meta["stopped_by"] == "early_stopping" and meta["steps"] < 400
    best = min(meta["eval_curve"], key=lambda e: e[1])
    assert meta["best_step"] == best[0] and meta["n_eval_windows"] >= 1
    windows = corpus_windows(tok, docs, 16)
    held = windows[windows.shape[0] - meta["n_eval_windows"] :]
    assert _loss(res.model, held) == pytest.approx(best[1], rel=1e-4)  # the best adapter was kept
    with pytest.raises(ValueError, match="`eval_fraction`"):
        LoraTrainConfig(eval_fraction=0.7)


def test_cached_adapter_is_reused(tok, tmp_path, monkeypatch):
    from steer.baselines import lora
    from steer.baselines.lora import cached_lora

    model = tiny_llama(len(tok))
    cfg = LoraTrainConfig(rank=2, steps=2, batch_size=2, window=16)
    _, meta, path = cached_lora(model, tok, DOCS, cfg, cache_dir=tmp_path)

    def no_training(*a, **k):
        raise AssertionError("trained again instead of loading the cached adapter")

    with monkeypatch.context() as m:
        m.setattr(lora, "train_lora", no_training)
        _, meta2, path2 = cached_lora(model, tok, DOCS, cfg, cache_dir=tmp_path)
    assert path == path2 and meta2["loss_curve"] == meta["loss_curve"]
    _, _, path3 = cached_lora(model, tok, DOCS[:20], cfg, cache_dir=tmp_path)
    assert path3 != path  # other text, other adapter
