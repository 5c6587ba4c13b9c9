"""Activation steering: the style vector is the mean activation difference, the hooks leave no trace."""

from __future__ import annotations

import math

import pytest
import torch

from steer.activation import ActivationSteering, StyleVector, decoder_layers, residual_means, text_chunks, vector_for
from tests.conftest import tiny_gpt2, tiny_llama

STYLE = ["the knight rode out at dawn and the squire followed him across the plain " * 3] * 4
NEUTRAL = ["prices rose again this quarter as the company reported higher costs " * 3] * 4


@pytest.fixture(scope="module")
def model_tok(request):
    from transformers import AutoTokenizer

    from tests.conftest import shared_path

    tok = AutoTokenizer.from_pretrained(shared_path("tokenizers", "llama2", "hf"))
    return tiny_llama(vocab_size=len(tok)), tok


def _generate(model, ids, **kw):
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                          pad_token_id=0, **kw)


def layer0_output_change(model, vec, ids, scale: float) -> torch.Tensor:
    """How much steering layer 0 (unnormalised) changes what it hands on, which is layer 1's input."""
    inputs = []
    handle = decoder_layers(model)[1].register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
    with torch.no_grad():
        model(input_ids=ids)
        with ActivationSteering(model, vec, layers=[0], scale=scale, normalise=False):
            model(input_ids=ids)
    handle.remove()
    return inputs[1] - inputs[0]


def test_vector_is_the_mean_difference_computed_by_hand(model_tok):
    model, tok = model_tok
    vec = StyleVector.from_texts(model, tok, STYLE, NEUTRAL, chunk_tokens=8, max_chunks=5)
    by_hand = []
    for texts in (STYLE, NEUTRAL):
        chunks = text_chunks(tok, texts, 8, 5)
        with torch.no_grad():
            hidden = model(input_ids=chunks, output_hidden_states=True).hidden_states
        # hidden_states[l + 1] is layer l's output, except the last entry (after the final norm): take it by hook.
        layers = [hidden[i + 1][:, 1:].reshape(-1, hidden[0].shape[-1]).mean(0) for i in range(len(hidden) - 2)]
        by_hand.append(torch.stack(layers))
    expected = by_hand[0] - by_hand[1]
    assert torch.allclose(vec.vectors[:-1], expected, atol=1e-5)
    assert vec.vectors.shape == (2, 32) and vec.position == "mean"
    # Each chunk opens with the document start, and the mean skips it.
    chunks = text_chunks(tok, STYLE, 8, 5)
    assert chunks.shape == (5, 9) and (chunks[:, 0] == tok.bos_token_id).all()


def test_last_position_takes_each_chunks_last_token(model_tok):
    model, tok = model_tok
    chunks = text_chunks(tok, STYLE, 6, 3)
    means, norms = residual_means(model, chunks, position="last")
    with torch.no_grad():
        hidden = model(input_ids=chunks, output_hidden_states=True).hidden_states
    assert torch.allclose(means[0], hidden[1][:, -1].mean(0), atol=1e-5)
    assert torch.allclose(norms[0], hidden[1][:, -1].norm(dim=-1).mean(), atol=1e-4)
    with pytest.raises(ValueError, match="`position`"):
        residual_means(model, chunks, position="first")


def test_hooks_are_removed_after_use_and_scale_zero_is_the_identity(model_tok):
    model, tok = model_tok
    vec = StyleVector.from_texts(model, tok, STYLE, NEUTRAL, chunk_tokens=8, max_chunks=4)
    ids = torch.tensor([[1, 450, 8366, 22074, 338]])
    plain = _generate(model, ids)
    before = [len(layer._forward_hooks) for layer in decoder_layers(model)]
    with ActivationSteering(model, vec, layers=[0, 1], scale=0.0) as steering:
        assert steering._handles == []
        assert torch.equal(_generate(model, ids), plain)
    with ActivationSteering(model, vec, layers=[0, 1], scale=8.0):
        steered = _generate(model, ids)
        assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == [n + 1 for n in before]
    assert not torch.equal(steered, plain)
    assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == before
    assert torch.equal(_generate(model, ids), plain)
    # Removed also when the block raises.
    with pytest.raises(KeyError), ActivationSteering(model, vec, layers=[1], scale=1.0):
        raise KeyError("boom")
    assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == before


def test_the_hook_adds_scale_times_the_direction_to_the_layer_output(model_tok):
    model, tok = model_tok
    vec = StyleVector.from_texts(model, tok, STYLE, NEUTRAL, chunk_tokens=8, max_chunks=4)
    ids = torch.tensor([[1, 450, 8366, 22074]])
    change = layer0_output_change(model, vec, ids, scale=0.3)
    assert torch.allclose(change, (0.3 * vec.vectors[0]).expand_as(change), atol=1e-5)
    # Normalised, the direction is as long as the neutral text's mean activation at that layer.
    assert math.isclose(vec.direction(0).norm().item(), vec.norms[0].item(), rel_tol=1e-5)


def test_bad_arguments_are_refused_by_name(model_tok):
    model, tok = model_tok
    vec = StyleVector.from_texts(model, tok, STYLE, NEUTRAL, chunk_tokens=8, max_chunks=4)
    with pytest.raises(ValueError, match="`layers`"):
        ActivationSteering(model, vec, layers=[2], scale=1.0)
    with pytest.raises(ValueError, match="`layers`"):
        ActivationSteering(model, vec, layers=[], scale=1.0)
    with pytest.raises(ValueError, match="twice"):
        ActivationSteering(model, vec, layers=[1, -1], scale=1.0)
    with pytest.raises(ValueError, match="`layers`"):
        ActivationSteering(model, vec, layers=[True], scale=1.0)
    for scale in (float("nan"), float("inf"), "1", None):
        with pytest.raises(ValueError, match="`scale`"):
            ActivationSteering(model, vec, layers=[0], scale=scale)
    with pytest.raises(ValueError, match=r"shape \(32,\)"):
        ActivationSteering(model, torch.zeros(16), layers=[0], scale=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        ActivationSteering(model, torch.full((32,), float("nan")), layers=[0], scale=1.0)
    with pytest.raises(TypeError, match="`vector`"):
        ActivationSteering(model, [0.0] * 32, layers=[0], scale=1.0)
    with pytest.raises(ValueError, match="`chunk_tokens`"):
        text_chunks(tok, STYLE, chunk_tokens=1)
    with pytest.raises(ValueError, match="fewer than one chunk"):
        text_chunks(tok, ["short"], chunk_tokens=64)
    steering = ActivationSteering(model, vec, layers=[0], scale=1.0)
    with steering, pytest.raises(RuntimeError, match="already active"):
        steering.__enter__()


def test_save_load_round_trip_and_a_vector_for_another_model_is_refused(model_tok, tmp_path):
    model, tok = model_tok
    vec = StyleVector.from_texts(model, tok, STYLE, NEUTRAL, chunk_tokens=8, max_chunks=4)
    path = tmp_path / "quixote.safetensors"
    vec.save(path)
    back = StyleVector.load(path, model)
    assert torch.equal(back.vectors, vec.vectors) and torch.equal(back.norms, vec.norms)
    assert back.fingerprint == vec.fingerprint and back.meta == vec.meta
    other = tiny_llama(vocab_size=len(tok), seed=1)
    with pytest.raises(ValueError, match="another model"):
        StyleVector.load(path, other)
    with pytest.raises(ValueError, match="another model"):
        ActivationSteering(other, vec, layers=[0], scale=1.0)
    with pytest.raises(ValueError, match="shape"):
        StyleVector(vec.vectors[:, :16], vec.norms).check_model(model)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable file"):
        StyleVector.load(path)
    with pytest.raises(FileNotFoundError):
        StyleVector.load(tmp_path / "missing.safetensors")


def test_gpt2_layers_return_tuples_or_tensors_and_are_steered_too():
    model = tiny_gpt2()
    ids = torch.tensor([[1, 5, 9, 12]])
    plain = _generate(model, ids)
    # Not a constant vector: the final LayerNorm would subtract it exactly.
    direction = torch.randn(32, generator=torch.Generator().manual_seed(0))
    with ActivationSteering(model, direction, layers=[-1], scale=5.0):
        steered = _generate(model, ids)
    assert not torch.equal(plain, steered)
    assert torch.equal(_generate(model, ids), plain)


def test_vector_for_measures_once_and_reads_the_cache(model_tok, tmp_path, monkeypatch):
    from steer.corpora import load_corpus

    model, tok = model_tok
    style, neutral = tmp_path / "style.txt", tmp_path / "neutral.txt"
    style.write_text("\n".join(STYLE * 10))
    neutral.write_text("\n".join(NEUTRAL * 10))
    a, b = load_corpus(style), load_corpus(neutral)
    first = vector_for(model, tok, a, b, chunk_tokens=8, max_chunks=4, cache_dir=tmp_path / "cache")

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(StyleVector, "from_texts", classmethod(refuse))
    again = vector_for(model, tok, a, b, chunk_tokens=8, max_chunks=4, cache_dir=tmp_path / "cache")
    assert torch.equal(first.vectors, again.vectors)
