"""The sweep: files, columns, the lam = 0 baseline, resume, and bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from steer.sweep import COLUMNS, SweepConfig, builtin_prompts, parse_lambdas, run_sweep


def _config(aidreams_path, corpus_file, **kw):
    base = dict(model=str(aidreams_path), corpora=[str(corpus_file)], lambdas=[0.5, 2.0],
                prompts=["Once upon a time", "The machine dreamed"], max_new_tokens=8, judges=["diversity"])
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "style.txt"
    path.write_text("\n\n".join([f"the pixels dream of light {i} and the light dreams of pixels" for i in range(30)]))
    return path


def test_sweep_writes_every_file_and_resumes(aidreams, aidreams_path, corpus_file, tmp_path):
    model, tok = aidreams
    cfg = _config(aidreams_path, corpus_file, table_metrics=True)
    assert cfg.lambdas == [0.0, 0.5, 2.0]  # the baseline is always added
    out = tmp_path / "run"
    rows = run_sweep(cfg, out, model=model, tokenizer=tok)
    assert len(rows) == 3
    for name in ["results.csv", "comparisons.csv", "samples.jsonl", "config.json", "cells.jsonl"]:
        assert (out / name).exists(), name
    assert not (out / "results.json").exists()  # the rows once, in results.csv
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == COLUMNS
    base = rows[0]
    assert base["lam"] == 0 and base["js_div"] < 1e-9 and base["steer_table_ppl_rel"] == 0
    assert base["jaccard_vs_unsteered"] == 1.0
    assert rows[2]["js_div"] > rows[1]["js_div"] > 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
    plain = run_sweep(_config(aidreams_path, corpus_file), tmp_path / "plain", model=model, tokenizer=tok)
    assert all(r["steer_table_ppl"] != r["steer_table_ppl"] for r in plain)  # NaN: asked for only
    assert json.loads((out / "config.json").read_text())["versions"]["torch"]

    class NoModel:  # a resumed, finished sweep never touches the model
        def __getattr__(self, name):
            raise AssertionError("model used on resume")

    again = run_sweep(cfg, out, model=NoModel(), tokenizer=tok)
    assert [r["steer_table_ppl"] for r in again] == [r["steer_table_ppl"] for r in rows]


def test_interrupted_sweep_recomputes_only_missing_cells(aidreams, aidreams_path, corpus_file, tmp_path):
    model, tok = aidreams
    cfg = _config(aidreams_path, corpus_file, table_metrics=True)
    out = tmp_path / "run"
    full = run_sweep(cfg, out, model=model, tokenizer=tok)
    cells = (out / "cells.jsonl").read_text().splitlines()
    (out / "cells.jsonl").write_text("\n".join(cells[:2]) + "\n" + cells[2][:10])  # cut mid-line
    again = run_sweep(cfg, out, model=model, tokenizer=tok)
    assert [r["steer_table_ppl"] for r in again] == pytest.approx([r["steer_table_ppl"] for r in full])
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6


def test_other_config_in_same_folder_is_refused(aidreams, aidreams_path, corpus_file, tmp_path):
    model, tok = aidreams
    run_sweep(_config(aidreams_path, corpus_file), tmp_path / "run", model=model, tokenizer=tok)
    with pytest.raises(ValueError, match=r"holds a different sweep \(max_new_tokens: 8 there, 9 now\)"):
        run_sweep(_config(aidreams_path, corpus_file, max_new_tokens=9), tmp_path / "run",
                  model=model, tokenizer=tok)


def test_bad_settings():
    with pytest.raises(ValueError, match="`lambdas`"):
        parse_lambdas("0,a,1")
    with pytest.raises(ValueError, match="`lam`"):
        parse_lambdas("0,-1")
    with pytest.raises(ValueError, match="`corpora`"):
        SweepConfig(model="m", corpora=[])
    with pytest.raises(ValueError, match="`decoding`"):
        SweepConfig(model="m", corpora=["x"], decoding="nucleus")
    assert len(builtin_prompts()) >= 20


def test_sweep_with_baselines(aidreams, aidreams_path, corpus_file, tmp_path):
    model, tok = aidreams
    cfg = _config(aidreams_path, corpus_file, lambdas=[0.5], baselines=["prompt", "lora"],
                  lora=dict(steps=3, batch_size=2, window=16), style_prompt=dict(exemplars=1))
    rows = run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    methods = [(r["method"], r["lam"]) for r in rows]
    assert methods == [("prior", 0.0), ("prior", 0.5), ("prompt", 0.0), ("prior+prompt", 0.5), ("lora", 0.0)]
    by = {m: r for (m, _), r in zip(methods, rows, strict=True)}
    assert by["lora"]["train_s"] > 0 and by["lora"]["extra_mem_mb"] > 0
    assert by["prompt"]["extra_mem_mb"] == 0 and by["prior"]["extra_mem_mb"] > 0
    assert all(r["infer_ms_per_token"] > 0 for r in rows)
    meta = json.loads((tmp_path / "run" / "adapters" / "style.txt.json").read_text())
    assert meta["stopped_by"] in ("early_stopping", "step_budget") and meta["steps"] <= 3
    assert (Path(meta["adapter_path"]) / "adapter_config.json").exists()  # cached for reuse
    with pytest.raises(ValueError, match="`baselines`"):
        _config(aidreams_path, corpus_file, baselines=["rag"])


def test_js_has_no_relative_column_and_noise_baselines_give_nan(aidreams, aidreams_path, corpus_file, tmp_path):
    # Regression: js_div_rel was 3.2e14, a change relative to a lam = 0 value
    # that is floating-point noise.
    model, tok = aidreams
    rows = run_sweep(_config(aidreams_path, corpus_file), tmp_path / "run", model=model, tokenizer=tok)
    assert "js_div_rel" not in COLUMNS and all("js_div_rel" not in r for r in rows)
    from steer.metrics import relative_change

    assert math.isnan(relative_change(0.003, 1e-17)) and relative_change(3.0, 2.0) == 0.5


def test_steered_cells_are_warmed_up_before_timing(aidreams, aidreams_path, corpus_file, tmp_path, monkeypatch):
    # Regression: the first cell's ms/token included the prior's first-call
    # preparation (113 ms/token against 6.8 later).
    from steer import generation
    from steer.sweep import run

    model, tok = aidreams
    calls = []
    real = run.continue_prompts

    def recording(model, tokenizer, prompts, processors=(), config=None, prefix=None):
        calls.append((len(prompts), len(list(processors)), config.max_new_tokens))
        return real(model, tokenizer, prompts, processors, config, prefix=prefix)

    monkeypatch.setattr(run, "continue_prompts", recording)  # the unsteered reference
    monkeypatch.setattr(generation, "continue_prompts", recording)  # the cells (steer.methods.Setup)
    run_sweep(_config(aidreams_path, corpus_file, lambdas=[0.5]), tmp_path / "run", model=model, tokenizer=tok)
    # unsteered reference, then per cell: a short untimed warm-up with the cell's processors, then the cell
    assert calls == [(2, 0, 8), (1, 1, 2), (2, 1, 8), (1, 1, 2), (2, 1, 8)]


def test_methods_only_see_the_steer_split(aidreams, aidreams_path, tmp_path, monkeypatch):
    from steer import table_cache

    docs = [f"document number {i} says something about pixels" for i in range(100)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(docs))
    built = []
    real = table_cache.table_for
    monkeypatch.setattr(table_cache, "table_for", lambda corpus, *a, **k: built.append(corpus) or real(corpus, *a, **k))
    model, tok = aidreams
    cfg = _config(aidreams_path, path, lambdas=[0.5], baselines=["prompt"], style_prompt=dict(exemplars=3))
    run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    corpus = built[0]
    assert corpus.judge and not set(corpus.judge) & set(corpus.steer)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["splits"][str(path)]["n_judge_docs"] == len(corpus.judge)
    prefix = cfg.options()["prompt"].prefix(corpus.steer)
    assert not any(d in prefix for d in corpus.judge)


@pytest.mark.slow
def test_sweep_with_every_judge_writes_intervals_and_matched_table(tmp_path, shared_data):
    from steer.models import load_model

    model, tok = load_model(str(shared_data / "models" / "base-llama2tok"))
    cfg = SweepConfig(model="base-llama2tok", corpora=["kjv_new_testament"], lambdas=[0.5, 1.0],
                      prompts=builtin_prompts()[:24], max_new_tokens=24, decoding="sample", top_p=0.95,
                      baselines=["prompt"])
    rows = run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    for r in rows:
        assert 0 <= r["judge_hit_lo"] <= r["judge_hit"] <= r["judge_hit_hi"] <= 1
        assert r["heldout_style_ppl"] > 1 and 0 <= r["degenerate_rate"] <= 1 and 0 <= r["self_bleu"] <= 1
    judge = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert judge["classifier"]["heldout_accuracy"] >= 0.75 and "neutral" in judge["classifier"]["classes"]
    from steer.sweep import read_comparisons

    matched = read_comparisons(tmp_path / "run", "matched")
    assert [m["baseline"] for m in matched] == ["prompt", "prior+prompt", "prior+prompt"]
    assert list(matched[0]) == ["corpus", "baseline", "baseline_lam", "baseline_base_ppl", "baseline_hit",
                                "prior_hit_at_ppl", "prior_lam_low", "prior_lam_high", "diff", "diff_lo",
                                "diff_hi", "n_prompts"]
    assert (tmp_path / "run" / "pareto.png").exists()
    checked = read_comparisons(tmp_path / "run", "constraints")
    assert [(c["method"], float(c["knob"])) for c in checked] == [("prior", 0.5), ("prior", 1.0)]
    held = read_comparisons(tmp_path / "run", "holding")  # one row per holding cell and baseline cell
    assert len(held) == 3 * sum(c["holds"] == "True" for c in checked)


def test_too_little_judge_text_fails_before_the_model_loads(aidreams_path, tmp_path, monkeypatch):
    from steer.judges import JudgeError

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("steer.models.load_model", refuse)
    path = tmp_path / "small.txt"
    path.write_text("\n".join(f"a short line {i}" for i in range(50)))
    with pytest.raises(JudgeError, match="held-out perplexity needs"):
        run_sweep(_config(aidreams_path, path, judges=["heldout_ppl"]), tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_sweep_on_a_corpus_the_classifier_cannot_judge_runs_with_the_other_judges(aidreams, aidreams_path,
                                                                                      corpus_file, tmp_path):
    # The classifier refuses (this corpus is too small for it, and no accuracy would reach 1.01):
    # its columns stay empty, the diversity judge still scores, and judge.json says why and what to do.
    model, tok = aidreams
    cfg = _config(aidreams_path, corpus_file, lambdas=[0.5], judges=["classifier", "diversity"],
                  classifier=dict(min_accuracy=1.01, max_chunks=60))
    rows = run_sweep(cfg, tmp_path / "run", model=model, tokenizer=tok)
    assert len(rows) == 2 and all(r["judge_hit"] != r["judge_hit"] for r in rows)  # NaN: not reported
    assert all(0 <= r["degenerate_rate"] <= 1 for r in rows)
    judge = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert "style classifier" in judge["classifier"]["refused"] and judge["classifier"]["how_to_get_it"]


def test_a_fluency_judge_of_another_model_adds_cross_ppl(aidreams, aidreams_path, corpus_file, tmp_path, shared_data):
    """cross_ppl: every continuation scored under a second model (its own tokens), with intervals, per sample
    in samples.jsonl, bounded by Constraints(fluency="cross_ppl"); the steered model is refused as its judge."""
    import shutil

    from steer.matched import Constraints, constraint_table

    model, tok = aidreams
    judge = str(shared_data / "models" / "base-llama2tok")
    rows = run_sweep(_config(aidreams_path, corpus_file, fluency_judge=judge), tmp_path / "run", model=model,
                     tokenizer=tok)
    for r in rows:
        assert 1 < r["cross_ppl"] < math.inf and r["cross_ppl"] != r["base_ppl"]
        assert r["cross_ppl_lo"] <= r["cross_ppl"] <= r["cross_ppl_hi"]
    assert rows[0]["cross_ppl_rel"] == 0
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert all(s["cross_tokens"] > 0 and s["cross_nll"] > 0 for s in samples)
    rows = [dict(r, judge_hit=0.5, distinct_2=0.5) for r in rows]  # (the diversity judge alone gives no hit)
    table = constraint_table(rows, Constraints(fluency="cross_ppl", min_hit_gain=0))
    assert [c["ppl_ratio"] for c in table] == pytest.approx([r["cross_ppl"] / rows[0]["cross_ppl"] for r in rows[1:]])
    with pytest.raises(ValueError, match="fluency judge"):
        constraint_table([dict(r, cross_ppl=math.nan) for r in rows], Constraints(fluency="cross_ppl"))
    with pytest.raises(ValueError, match="`fluency_judge`"):
        _config(aidreams_path, corpus_file, fluency_judge=str(aidreams_path))
    twin = tmp_path / "twin"  # the steered model under another name
    shutil.copytree(aidreams_path, twin)
    with pytest.raises(ValueError, match="is the steered model itself"):
        run_sweep(_config(aidreams_path, corpus_file, fluency_judge=str(twin)), tmp_path / "r2", model=model,
                  tokenizer=tok)
