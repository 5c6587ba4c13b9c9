"""Fixtures of the serving tests: small tables named as an engine names them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.conftest import shared_path

# name -> corpus: the tables an engine is started with (STEER_VLLM_TABLES) in the adapter tests.
TABLES = {"served_quixote": "don_quixote", "served_cnn": "cnn_highlights", "served_books": "background"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The aidreams tokenizer, order-3 tables of ``TABLES`` in its tokens, named in STEER_VLLM_TABLES,
    and a stand-in for the vLLM config the processors read (the model's vocabulary and tokenizer)."""
    from transformers import AutoTokenizer

    from ngram import NGramTable
    from steer.corpora import load_corpus

    root = tmp_path_factory.mktemp("served")
    mp = pytest.MonkeyPatch()
    mp.setenv("STEER_CORPORA_DIR", str(shared_path("corpora")))
    folder = shared_path("models", "aidreams260K-hf")
    tok = AutoTokenizer.from_pretrained(folder)
    paths = {}
    for name, corpus in TABLES.items():
        paths[name] = str(root / f"{name}.safetensors")
        NGramTable.from_texts(load_corpus(corpus).steer[:300], tok, 3).save(paths[name])
    mp.setenv("STEER_VLLM_TABLES", json.dumps(paths))
    width = len(tok)
    config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: width, tokenizer=str(folder)),
                             speculative_config=None)
    yield SimpleNamespace(tokenizer=tok, paths=paths, config=config, width=width)
    mp.undo()
