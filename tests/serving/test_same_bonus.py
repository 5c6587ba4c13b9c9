"""One spec, three engines: transformers, vLLM (both runners) and llama.cpp add the same bonus to the same row.

The spec names its tables as an engine does (``STEER_VLLM_TABLES``); transformers builds it from the
same table files through ``SteeringSpec.build``. Every engine steers the same contexts and the same
logits. The llama.cpp adapter is a callable on numpy arrays, so it runs in every environment; the
vLLM processors run where vLLM is installed (the V2 one driven by hand: ``tests.serving.mrv2``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from steer import SteeringSpec
from steer.serving.llamacpp import SteerLlamaProcessor

pytestmark = [pytest.mark.vllm, pytest.mark.llamacpp]

SPECS = [
    {"method": "prior", "knob": 1.0, "corpus": "served_quixote"},
    {"method": "contrastive+plausible", "knob": 4.0, "corpus": "served_quixote", "background": "served_books"},
    {"method": "contrastive+plausible+kl", "knob": 0.05, "corpus": "served_cnn", "background": "served_books",
     "options": {"guided": {"kl_max_lam": 4.0}}},
]
PROMPTS = ["The old man walked to the", "She opened the letter and", "x", "In the morning the fishermen went"]
OUTPUTS = [[5, 6, 7], [], [9], [11, 12]]  # tokens already generated after each prompt
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def rows(served):
    """The contexts (prompt + output ids) and one logits row each."""
    seqs = [served.tokenizer(p)["input_ids"] + out for p, out in zip(PROMPTS, OUTPUTS, strict=True)]
    logits = torch.randn(len(seqs), served.width, generator=torch.Generator().manual_seed(0))
    return seqs, logits


def transformers_bonus(served, spec, seqs, logits):
    paths = {k: served.paths.get(v, v) for k, v in spec.items() if k in ("corpus", "background")}
    (processor,) = SteeringSpec.from_dict({**spec, **paths}).build(None, served.tokenizer).processors
    return torch.stack([processor(torch.tensor([s]), logits[i:i + 1])[0] - logits[i] for i, s in enumerate(seqs)])


def llamacpp_bonus(served, spec, seqs, logits):
    processor = SteerLlamaProcessor.from_spec(spec, tokenizer=served.tokenizer, tables=served.paths)
    out = []
    for i, s in enumerate(seqs):
        row = logits[i].numpy().copy()
        out.append(torch.from_numpy(processor(np.array(s, dtype=np.intc), row)) - logits[i])
    return torch.stack(out)


def vllm_v1_bonus(served, spec, seqs, logits):
    import vllm
    from vllm.v1.sample.logits_processor import BatchUpdate

    from steer.serving.vllm import SteerLogitsProcessorV1

    proc = SteerLogitsProcessorV1(served.config, torch.device("cpu"), False)
    params = vllm.SamplingParams(extra_args={"steer": spec})
    n = len(PROMPTS)
    # vLLM hands a request's prompt ids and a reference to its running output list.
    added = [(i, params, seqs[i][:len(seqs[i]) - len(OUTPUTS[i])], list(OUTPUTS[i])) for i in range(n)]
    proc.update_state(BatchUpdate(batch_size=n, removed=[], added=added, moved=[]))
    return proc.apply(logits.clone()) - logits


def vllm_v2_bonus(served, spec, seqs, logits):
    from tests.serving.mrv2 import Runner

    run = Runner(served.config, served.width)
    for i, s in enumerate(seqs):
        run.add(str(i), s, spec)
    before, after, _ = run.step([str(i) for i in range(len(seqs))], logits=logits)
    return after - before


ENGINES = {"llamacpp": llamacpp_bonus, "vllm_v1": vllm_v1_bonus, "vllm_v2": vllm_v2_bonus}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("spec", SPECS, ids=[s["method"] for s in SPECS])
def test_the_same_spec_adds_the_same_bonus(served, rows, spec, engine):
    if engine.startswith("vllm") and not HAS_VLLM:
        pytest.skip("vLLM is not installed here (README, 'Serving')")
    seqs, logits = rows
    want = transformers_bonus(served, spec, seqs, logits)
    assert want.abs().sum() > 0
    torch.testing.assert_close(ENGINES[engine](served, spec, seqs, logits), want, rtol=0, atol=1e-5)
