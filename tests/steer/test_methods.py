"""The method registry: every method builds, the sweep runs any registered method over its knob."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor

from steer.methods import REGISTRY, Method, Setup, get_method, register
from steer.sweep import SweepConfig, run_sweep


def test_registry_holds_the_paper_baselines_and_the_variants():
    for name in ["prior", "prompt", "prior+prompt", "lora", "contrastive", "contrastive+plausible",
                 "contrastive+entropy", "contrastive+kl", "contrastive+plausible+kl", "plausible", "kl"]:
        assert get_method(name).name == name
    assert get_method("contrastive+plausible+kl").knob == "eps" and get_method("contrastive").needs_background
    with pytest.raises(ValueError, match="unknown method"):
        get_method("rag")
    with pytest.raises(ValueError, match="already registered"):
        register(Method("prior", "lam", None, lambda ctx, k: Setup()))


@pytest.fixture
def corpora(tmp_path):
    style = tmp_path / "style.txt"
    style.write_text("\n".join(f"the pixels dream of light {i} and the light dreams of pixels" for i in range(60)))
    background = tmp_path / "background.txt"
    background.write_text("\n".join(f"a robot walked to the market {i} and bought some bread" for i in range(60)))
    return style, background


def test_sweep_runs_registered_variants_over_their_knobs(aidreams, aidreams_path, corpora, tmp_path):
    model, tok = aidreams
    style, background = corpora
    cfg = SweepConfig(model=str(aidreams_path), corpora=[str(style)], lambdas=[0.0],
                      prompts=["Once upon a time", "The machine dreamed"], max_new_tokens=6, judges=["diversity"],
                      methods=["contrastive+plausible+kl", "contrastive"],
                      knobs={"contrastive+plausible+kl": [0.05, 0.02]}, background=str(background))
    assert [c[1:] for c in cfg.cells()] == [("prior", 0.0), ("contrastive+plausible+kl", 0.02),
                                             ("contrastive+plausible+kl", 0.05), ("contrastive", 0.25),
                                             ("contrastive", 0.5), ("contrastive", 1.0), ("contrastive", 2.0)]
    rows = run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    kl = [r for r in rows if r["method"] == "contrastive+plausible+kl"]
    assert [r["knob"] for r in kl] == [0.02, 0.05] and all(r["lam"] == 8.0 for r in kl)
    assert all(r["js_div"] > 0 for r in rows if r["method"] != "prior")
    assert rows[0]["js_div"] < 1e-9  # lam = 0: the prior is the identity
    with pytest.raises(ValueError, match="`knobs`"):
        SweepConfig(model="m", corpora=["x"], knobs={"contrastive": [1.0]})
    with pytest.raises(ValueError, match="unknown method"):
        SweepConfig(model="m", corpora=["x"], methods=["nope"])


def test_every_method_builds_processors(aidreams, corpora, tmp_path):
    from steer.corpora import load_corpus
    from steer.methods import Context
    from steer.table_cache import table_for

    model, tok = aidreams
    style, background = corpora
    corpus = load_corpus(style)
    cfg = SweepConfig(model="m", corpora=[str(style)], judges=[], lora=dict(steps=1, batch_size=2, window=16))
    ctx = Context(model, tok, corpus, cfg.options(), lambda: table_for(corpus, tok),
                  lambda: table_for(load_corpus(background), tok),
                  lambda: (model, {"wall_seconds": 0.0}, 0), background_corpus=lambda: load_corpus(background))
    for name, method in REGISTRY.items():
        setup = method.build(ctx, method.knobs[0] if method.knobs else 0.05)
        assert all(isinstance(p, LogitsProcessor) for p in setup.processors), name
        if setup.context is not None:
            with setup.context():
                pass
        assert isinstance(setup.costs, dict) and setup.lam >= 0


def test_guided_options_reach_the_variants_and_bad_ones_are_refused(aidreams, corpora):
    from steer.corpora import load_corpus
    from steer.methods import Context
    from steer.options import GuidedOptions
    from steer.table_cache import table_for

    model, tok = aidreams
    style, background = corpora
    corpus = load_corpus(style)
    cfg = SweepConfig(model="m", corpora=[str(style)], judges=[],
                      guided={"plausibility": 0.02, "clip": 1.5, "kl_max_lam": 4.0, "centre": True,
                              "mask": True, "temper": True, "fresh": 2})
    ctx = Context(model, tok, corpus, cfg.options(), lambda: table_for(corpus, tok),
                  lambda: table_for(load_corpus(background), tok), lambda: None)
    (prior,) = get_method("contrastive+plausible+kl").build(ctx, 0.1).processors
    assert (prior.plausibility, prior.clip, prior.lam, prior.kl_budget, prior.centre, prior.mask, prior.temper,
            prior.fresh) == (0.02, 1.5, 4.0, 0.1, True, True, True, 2)
    (plain,) = get_method("contrastive").build(ctx, 0.5).processors
    assert (plain.plausibility, plain.clip, plain.lam, plain.centre, plain.mask, plain.temper) == (
        None, 1.5, 0.5, False, False, True)
    assert GuidedOptions.from_dict({}) == GuidedOptions() and GuidedOptions().fresh is None
    for bad, match in [({"plausibility": 0}, "plausibility"), ({"plausibility": 1.5}, "plausibility"),
                       ({"clip": -1.0}, "clip"), ({"kl_max_lam": float("inf")}, "kl_max_lam"),
                       ({"centre": 1}, "centre"), ({"mask": "yes"}, "mask"), ({"temper": 1}, "temper"),
                       ({"fresh": 0}, "fresh"), ({"fresh": True}, "fresh"), ({"fresh": 2.0}, "fresh"),
                       ({"alpha": 0.1}, "unknown options")]:
        with pytest.raises(ValueError, match=match):
            SweepConfig(model="m", corpora=["x"], judges=[], guided=bad)


def test_activation_methods_run_in_a_sweep_and_their_hooks_leave_no_trace(aidreams, aidreams_path, corpora,
                                                                          tmp_path):
    from steer.activation import decoder_layers

    model, tok = aidreams
    style, background = corpora
    before = [len(layer._forward_hooks) for layer in decoder_layers(model)]
    cfg = SweepConfig(model=str(aidreams_path), corpora=[str(style)], lambdas=[0.0],
                      prompts=["Once upon a time", "The machine dreamed"], max_new_tokens=6, judges=["diversity"],
                      methods=["activation", "activation+contrastive+plausible"],
                      knobs={"activation": [0.0, 2.0], "activation+contrastive+plausible": [0.0, 1.0]},
                      activation={"layers": [1, 3], "scale": 2.0, "chunk_tokens": 8, "max_chunks": 8},
                      background=str(background))
    rows = {(r["method"], r["knob"]): r for r in run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)}
    samples = {}
    import json

    for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines():
        smp = json.loads(line)
        samples.setdefault((smp["method"], smp["knob"]), []).append(smp["text"])
    # Scale 0 is the unsteered model; a large scale changes the text; the hooks are gone afterwards.
    assert samples[("activation", 0.0)] == samples[("prior", 0.0)]
    assert samples[("activation", 2.0)] != samples[("prior", 0.0)]
    assert samples[("activation+contrastive+plausible", 0.0)] == samples[("activation", 2.0)]
    assert rows[("activation", 2.0)]["extra_mem_mb"] > 0
    assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == before


def test_activation_options_are_validated():
    from steer.options import ActivationOptions

    assert ActivationOptions.from_dict({}) == ActivationOptions()
    for bad, name in [({"layers": []}, "layers"), ({"layers": 3}, "layers"), ({"layers": [True]}, "layers"),
                      ({"position": "first"}, "position"), ({"normalise": 1}, "normalise"),
                      ({"scale": float("nan")}, "scale"), ({"chunk_tokens": 1}, "chunk_tokens"),
                      ({"max_chunks": 0}, "max_chunks"), ({"layer": [1]}, "unknown")]:
        with pytest.raises(ValueError, match=name):
            ActivationOptions.from_dict(bad)
    with pytest.raises(ValueError, match="activation"):
        SweepConfig(model="m", corpora=["x"], activation={"scale": "big"})


def test_hso_methods_run_in_a_sweep_from_the_prompt_methods_exemplars(aidreams, aidreams_path, corpora, tmp_path):
    import json

    model, tok = aidreams
    style, background = corpora
    before = [p.detach().clone() for p in model.parameters()]
    cfg = SweepConfig(model=str(aidreams_path), corpora=[str(style)], lambdas=[0.0],
                      prompts=["Once upon a time", "The machine dreamed of"], max_new_tokens=6, judges=["diversity"],
                      baselines=["prompt"], methods=["hso", "hso+contrastive+plausible"],
                      knobs={"hso": [0.0, 2.0], "hso+contrastive+plausible": [0.0]},
                      hso={"segment": 8, "lr": 0.5, "steps": 2}, background=str(background))
    rows = {(r["method"], r["knob"]): r for r in run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)}
    samples = {}
    for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines():
        smp = json.loads(line)
        samples.setdefault((smp["method"], smp["knob"]), []).append(smp["text"])
    # Zero steps: the prompt method's text, read from the exemplars' cache; steps move it.
    assert samples[("hso", 0.0)] == samples[("prompt", 0.0)]
    assert samples[("hso", 2.0)] != samples[("prompt", 0.0)]
    assert samples[("hso+contrastive+plausible", 0.0)] == samples[("hso", 2.0)]
    assert rows[("hso", 2.0)]["extra_mem_mb"] > 0 and rows[("hso", 2.0)]["train_s"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_hso_options_are_validated():
    from steer.options import HSOOptions

    assert HSOOptions.from_dict({}) == HSOOptions()
    for bad, name in [({"segment": 0}, "segment"), ({"lr": -1.0}, "lr"), ({"steps": 1.5}, "steps"),
                      ({"optimiser": "sgd"}, "unknown")]:
        with pytest.raises(ValueError, match=name):
            HSOOptions.from_dict(bad)
    with pytest.raises(ValueError, match="hso"):
        SweepConfig(model="m", corpora=["x"], hso={"lr": float("inf")})
