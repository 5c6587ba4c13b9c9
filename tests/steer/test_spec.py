"""The steering spec: exact round trips, clear refusals, and the same text as the sweep's cell of the setting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from steer.spec import SteeringSpec

ROOT = Path(__file__).resolve().parents[2]


def test_a_spec_round_trips_exactly_through_dict_json_and_file(tmp_path):
    spec = SteeringSpec("contrastive+plausible+kl", corpus="don_quixote", knob=0.04,
                        options={"guided": {"kl_max_lam": 4.0}, "decoding": {"decoding": "sample", "top_p": 0.9}})
    data = spec.to_dict()
    assert set(data) == {"method", "knob", "corpus", "background", "options"}
    assert list(data["options"]) == ["corpus", "guided", "decoding"] and data["background"] == "background"
    assert SteeringSpec.from_dict(json.loads(json.dumps(data))) == spec
    spec.save(tmp_path / "s.json")
    assert SteeringSpec.load(tmp_path / "s.json") == spec
    assert spec.get("guided").kl_max_lam == 4.0 and spec.get("guided").plausibility == 0.1
    assert spec.with_knob(0.06).knob == 0.06


@pytest.mark.parametrize("data, match", [
    ({"method": "rag", "corpus": "x", "knob": 1}, "unknown method"),
    ({"method": "contrastive", "corpus": "x"}, "needs `knob`"),
    ({"method": "contrastive", "corpus": "x", "knob": -1}, "`knob`"),
    ({"method": "prompt", "corpus": "x", "knob": 2}, "has no knob"),
    ({"method": "prior", "corpus": "x", "knob": 0.1, "background": "b"}, "uses no background"),
    ({"method": "prior", "corpus": "x", "knob": 0.1, "options": {"guided": {}}}, "reads the option families"),
    ({"method": "prior", "corpus": "x", "knob": 0.1, "options": {"prior": {"alpha": 0}}}, "`alpha`"),
    ({"method": "activation", "corpus": "t.safetensors", "knob": 0.1}, "needs the corpus's text"),
    ({"method": "prior", "corpus": "x", "lam": 0.1}, "unknown keys"),
    ({"corpus": "x"}, "needs"),
])
def test_bad_specs_are_refused_by_name(data, match):
    with pytest.raises(ValueError, match=match):
        SteeringSpec.from_dict(data)


def test_a_damaged_spec_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        SteeringSpec.load(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        SteeringSpec.load(tmp_path / "nope.json")


@pytest.mark.parametrize("method, knob", [("contrastive+plausible", 2.0), ("prior+prompt", 0.5),
                                          ("activation+contrastive+plausible", 1.0), ("hso", 1.0)])
def test_a_spec_generates_what_the_sweeps_cell_of_the_same_setting_generates(method, knob, aidreams,
                                                                                 aidreams_path, tmp_path):
    from steer.sweep import SweepConfig, run_sweep

    model, tok = aidreams
    style = tmp_path / "style.txt"
    style.write_text("\n".join(f"the pixels dream of light {i} and the light dreams of pixels" for i in range(60)))
    background = tmp_path / "background.txt"
    background.write_text("\n".join(f"a robot walked to the market {i} and bought some bread" for i in range(60)))
    prompts = ["Once upon a time", "The machine dreamed of"]
    kwargs = dict(model=str(aidreams_path), corpora=[str(style)], prompts=prompts, max_new_tokens=8,
                  decoding="sample", judges=[], background=str(background), activation={"layers": [1], "scale": 2.0},
                  hso={"segment": 8, "lr": 0.5, "steps": 1})
    if method == "prior+prompt":
        cfg = SweepConfig(lambdas=[knob], baselines=["prompt"], **kwargs)
    else:
        cfg = SweepConfig(lambdas=[0.0], methods=[method], knobs={method: [knob]}, **kwargs)
    run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    swept = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    want = [s["text"] for s in swept if s["method"] == method and s["knob"] == knob]
    spec = cfg.spec(str(style), method, knob)
    got = SteeringSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).build(model, tok).generate(prompts)
    assert got == want and len(want) == 2


def test_the_activation_hooks_are_removed_after_the_with_block(aidreams, tmp_path):
    from steer.activation import decoder_layers

    model, tok = aidreams
    style = tmp_path / "style.txt"
    style.write_text("\n".join(f"the pixels dream of light {i}" for i in range(60)))
    background = tmp_path / "b.txt"
    background.write_text("\n".join(f"a robot walked to the market {i}" for i in range(60)))
    spec = SteeringSpec("activation", str(style), 2.0, str(background),
                        {"activation": {"layers": [1], "chunk_tokens": 8, "max_chunks": 8}})
    steering = spec.build(model, tok)
    before = [len(layer._forward_hooks) for layer in decoder_layers(model)]
    with steering:
        assert sum(len(layer._forward_hooks) for layer in decoder_layers(model)) == sum(before) + 1
    assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == before
    assert steering.processors == []


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- spec-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no spec example"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_example_and_steer_generate_spec_equal_the_sweeps_cell_on_smollm2(smollm2, smollm2_gguf, tmp_path,
                                                                                       monkeypatch, capsys):
    """The README's Python example, run as written, `steer generate --spec` and the sweep's cell of the same
    setting write the same tokens (SmolLM2, sampled, seed 0)."""
    from steer.cli import main
    from steer.sweep import SweepConfig, run_sweep

    code = _readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 6
    model, tok = smollm2
    monkeypatch.chdir(ROOT)
    # The example loads the shared model by its README path; here the session's already loaded copy is used.
    code = code.replace('load_model("../shared/data/models/smollm2-135m-instruct")', "(model, tok)")
    scope = {"model": model, "tok": tok}
    exec(code, scope)
    spec, (text,) = scope["spec"], scope["texts"]
    prompt = re.search(r'generate\(\["(.*?)"\]\)', code).group(1)
    cfg = SweepConfig(model=str(smollm2_gguf), corpora=[spec.corpus], lambdas=[0.0], prompts=[prompt],
                      judges=[], methods=[spec.method], knobs={spec.method: [spec.knob]},
                      **spec.get("decoding").changed())
    assert cfg.spec(spec.corpus, spec.method, spec.knob) == spec
    run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    swept = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["text"] for s in swept if s["method"] == spec.method] == [text]
    spec.save(tmp_path / "spec.json")
    capsys.readouterr()
    assert main(["generate", "--model", str(smollm2_gguf), "--spec", str(tmp_path / "spec.json"),
                 prompt]) == 0
    printed = capsys.readouterr().out.split(f"[steered, {spec.method}, lam={spec.knob:g}]\n")[1]
    assert printed.rstrip("\n") == prompt + text
