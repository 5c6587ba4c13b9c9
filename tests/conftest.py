"""Shared fixtures: the offline data beside the checkout, real tokenizers, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STEER_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder; fails (never skips) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (set STEER_SHARED_DATA or place ../shared/data)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def llama2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_path("tokenizers", "llama2", "hf"))


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(shared_path("tokenizers", "gpt2"))


@pytest.fixture(scope="session")
def aidreams_path() -> Path:
    return shared_path("models", "aidreams260K-hf")


@pytest.fixture(scope="session")
def aidreams(aidreams_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(aidreams_path).eval()
    return model, AutoTokenizer.from_pretrained(aidreams_path)


def tiny_llama(vocab_size: int = 64, seed: int = 0):
    """A randomly initialised 2-layer Llama built from a config (fixed seed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(vocab_size: int = 64, seed: int = 0):
    """A randomly initialised 2-layer GPT-2 built from a config (fixed seed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_gemma3(vocab_size: int = 64, seed: int = 0):
    """A randomly initialised 2-layer Gemma 3 (text) built from a config (fixed seed): sliding and full
    attention layers, scaled embeddings, a tied head, as the real 270M model has them."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=128, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    return Gemma3ForCausalLM(cfg).eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tables built by tests go to a per-session temporary cache, never ~/.cache."""
    monkeypatch.setenv("STEER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "steer-cache"))
    monkeypatch.setenv("STEER_CORPORA_DIR", str(SHARED / "corpora"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return shared_path("models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf, tmp_path_factory):
    """SmolLM2-135M-Instruct through steer.load_model: converted once per test session into its cache."""
    import steer

    mp = pytest.MonkeyPatch()
    mp.setenv("STEER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "steer-cache"))
    try:
        return steer.load_model(str(smollm2_gguf))
    finally:
        mp.undo()


def within_unfused_rounding(got: np.ndarray, want: np.ndarray, before: np.ndarray) -> bool:
    """``got`` = before + (lam * b) in float32 against ``want`` = the fused before + lam * b: apart by at most
    the rounding of lam * b and of the sum, two units in the last place of the larger of the logits."""
    if not np.array_equal(np.isneginf(got), np.isneginf(want)):
        return False
    finite = np.isfinite(want)
    scale = np.maximum(np.abs(want[finite]), np.abs(before[finite]))
    return bool(np.all(np.abs(got[finite] - want[finite]) <= 2 * np.spacing(scale)))
