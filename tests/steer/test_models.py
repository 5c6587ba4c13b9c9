"""Prompts in each model's own document format, and continuations stopped at its document end."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessor

from steer.baselines.prompt import StylePrompt
from steer.generation import DecodeConfig, continue_prompts
from steer.models import document_start_id, encode_prompts, stop_ids
from tests.conftest import shared_path, tiny_llama


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_gguf):
    tok = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    tok.padding_side = "left"
    return tok


def test_llama2c_conversion_gets_its_bos_prepended():
    tok = AutoTokenizer.from_pretrained(shared_path("models", "aidreams260K-hf"))
    assert tok("The old man", add_special_tokens=True)["input_ids"][0] != tok.bos_token_id  # adds none itself
    ids = encode_prompts(tok, ["The old man walked"])["input_ids"][0].tolist()
    assert document_start_id(tok) == tok.bos_token_id == ids[0] and ids.count(tok.bos_token_id) == 1
    assert stop_ids(tok) == [tok.eos_token_id]


def test_tokenizer_that_adds_its_bos_gets_exactly_one():
    tok = AutoTokenizer.from_pretrained(shared_path("models", "base-llama2tok"))
    ids = encode_prompts(tok, ["The old man walked"])["input_ids"][0].tolist()
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[1:] == tok("The old man walked", add_special_tokens=False)["input_ids"]


def test_smollm2_prompts_start_as_pretraining_documents_not_chat_turns(smol_tokenizer):
    tok = smol_tokenizer
    assert tok.bos_token == "<|im_start|>"  # declared BOS: the chat-turn marker
    assert document_start_id(tok) == tok.convert_tokens_to_ids("<|endoftext|>") == 0
    enc = encode_prompts(tok, ["The old man walked", "Hi"])
    assert enc["input_ids"][0].tolist() == [0, *tok("The old man walked", add_special_tokens=False)["input_ids"]]
    assert 1 not in enc["input_ids"].tolist()[0]
    assert enc["attention_mask"][1].tolist()[:3] == [0, 0, 0]  # left padding
    assert stop_ids(tok) == [2, 0]  # <|im_end|> and <|endoftext|>


def test_a_chat_formatted_prompt_keeps_its_own_start(smol_tokenizer):
    tok = smol_tokenizer
    chat = tok.apply_chat_template([{"role": "user", "content": "Write."}], tokenize=False, add_generation_prompt=True)
    ids = encode_prompts(tok, [chat + "The old man"])["input_ids"][0].tolist()
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and 0 not in ids


class _Force(LogitsProcessor):
    """Forces ``token`` at decoding step ``at`` (0-based) and a fixed other token before it."""

    def __init__(self, prompt_len: int, token: int, at: int):
        self.prompt_len, self.token, self.at = prompt_len, token, at

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        out = torch.full_like(scores, -1e9)
        out[:, self.token if step == self.at else 500] = 0.0
        return out


@pytest.mark.parametrize("stop", [0, 2], ids=["endoftext", "im_end"])
def test_continuations_stop_at_the_document_end_as_well_as_eos(smol_tokenizer, stop):
    model = tiny_llama(vocab_size=len(smol_tokenizer))
    width = encode_prompts(smol_tokenizer, ["The old man"])["input_ids"].shape[1]
    _, conts = continue_prompts(model, smol_tokenizer, ["The old man"], [_Force(width, stop, 3)],
                                DecodeConfig(max_new_tokens=8))
    assert conts == [[500, 500, 500]]


def test_style_prompt_uses_the_chat_template_where_the_model_has_one(smol_tokenizer):
    docs = ["In a village of La Mancha, the name of which I have no desire to call to mind."] * 4
    chat = StylePrompt().prefix(docs, smol_tokenizer)
    assert chat.startswith("<|im_start|>") and chat.endswith("<|im_start|>assistant\n")
    assert "In a village of La Mancha" in chat and StylePrompt().request in chat
    plain = StylePrompt(chat="never").prefix(docs, smol_tokenizer)
    assert plain == StylePrompt().prefix(docs) and "<|im_start|>" not in plain
    llama = AutoTokenizer.from_pretrained(shared_path("models", "base-llama2tok"))
    assert StylePrompt().prefix(docs, llama) == plain  # no chat template: plain paragraphs
    with pytest.raises(ValueError, match="`chat` must be 'auto' or 'never'"):
        StylePrompt(chat="always")


def test_demo_uses_steer_model_then_the_shared_smollm2(monkeypatch, tmp_path):
    from steer.models import demo_model, shared_data_dir

    monkeypatch.setenv("STEER_MODEL", "some/model")
    assert demo_model() == ("some/model", "$STEER_MODEL")
    monkeypatch.delenv("STEER_MODEL")
    monkeypatch.setenv("STEER_SHARED_DATA", str(shared_path()))
    model, source = demo_model()
    assert model == str(shared_path("models", "smollm2-135m-instruct")) and "SmolLM2" in source
    monkeypatch.setenv("STEER_SHARED_DATA", str(tmp_path))  # a shared folder without the model
    assert shared_data_dir() == tmp_path and demo_model()[0] == "TinyLlama/TinyLlama_v1.1"
