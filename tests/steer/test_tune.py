"""steer tune: the decision rule under small-sample noise, its settings, and a run end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steer.matched import Constraints
from steer.sweep import builtin_prompts
from steer.tune import TuneConfig, binding, holds, qualifies, search_binds, tune, verdicts


def _samples(n: int, hit: float, degenerate: int = 0, nll: float = 30.0, seed: int = 0) -> list[dict]:
    """One sample per prompt: ``hit`` of them judged in style, the first ``degenerate`` degenerate."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(400)]
    out = []
    for i in range(n):
        text = " " + " ".join(rng.choice(words, 12))
        out.append({"prompt_index": i, "prompt": f"Prompt {i}", "text": text, "judge_hit": float(i < hit * n),
                    "degenerate": float(i < degenerate), "base_nll": nll + rng.normal(0, 1), "base_tokens": 10.0})
    return out


def test_one_degenerate_continuation_does_not_decide():
    """64 prompts: one more degenerate continuation than the unsteered model (0.02 against 0.00) holds (the
    degenerate limit is at least one continuation); two are unclear, not broken; ten break it."""
    base = _samples(64, 0.1)
    one = verdicts(_samples(64, 0.6, degenerate=1), base, Constraints())
    assert one["degenerate"]["status"] == "holds" and holds(one) and binding(one) is None
    two = verdicts(_samples(64, 0.6, degenerate=2), base, Constraints())
    assert two["degenerate"]["status"] == "unclear" and qualifies(two) and not holds(two)
    assert binding(two) == "degenerate"
    ten = verdicts(_samples(64, 0.6, degenerate=10), base, Constraints())
    assert ten["degenerate"]["status"] == "broken" and not qualifies(ten) and binding(ten) == "degenerate"


def test_perplexity_and_hit_statuses():
    base = _samples(64, 0.1, nll=30.0)
    worse = verdicts(_samples(64, 0.6, nll=36.0, seed=1), base, Constraints())  # exp(0.6) = 1.82x perplexity
    assert worse["ppl"]["status"] == "broken" and worse["ppl"]["value"] == pytest.approx(np.exp(0.6), rel=0.05)
    assert binding(worse) == "ppl"
    weak = verdicts(_samples(64, 0.2), base, Constraints())  # a gain of 0.1 < 0.3
    assert weak["hit"]["status"] != "holds" and binding(weak) == "hit" and not qualifies(weak)
    same = verdicts(base, base, Constraints())
    assert same["distinct2"]["value"] == 1.0 and same["ppl"]["value"] == pytest.approx(1.0)


def test_what_binds_when_nothing_holds():
    base = _samples(64, 0.1, nll=30.0)
    fluent_weak = {"verdicts": verdicts(_samples(64, 0.15), base, Constraints())}
    styled_costly = {"verdicts": verdicts(_samples(64, 0.9, nll=36.0, seed=1), base, Constraints())}
    assert search_binds([fluent_weak, styled_costly]) == "ppl"  # the styled setting breaks perplexity
    assert search_binds([fluent_weak]) == "hit"  # nothing reaches the gain
    good = {"verdicts": verdicts(_samples(64, 0.6), base, Constraints())}
    assert search_binds([fluent_weak, good]) is None


def test_config_checks_and_the_split():
    cfg = TuneConfig(model="m", corpus="c")
    dev, test = cfg.split()
    assert len(dev) == 64 and len(test) == 63 and not set(dev) & set(test)
    assert set(dev) | set(test) == set(builtin_prompts())
    with pytest.raises(ValueError, match="at least 32"):
        TuneConfig(model="m", corpus="c", prompts=("a",) * 40 + ("b",))
    with pytest.raises(ValueError, match="`methods`"):
        TuneConfig(model="m", corpus="c", methods=("lora",))
    with pytest.raises(ValueError, match="`budget_minutes`"):
        TuneConfig(model="m", corpus="c", budget_minutes=0)


@pytest.mark.slow
def test_tune_end_to_end_on_a_tiny_model(aidreams, aidreams_path, tmp_path, capsys):
    """A run returns a spec that `steer generate --spec` takes, reports on test prompts only, and resumes
    without the model once finished."""
    from steer.cli import main
    from steer.spec import SteeringSpec

    model, tok = aidreams
    cfg = TuneConfig(model=str(aidreams_path), corpus="kjv_new_testament", methods=("prior", "contrastive+plausible"),
                     prompts=tuple(builtin_prompts()[:32]), max_new_tokens=48, budget_minutes=5)
    out = tmp_path / "tune"
    result = tune(cfg, out, model=model, tokenizer=tok)
    for name in ("spec.json", "validation.json", "report.md", "cells.jsonl", "samples.jsonl.gz", "tune.json"):
        assert (out / name).exists(), name
    spec = SteeringSpec.load(out / "spec.json")
    assert (spec.method, spec.knob) == (result.validation["method"], result.validation["knob"])
    validation = json.loads((out / "validation.json").read_text())
    for key in ("holds", "hit", "hit_unsteered", "base_ppl_ratio", "cross_ppl_ratio", "distinct_2_ratio",
                "degenerate_rate", "degenerate_rate_unsteered", "vs_prompt", "regret", "minutes", "search_binds"):
        assert key in validation, key
    assert len(validation["vs_prompt"]["interval"]) == 2
    import gzip

    samples = [json.loads(x) for x in gzip.decompress((out / "samples.jsonl.gz").read_bytes()).splitlines()]
    dev, test = cfg.split()
    assert {s["prompt"] for s in samples if s["stage"] == "test"} <= set(test)
    assert not {s["prompt"] for s in samples if s["stage"] != "test"} & set(test)
    assert {s["stage"] for s in samples} == {"A", "B", "test"}

    class NoModel:  # a finished run resumes without generating anything
        def __getattr__(self, name):
            raise AssertionError("model used on resume")

    again = tune(cfg, out, model=NoModel(), tokenizer=tok)
    assert again.validation["hit"] == result.validation["hit"] and again.spec.to_dict() == result.spec.to_dict()
    with pytest.raises(ValueError, match="another tuning run"):
        tune(TuneConfig(**{**cfg.__dict__, "max_new_tokens": 40}), out, model=model, tokenizer=tok)
    assert main(["generate", "--model", str(aidreams_path), "--spec", str(out / "spec.json"), "Once upon a time"]) == 0
    assert "Once upon a time" in capsys.readouterr().out
