"""The command line: main job commands run, and bad input gives a clear message and exit code 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from steer.cli import build_parser, main


def test_generate_prints_both_continuations(aidreams_path, capsys):
    assert main(["generate", "--model", str(aidreams_path), "--corpus", "don_quixote",
                 "--lam", "0.5", "--max-new-tokens", "8", "Once upon a time"]) == 0
    out = capsys.readouterr().out
    assert "[unsteered]" in out and "[steered, prior, lam=0.5]" in out


def _continuations(out: str) -> tuple[str, str]:
    """(unsteered, steered) text from `steer generate`'s output."""
    plain = out.split("[unsteered]\n", 1)[1].split("\n\n[steered", 1)[0]
    return plain, out.split("]\n", 2)[-1].strip()


@pytest.mark.parametrize("method", ["contrastive+plausible", "activation+contrastive+plausible", "activation"])
def test_generate_runs_a_registered_method_and_knob_zero_changes_nothing(method, aidreams_path, capsys):
    """Every method a sweep names runs through `steer generate`; at knob 0 (activation+contrastive+plausible:
    both its λ and, with --activation-scale 0, its vector) the steered text is the unsteered one."""
    common = ["generate", "--model", str(aidreams_path), "--corpus", "don_quixote", "--method", method,
              "--max-new-tokens", "8", "--decoding", "sample", "--seed", "3", "Once upon a time"]
    assert main(common + ["--knob", "0", "--activation-scale", "0"]) == 0
    plain, steered = _continuations(capsys.readouterr().out)
    assert plain == steered and plain.startswith("Once upon a time")
    assert main(common + ["--knob", "4"]) == 0
    out = capsys.readouterr().out
    assert f"[steered, {method}, " in out and _continuations(out)[0] == plain


def test_generate_prompting_puts_exemplars_before_the_prompt_but_shows_the_prompt(aidreams_path, capsys):
    common = ["generate", "--model", str(aidreams_path), "--corpus", "don_quixote", "--max-new-tokens", "6",
              "--decoding", "sample", "--seed", "1", "Once upon a time"]
    assert main(common + ["--method", "prompt"]) == 0
    out = capsys.readouterr().out
    assert "[steered, prompt]" in out and _continuations(out)[1].startswith("Once upon a time")
    # hso at 0 steps continues from the exemplars' plain cache: prompting, token for token
    assert main(common + ["--method", "hso", "--knob", "0"]) == 0
    hso = capsys.readouterr().out
    assert "[steered, hso, steps=0]" in hso and _continuations(hso)[1] == _continuations(out)[1]


@pytest.mark.parametrize("extra, message", [
    (["--method", "contrastive+plausible"], "needs --knob"),
    (["--method", "prompt", "--knob", "1"], "has no knob"),
    (["--method", "contrastive", "--knob", "-1"], "knob"),
    (["--method", "prior", "--knob", "nan"], "lam"),
])
def test_generate_refuses_bad_method_settings_before_loading_the_model(extra, message, capsys):
    assert main(["generate", "--model", "/no/such/model", "--corpus", "don_quixote", *extra, "x"]) == 2
    assert message in capsys.readouterr().err


def test_generate_offers_no_lora_it_would_have_to_train(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--corpus", "don_quixote", "--method", "lora", "x"])
    assert "invalid choice: 'lora'" in capsys.readouterr().err


def test_generate_refuses_a_text_method_on_a_saved_table(aidreams_path, tmp_path, capsys):
    table = tmp_path / "t.safetensors"
    assert main(["build-table", "--corpus", "sherlock_holmes", "--tokenizer", str(aidreams_path), "--order", "2",
                 "--out", str(table)]) == 0
    assert main(["generate", "--model", str(aidreams_path), "--table", str(table), "--order", "2",
                 "--method", "activation", "--knob", "0.1", "x"]) == 2
    assert "saved table" in capsys.readouterr().err


def test_build_table(tmp_path, shared_data, capsys):
    out = tmp_path / "t.safetensors"
    assert main(["build-table", "--corpus", "sherlock_holmes", "--tokenizer",
                 str(shared_data / "tokenizers" / "llama2" / "hf"), "--order", "2", "--out", str(out)]) == 0
    assert out.exists()


def test_bounded_build_table_equals_the_in_memory_one(tmp_path, shared_data, monkeypatch, capsys):
    """`--memory-gb`: the background books (25 files, 4.1M tokens) counted file by file in two workers,
    in many chunks and blocks, give the in-memory table array for array, judge split included."""
    from ngram import NGramTable, sharded
    from tests.ngram.test_merge import _assert_same

    monkeypatch.setattr(sharded, "MIN_CHUNK_TOKENS", 200_000)
    monkeypatch.setattr(sharded, "MIN_BLOCK_PAIRS", 400_000)
    tok = str(shared_data / "tokenizers" / "llama2" / "hf")
    mem, bounded = tmp_path / "mem.safetensors", tmp_path / "bounded.safetensors"
    assert main(["build-table", "--corpus", "background", "--tokenizer", tok, "--out", str(mem)]) == 0
    assert main(["build-table", "--corpus", "background", "--tokenizer", tok, "--out", str(bounded),
                 "--memory-gb", "0.001", "--workers", "2", "--spill-dir", str(tmp_path)]) == 0
    assert "4,142,732 tokens" in capsys.readouterr().out
    _assert_same(NGramTable.load(bounded), NGramTable.load(mem))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bounded.safetensors", "mem.safetensors"]


def test_sweep_small(aidreams_path, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Once upon a time\nThe machine\n")
    assert main(["sweep", "--model", str(aidreams_path), "--corpus", "kjv_new_testament", "--lambdas", "0,1",
                 "--prompts", str(prompts), "--max-new-tokens", "6", "--judges", "heldout_ppl,diversity",
                 "--out", str(tmp_path / "run")]) == 0
    assert "kjv_new_testament" in capsys.readouterr().out
    assert (tmp_path / "run" / "results.csv").exists()


def test_clear_errors(tmp_path, aidreams_path, capsys):
    assert main(["sweep", "--model", str(tmp_path / "nope"), "--corpus", "don_quixote",
                 "--out", str(tmp_path / "r")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["sweep", "--model", str(aidreams_path), "--corpus", "no_such_corpus",
                 "--out", str(tmp_path / "r2")]) == 2
    assert "unknown corpus" in capsys.readouterr().err
    assert main(["sweep", "--model", str(aidreams_path), "--corpus", "don_quixote", "--lambdas", "0,x",
                 "--out", str(tmp_path / "r3")]) == 2
    assert "`lambdas`" in capsys.readouterr().err


def test_train_attr(aidreams_path, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(["Once upon a time", "The machine", "Pixels dream", "A network",
                                  "In the code", "Silent data"]))
    out = tmp_path / "head.safetensors"
    assert main(["train-attr", "--model", str(aidreams_path), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "10", "--samples", "1", "--beams", "1,2", "--epochs", "1",
                 "--heldout", "0.34"]) == 0
    assert out.exists() and "AUC" in capsys.readouterr().out


def test_edits_make_data(tmp_path, shared_data, capsys):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("He go home .\tHe goes home .\nI am here .\tI am here .\n")
    out = tmp_path / "train.jsonl"
    assert main(["edits", "make-data", "--pairs", str(pairs), "--out", str(out), "--task", "gec",
                 "--tokenizer", str(shared_data / "tokenizers" / "llama2" / "hf")]) == 0
    assert len(out.read_text().splitlines()) == 2 and "% of the full rewrites" in capsys.readouterr().out
    assert main(["edits", "make-data", "--pairs", str(tmp_path / "none.tsv"), "--out", str(out)]) == 2


def test_edits_train_then_run(tmp_path, aidreams_path, capsys):
    """make-data (compact) -> train -> run: the trained model edits every line of a file."""
    pairs = tmp_path / "p.tsv"
    pairs.write_text("the cat sat on on the mat\tthe cat sat on the mat\n" * 2)
    data, model_dir = tmp_path / "train.jsonl", tmp_path / "model"
    assert main(["edits", "make-data", "--pairs", str(pairs), "--out", str(data), "--format", "compact"]) == 0
    assert main(["edits", "train", "--data", str(data), "--model", str(aidreams_path), "--out", str(model_dir),
                 "--steps", "40", "--batch", "2", "--lr", "3e-3", "--warmup", "0", "--heldout", str(data),
                 "--eval-every", "10", "--checkpoint-every", "10"]) == 0
    printed = capsys.readouterr().out
    assert "compact spans" in printed and "stopping on a held-out plateau" in printed
    assert re.search(r"held-out loss [0-9.]+ -> [0-9.]+, the best, at step 40 \(the last evaluation\)", printed)
    assert not (model_dir / "checkpoint").exists()
    sources, out = tmp_path / "src.txt", tmp_path / "out.txt"
    sources.write_text("the cat sat on on the mat\n\nthe cat sat on on the mat\n")
    assert main(["edits", "run", "--model", str(model_dir), "--sources", str(sources), "--out", str(out)]) == 0
    assert out.read_text() == "the cat sat on the mat\n\nthe cat sat on the mat\n"  # line for line
    assert "(compact): 2 changed" in capsys.readouterr().err
    assert main(["edits", "run", "--model", str(model_dir), "--sources", str(sources), "--out", str(out),
                 "--prompt-lookup", "3"]) == 0
    assert out.read_text() == "the cat sat on the mat\n\nthe cat sat on the mat\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert main(["edits", "train", "--data", str(bad), "--model", str(aidreams_path), "--out", str(model_dir)]) == 2
    assert "'completion'" in capsys.readouterr().err
    for weights in ("1", "1,x"):
        assert main(["edits", "train", "--data", str(data), "--data", str(data), "--weights", weights,
                     "--model", str(aidreams_path), "--out", str(model_dir)]) == 2
        assert "`--weights`" in capsys.readouterr().err


def test_edits_run_decodes_as_the_model_was_trained(tmp_path, aidreams_path, capsys):
    """An anchored model (no position tokens) is run as anchored without --mode; mixed formats are refused."""
    pairs = tmp_path / "p.tsv"
    pairs.write_text("the cat sat on on the mat\tthe cat sat on the mat\n" * 2)
    data, model_dir = tmp_path / "train.jsonl", tmp_path / "model"
    assert main(["edits", "make-data", "--pairs", str(pairs), "--out", str(data), "--format", "anchored"]) == 0
    assert main(["edits", "train", "--data", str(data), "--model", str(aidreams_path), "--out", str(model_dir),
                 "--steps", "40", "--batch", "2", "--lr", "3e-3", "--warmup", "0"]) == 0
    assert "(anchored spans)" in capsys.readouterr().out
    sources, out = tmp_path / "src.txt", tmp_path / "out.txt"
    sources.write_text("the cat sat on on the mat\n")
    for extra in ([], ["--no-grammar"]):  # this tokenizer is not byte-level BPE: no grammar either way
        assert main(["edits", "run", "--model", str(model_dir), "--sources", str(sources), "--out", str(out),
                     *extra]) == 0
        assert out.read_text() == "the cat sat on the mat\n"
        assert "(anchored): 1 changed" in capsys.readouterr().err
    # A model folder from before edit_output.json names its output in edit_mode.json: read as the same.
    (model_dir / "edit_output.json").rename(model_dir / "edit_mode.json")
    (model_dir / "edit_mode.json").write_text('{"mode": "anchored"}\n')
    assert main(["edits", "run", "--model", str(model_dir), "--sources", str(sources), "--out", str(out)]) == 0
    assert "(anchored): 1 changed" in capsys.readouterr().err
    assert main(["edits", "run", "--model", str(model_dir), "--sources", str(sources), "--out", str(out),
                 "--target", "rewrite", "--max-new-tokens", "4"]) == 0
    assert "sources (rewrite)" in capsys.readouterr().err
    other = tmp_path / "text.jsonl"
    assert main(["edits", "make-data", "--pairs", str(pairs), "--out", str(other)]) == 0
    assert main(["edits", "train", "--data", str(data), "--data", str(other), "--model", str(aidreams_path),
                 "--out", str(model_dir), "--steps", "1"]) == 2
    assert "mix span formats ['anchored', 'text']" in capsys.readouterr().err


# ------------------------------------------------------------ newcomer fixes


def _sweep_args(model, out, prompts, *extra):
    return ["sweep", "--model", str(model), "--corpus", "kjv_new_testament", "--lambdas", "0,0.5,1",
            "--prompts", str(prompts), "--max-new-tokens", "5", "--judges", "diversity", "--out", str(out), *extra]


@pytest.fixture
def two_prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("Once upon a time\nThe machine\n")
    return path


def _no_model_loads(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("steer.models.load_model", refuse)


def test_identical_sweep_command_resumes_with_default_prior_options(aidreams_path, tmp_path, two_prompts,
                                                                    capsys, monkeypatch):
    # Regression: default weights were stored as a tuple and compared with the
    # list read back from config.json, so a rerun said "holds a different sweep".
    out = tmp_path / "run"
    assert main(_sweep_args(aidreams_path, out, two_prompts)) == 0
    cells = (out / "cells.jsonl").read_text()
    capsys.readouterr()
    _no_model_loads(monkeypatch)  # a finished run is answered from its files
    assert main(_sweep_args(aidreams_path, out, two_prompts)) == 0
    assert (out / "cells.jsonl").read_text() == cells
    assert "kjv_new_testament" in capsys.readouterr().out


def test_ctrl_c_says_how_far_it_got_and_the_rerun_resumes(aidreams_path, tmp_path, two_prompts, capsys,
                                                          monkeypatch):
    from steer.sweep import run

    real_cell, calls = run.CellRunner.cell, []

    def interrupted_cell(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_cell(self, *a, **k)

    out = tmp_path / "run"
    monkeypatch.setattr(run.CellRunner, "cell", interrupted_cell)
    assert main(_sweep_args(aidreams_path, out, two_prompts)) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1/3 cells; rerun the same command to resume" in err
    assert "Traceback" not in err
    assert len((out / "cells.jsonl").read_text().splitlines()) == 1
    assert main(["report", str(out)]) == 0  # results of the finished cell, nothing run
    assert "1/3 cells: 2 still to run" in capsys.readouterr().out
    assert len((out / "results.csv").read_text().splitlines()) == 2
    monkeypatch.setattr(run.CellRunner, "cell", real_cell)
    assert main(_sweep_args(aidreams_path, out, two_prompts)) == 0
    assert len((out / "cells.jsonl").read_text().splitlines()) == 3
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_failed_start_does_not_block_the_corrected_command(aidreams_path, tmp_path, monkeypatch, capsys):
    # Regression: `steer demo` without a reachable model left config.json behind
    # and the corrected command was refused as "a different sweep".
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tmp_path / "no-model"), "--out", str(out)]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert not (out / "config.json").exists()
    from steer import sweep

    monkeypatch.setattr(sweep.SweepConfig, "cells", lambda self: [(c, "prior", 0.0) for c in self.corpora])
    monkeypatch.setattr(sweep, "builtin_prompts", lambda: ["Once upon a time"])
    assert main(["demo", "--model", str(aidreams_path), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["sweep"]["model"] == str(aidreams_path)


def test_other_settings_name_the_keys_that_differ(aidreams_path, tmp_path, two_prompts, capsys):
    out = tmp_path / "run"
    assert main(_sweep_args(aidreams_path, out, two_prompts)) == 0
    assert main(_sweep_args(aidreams_path, out, two_prompts, "--seed", "3", "--alpha", "0.5")) == 2
    err = capsys.readouterr().err
    assert "prior.alpha: 0.01 there, 0.5 now" in err and "seed: 0 there, 3 now" in err


@pytest.mark.slow
def test_second_process_on_the_same_out_is_refused_with_its_pid(aidreams_path, tmp_path, two_prompts, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from steer.runs import RunLock\n"
         f"with RunLock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_sweep_args(aidreams_path, out, two_prompts)) == 2
        assert f"is in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main(_sweep_args(aidreams_path, out, two_prompts)) == 0  # the lock died with its holder


def test_input_is_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
    _no_model_loads(monkeypatch)
    model = str(tmp_path / "unused-model")
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bin.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (tmp_path / "latin.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    cases = [
        (["--corpus", "no_such_corpus"], "unknown corpus"),
        (["--corpus", str(tmp_path / "empty.txt")], "has no text"),
        (["--corpus", str(tmp_path / "bin.txt")], "looks binary"),
        (["--corpus", str(tmp_path / "latin.txt")], "--encoding"),
        (["--corpus", "don_quixote", "--lambdas", "0,-1"], "`lam`"),
        (["--corpus", "don_quixote", "--lambdas", ""], "`lambdas`"),
        (["--corpus", "don_quixote", "--weights", "a,b"], "`weights`"),
    ]
    for extra, message in cases:  # the model loader refuses to run (above): every case fails before it
        assert main(["sweep", "--model", model, "--out", str(tmp_path / "r"), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert main(["generate", "--model", model, "--corpus", str(tmp_path / "empty.txt"), "x"]) == 2
    assert main(["generate", "--model", model, "--corpus", "don_quixote", "--lam", "nan", "x"]) == 2
    assert "`lam`" in capsys.readouterr().err
    assert not (tmp_path / "r" / "config.json").exists()


def test_hub_id_while_offline_fails_at_once_and_names_the_way_out(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["generate", "--model", "someone/not-cached-model", "--corpus", "kjv_new_testament", "hi"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "--model" in err and "STEER_MODEL" in err
    assert ".." not in err


def test_version(capsys):
    import steer

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"steer {steer.__version__}"


def test_every_option_has_help_a_default_and_every_command_an_example():
    parser = build_parser()

    def commands(p):
        for action in p._actions:
            if action.choices and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    yield name, sub
                    yield from commands(sub)

    seen = 0
    for name, sub in commands(parser):
        if name == "edits":
            continue
        seen += 1
        assert "steer " in (sub.epilog or ""), f"{name}: no example"
        text = sub.format_help()
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings}: no help"
            if action.default not in (None, False) and action.option_strings and action.dest != "help":
                assert f"(default: {action.default})" in " ".join(text.split()), f"{name} {action.dest}"
    assert seen == 11
    sweep_help = " ".join(dict(commands(parser))["sweep"].format_help().split())
    assert "don_quixote, cnn_highlights" in sweep_help


def test_build_table_reports_and_its_table_drives_generate_and_sweep(aidreams_path, tmp_path, two_prompts, capsys):
    table = tmp_path / "kjv.safetensors"
    assert main(["build-table", "--corpus", "kjv_new_testament", "--tokenizer", str(aidreams_path),
                 "--out", str(table)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {table}" in out and "MiB" in out and "built in" in out and "n-gram types per order: 1:" in out
    assert main(["generate", "--model", str(aidreams_path), "--table", str(table), "--lam", "1",
                 "--max-new-tokens", "5", "Once upon a time"]) == 0
    assert "[steered, prior, lam=1]" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["sweep", "--model", str(aidreams_path), "--corpus", str(table), "--lambdas", "0,1",
                 "--prompts", str(two_prompts), "--max-new-tokens", "4", "--judges", "", "--out", str(run)]) == 0
    assert (run / "results.csv").read_text().count("kjv.safetensors") == 2
    assert main(["generate", "--model", str(aidreams_path), "--table", str(tmp_path / "none.safetensors"),
                 "x"]) == 2
    assert main(["generate", "--model", str(aidreams_path), "--table", str(table), "--corpus", "x", "x"]) == 2
    assert "exactly one of --corpus" in capsys.readouterr().err


@pytest.mark.parametrize("pairs, task, n, note", [
    ("jfleg/dev", "gec", 3016, "754 sources x 4 references"),
    ("asset/asset.test.orig", "simplify", 3590, "x 10 references"),
    ("turkcorpus/tune.8turkers.tok.norm", "simplify", 16000, "2000 sources x 8 references"),
    ("mrpc/msr_paraphrase_test.txt", "paraphrase", 1147, "578 non-paraphrases skipped"),
])
def test_make_data_accepts_the_shipped_edit_sets(shared_data, tmp_path, capsys, pairs, task, n, note):
    out = tmp_path / "train.jsonl"
    assert main(["edits", "make-data", "--pairs", str(shared_data / "edits" / pairs), "--out", str(out),
                 "--task", task]) == 0
    printed = capsys.readouterr().out
    assert len(out.read_text().splitlines()) == n and note in printed
    assert "a span target lists only the edits" in printed


def test_train_attr_with_one_class_held_out_warns_and_prints_labels(aidreams_path, tmp_path, capsys, monkeypatch):
    import torch

    from steer.conditional import train

    report = {"n_examples": 40, "degenerate_rate_by_decoding": {"sample": 0.0, "beam1": 0.0},
              **train.heldout_report(torch.tensor([1.0, 2.0, -0.5]), torch.ones(3))}
    assert report["heldout_auc"] is None and "all of one class" in report["heldout_warning"]

    class Head:
        def save(self, *a, **k):
            pass

    monkeypatch.setattr(train, "train_attribute_model", lambda *a, **k: (Head(), report))
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    assert main(["train-attr", "--model", str(aidreams_path), "--prompts", str(prompts),
                 "--out", str(tmp_path / "h.safetensors")]) == 0
    out, err = capsys.readouterr()
    assert "nan" not in out.lower() and "AUC undefined" in out and "3 not degenerate, 0 degenerate" in out
    assert "accuracy 0.667" in out and "warning: the held-out prefixes are all of one class" in err


def test_heldout_report_on_two_classes():
    import torch

    from steer.conditional.train import heldout_report

    r = heldout_report(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert r["heldout_auc"] == 1.0 and r["heldout_accuracy"] == 1.0 and "few" not in r.get("heldout_warning", "few")
    assert "rarer class" in r["heldout_warning"]


def test_sweep_variant_options_reach_the_config(monkeypatch):
    from steer.cli import sweep

    seen = {}
    monkeypatch.setattr(sweep, "_run_sweep", lambda config, out: seen.update(config=config) or 0)
    assert main(["sweep", "--corpus", "don_quixote", "--out", "runs/x", "--judges", "", "--method",
                 "contrastive+plausible", "--plausibility", "0.02", "--clip", "2", "--centre", "--mask",
                 "--temper", "--fresh", "2"]) == 0
    assert seen["config"].guided.changed() == {"plausibility": 0.02, "clip": 2.0, "centre": True, "mask": True,
                                               "temper": True, "fresh": 2}
    assert main(["sweep", "--corpus", "don_quixote", "--out", "runs/x", "--judges", ""]) == 0
    assert seen["config"].guided.changed() == {}


def test_sweep_output_says_where_each_method_holds_the_constraints(tmp_path, capsys):
    import csv

    from steer.cli.sweep import _print_holding
    from steer.matched import CONSTRAINT_COLUMNS

    _print_holding(tmp_path)  # a run without the file (a judge missing) prints nothing
    assert capsys.readouterr().out == ""
    with open(tmp_path / "constraints.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CONSTRAINT_COLUMNS)
        w.writeheader()
        for knob, holds in [(1, True), (2, True), (4, False)]:
            w.writerow({"corpus": "c", "method": "v", "knob": knob, "holds": holds, "failed": "" if holds else "ppl"})
        w.writerow({"corpus": "c", "method": "prior", "knob": 0.5, "holds": False, "failed": "hit"})
    _print_holding(tmp_path)
    out = capsys.readouterr().out
    assert "hit >= unsteered + 0.3, base_ppl <= 1.1x" in out
    assert "c v: holds over knob 1-2 (2x wide)" in out and "c prior: holds nowhere" in out


def test_no_cli_or_sweep_function_is_over_80_lines():
    """A command's parser and a sweep step stay readable at a glance."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "steer"
    long = []
    for path in sorted([*(root / "cli").glob("*.py"), *(root / "sweep").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
