"""steer's processor on vLLM's Model Runner V2, driven by hand through MRV2's own request state.

MRV2 needs Triton, which vLLM's CPU build lacks, so its engine cannot start here; ``tests.serving.mrv2``
takes the runner's place (MRV2's ``RequestState``, slots added, recycled and reordered, the sampler's
``LogitsContext`` with and without draft rows). Every row must equal the transformers processor
applied to the tokens that row sees. A real MRV2 engine is not run here (``benchmarks/device_vllm_mrv2.sh``
runs the engine tests on a GPU).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

vllm = pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm]

from vllm.exceptions import VLLMValidationError  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors_params_validator  # noqa: E402

from steer.serving import vllm as adapter  # noqa: E402
from tests.serving.mrv2 import PROCESSOR, Runner  # noqa: E402

QUIXOTE = {"method": "prior", "knob": 1.0, "corpus": "served_quixote"}
CONTRASTIVE = {"method": "contrastive+plausible", "knob": 4.0, "corpus": "served_cnn", "background": "served_books"}


@pytest.fixture(scope="module")
def engine(served):
    return served.config, served.tokenizer


def check(run, before, after, seen):
    """Each row: the transformers processor of its request's setting on the tokens it sees."""
    changed = 0
    for i, (r, seq) in enumerate(seen):
        steer = run.params[r]
        if steer is None:
            assert torch.equal(after[i], before[i]), (i, r)
            continue
        want = adapter.build_processor(steer)(torch.tensor([seq]), before[i:i + 1].clone())[0]
        torch.testing.assert_close(after[i], want, rtol=0, atol=1e-5, msg=f"row {i} ({r})")
        changed += not torch.equal(after[i], before[i])
    assert changed, "no row was steered"


def _ids(tok, text):
    return tok(text)["input_ids"]


def test_both_runners_loaders_accept_the_processor_and_build_the_right_one(engine):
    from vllm.v1.sample.logits_processor import _load_custom_logitsprocs

    config, tok = engine
    runner = Runner(config, len(tok))
    assert type(runner.proc) is adapter.SteerLogitsProcessorV2
    (v1_class,) = _load_custom_logitsprocs([PROCESSOR])
    assert type(v1_class(config, torch.device("cpu"), False)) is adapter.SteerLogitsProcessorV1


def test_mixed_settings_in_a_reordered_batch(engine):
    config, tok = engine
    run = Runner(config, len(tok))
    assert run.add("a", _ids(tok, "The old man walked to the"), QUIXOTE)
    assert not run.add("b", _ids(tok, "She opened the letter"), None)
    assert run.add("c", _ids(tok, "The report shows that"), CONTRASTIVE)
    assert run.add("d", _ids(tok, "In the morning"), QUIXOTE)
    assert not run.add("e", _ids(tok, "Once"), {**QUIXOTE, "knob": 0.0})  # lam 0 is the identity
    for step, order in enumerate([["a", "b", "c", "d", "e"], ["d", "c", "e", "a", "b"], ["c", "a"]]):
        before, after, seen = run.step(order, seed=step)
        check(run, before, after, seen)
        for r in order:
            run.commit(r, [int(after[order.index(r)].argmax())])


def test_every_row_alike_and_a_single_row(engine):
    config, tok = engine
    run = Runner(config, len(tok))
    run.add("a", _ids(tok, "The old man"), QUIXOTE)
    run.add("b", _ids(tok, "x"), QUIXOTE)  # shorter than the context: left-padded
    check(run, *run.step(["b", "a"]))
    check(run, *run.step(["a"]))


def test_a_recycled_slot_forgets_its_previous_setting(engine):
    config, tok = engine
    run = Runner(config, len(tok), slots=2)
    run.add("a", _ids(tok, "The old man"), QUIXOTE)
    run.add("b", _ids(tok, "She said"), CONTRASTIVE)
    slot_a = run.states.req_id_to_index["a"]
    run.remove("a")
    run.add("c", _ids(tok, "The old man"), None)  # takes a's slot, unsteered
    assert run.states.req_id_to_index["c"] == slot_a
    check(run, *run.step(["c", "b"]))
    run.remove("b")
    run.add("d", _ids(tok, "Later that day"), QUIXOTE)
    check(run, *run.step(["d", "c"]))
    assert set(run.proc.settings.procs) == {json.dumps(QUIXOTE, sort_keys=True)}  # the dropped setting is freed


def test_draft_rows_see_the_drafts_before_them(engine):
    """Under speculative decoding a request owns one row per draft token plus one."""
    config, tok = engine
    run = Runner(config, len(tok), drafts=3)
    run.add("a", _ids(tok, "The old man walked"), QUIXOTE)
    run.add("b", _ids(tok, "She opened"), None)
    run.add("c", _ids(tok, "The report"), CONTRASTIVE)
    run.add("d", _ids(tok, "In the"), QUIXOTE)
    drafts = {"a": _ids(tok, " to the sea")[:3], "c": _ids(tok, " says")[:1], "b": [5, 6]}
    before, after, seen = run.step(["c", "a", "b", "d"], drafts)
    assert after.shape[0] == 4 + 3 + 1 + 2
    check(run, before, after, seen)


def test_the_params_validator_refuses_bad_requests(engine):
    validate = build_custom_logits_processors_params_validator([PROCESSOR])
    validate(vllm.SamplingParams(extra_args={"steer": QUIXOTE}))
    validate(vllm.SamplingParams())
    for bad, match in [({**QUIXOTE, "corpus": "nope"}, "unknown steer table"),
                       ({**QUIXOTE, "method": "activation"}, "cannot be served")]:
        with pytest.raises(VLLMValidationError, match=match):
            validate(vllm.SamplingParams(extra_args={"steer": bad}))


def test_the_v1_runner_refuses_speculative_decoding_at_start(engine):
    config, _ = engine
    spec_config = SimpleNamespace(model_config=config.model_config, speculative_config=object())
    with pytest.raises(ValueError, match="speculative"):
        adapter.SteerLogitsProcessor(spec_config, torch.device("cpu"), False)
