"""steer's priors in llama.cpp (llama-cpp-python) on the shared SmolLM2 GGUF, against transformers.

Runs where llama-cpp-python is installed (the llama.cpp environment of the README); elsewhere the
module is skipped. llama.cpp runs the GGUF's Q4_1 weights as they are and transformers a dequantised
float32 copy, so their logits differ slightly: the tests compare what the processor adds, and the
greedy texts only as far as the two runtimes agree unsteered.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]

from steer import SteeringSpec  # noqa: E402
from steer.serving.llamacpp import SteerLlamaProcessor, gguf_tokenizer  # noqa: E402
from steer.spec import Workshop  # noqa: E402
from tests.conftest import shared_path, within_unfused_rounding  # noqa: E402

PROMPTS = ["The old man walked", "She opened the letter and", "In the morning the fishermen"]
NEW = 24
PRIOR = {"method": "prior", "knob": 1.0, "corpus": "don_quixote"}
CONTRASTIVE = {"method": "contrastive+plausible", "knob": 4.0, "corpus": "don_quixote", "background": "background"}


@pytest.fixture(scope="module")
def gguf():
    return shared_path("models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def runtime(gguf):
    """The Llama, the GGUF's transformers tokenizer, the dequantised transformers model, one shared workshop."""
    from transformers import AutoModelForCausalLM

    from steer.gguf import converted_folder

    mp = pytest.MonkeyPatch()
    mp.setenv("STEER_CORPORA_DIR", str(shared_path("corpora")))
    llm = llama_cpp.Llama(str(gguf), n_ctx=512, seed=0, verbose=False)
    tok = gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(converted_folder(gguf), dtype=torch.float32).eval()
    yield llm, tok, model, Workshop(model, tok)
    mp.undo()


class Recorder:
    """A processor wrapper keeping each call's ids, row before and row after."""

    def __init__(self, processor):
        self.processor, self.calls = processor, []

    def __call__(self, input_ids, scores):
        before = np.array(scores, copy=True)
        out = self.processor(input_ids, scores)
        self.calls.append((np.array(input_ids, copy=True), before, np.array(out, copy=True)))
        return out


def _llama_greedy(llm, tok, prompt, processor=None):
    chain = llama_cpp.LogitsProcessorList([processor]) if processor is not None else None
    llm.reset()
    ids = tok(prompt)["input_ids"]
    out = []
    for token in llm.generate(ids, temp=0.0, logits_processor=chain):
        out.append(token)
        if len(out) == NEW:
            break
    return out


def _hf_greedy(model, tok, prompt, processors=()):
    from transformers import LogitsProcessorList

    x = torch.tensor([tok(prompt)["input_ids"]])
    y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=NEW, do_sample=False,
                       logits_processor=LogitsProcessorList(list(processors)), eos_token_id=None, pad_token_id=0)
    return y[0, x.shape[1]:].tolist()


def _agree(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.mark.parametrize("spec", [PRIOR, CONTRASTIVE])
def test_the_added_term_equals_the_transformers_processors(runtime, spec):
    llm, tok, model, workshop = runtime
    steer = Recorder(SteerLlamaProcessor.from_spec(spec, llm, tokenizer=tok, workshop=workshop))
    _llama_greedy(llm, tok, PROMPTS[0], steer)
    (reference,) = SteeringSpec.from_dict(spec).build(model, tok, workshop).processors
    assert len(steer.calls) == NEW
    for ids, before, after in steer.calls:
        # The same row through the transformers processor, on the whole sequence as generate passes it.
        want = reference(torch.from_numpy(ids.astype(np.int64))[None], torch.from_numpy(before)[None])[0].numpy()
        # The same bonus; numpy adds lam * b where torch fuses the multiply-add (one more rounding).
        assert within_unfused_rounding(after, want, before)
        assert np.any(after != before)
    if spec is PRIOR:  # the prior's term does not depend on the logits: the same on transformers' own row
        ids, before, after = steer.calls[-1]
        x = torch.from_numpy(ids.astype(np.int64))[None]
        hf_row = model(x).logits[:, -1].detach()
        width = before.shape[0]
        np.testing.assert_allclose(after - before, (reference(x, hf_row) - hf_row)[0, :width].numpy(), atol=1e-5)


@pytest.mark.parametrize("spec", [PRIOR, CONTRASTIVE])
def test_steered_greedy_equals_steered_generate_as_far_as_the_runtimes_agree(runtime, spec):
    """Token for token while the runtimes' unsteered greedy outputs agree, unless the bonus itself reads
    the logits (the plausibility bound) and the two runtimes' rows put a chosen token on either side of it."""
    llm, tok, model, workshop = runtime
    steer = Recorder(SteerLlamaProcessor.from_spec(spec, llm, tokenizer=tok, workshop=workshop))
    (reference,) = SteeringSpec.from_dict(spec).build(model, tok, workshop).processors
    for prompt in PROMPTS:
        plain = _agree(_llama_greedy(llm, tok, prompt), _hf_greedy(model, tok, prompt))
        steer.calls.clear()
        ours, theirs = _llama_greedy(llm, tok, prompt, steer), _hf_greedy(model, tok, prompt, [reference])
        assert ours != _llama_greedy(llm, tok, prompt)  # the steering did something
        d = _agree(ours, theirs)
        print(f"{prompt!r}: unsteered agree on {plain}, steered on {d} of {NEW}")
        if d >= plain:
            continue
        # The first steered step where they part: the bonus on llama.cpp's row and on transformers'.
        ids, before, after = steer.calls[d]
        x = torch.from_numpy(ids.astype(np.int64))[None]
        hf_row = model(x).logits[:, -1].detach()
        hf_bonus = (reference(x, hf_row) - hf_row)[0].numpy()
        chosen = [ours[d], theirs[d]]
        assert not np.allclose((after - before)[chosen], hf_bonus[chosen], atol=1e-5), (prompt, d)


def test_a_bad_spec_is_refused_before_generation(runtime, tmp_path):
    llm, tok, _, workshop = runtime
    from transformers import AutoTokenizer

    for bad, error, match in [
        ({"method": "activation", "knob": 0.1, "corpus": "don_quixote"}, ValueError, "cannot be served"),
        ({"method": "hso", "knob": 0.1, "corpus": "don_quixote"}, ValueError, "cannot be served"),
        ({"method": "prior", "knob": -1, "corpus": "don_quixote"}, ValueError, "knob"),
        ({"method": "contrastive", "knob": 1, "corpus": "don_quixote", "options": {"guided": {"clip": -1}}},
         ValueError, "clip"),
        (42, TypeError, "spec"),
        (str(tmp_path / "missing.json"), FileNotFoundError, "not found"),
    ]:
        with pytest.raises(error, match=match):
            SteerLlamaProcessor.from_spec(bad, llm, tokenizer=tok, workshop=workshop)
    other = AutoTokenizer.from_pretrained(shared_path("models", "aidreams260K-hf"))
    with pytest.raises(ValueError, match="does not match"):
        SteerLlamaProcessor.from_spec(PRIOR, llm, tokenizer=other)


def test_a_spec_file_and_named_tables(runtime, tmp_path):
    """The JSON file ``steer generate --save-spec`` writes, and a corpus named in a tables mapping."""
    llm, tok, _, workshop = runtime
    table = workshop.context(SteeringSpec.from_dict(PRIOR)).table()
    table.save(tmp_path / "quixote.safetensors")
    path = tmp_path / "spec.json"
    SteeringSpec.from_dict({**PRIOR, "corpus": "quixote"}).save(path)
    named = SteerLlamaProcessor.from_spec(path, llm, tokenizer=tok,
                                          tables={"quixote": str(tmp_path / "quixote.safetensors")})
    direct = SteerLlamaProcessor.from_spec(PRIOR, llm, tokenizer=tok, workshop=workshop)
    ids = np.array(tok(PROMPTS[0])["input_ids"], dtype=np.intc)
    row = np.random.default_rng(0).standard_normal(llm.n_vocab()).astype(np.float32)
    assert np.array_equal(named(ids, row.copy()), direct(ids, row.copy()))
