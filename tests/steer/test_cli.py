"""The command line: main job commands run, and bad input gives a clear message and exit code 2."""

from __future__ import annotations

from steer.cli import main


def test_generate_prints_both_continuations(aidreams_path, capsys):
    assert main(["generate", "--model", str(aidreams_path), "--corpus", "don_quixote",
                 "--lam", "0.5", "--max-new-tokens", "8", "Once upon a time"]) == 0
    out = capsys.readouterr().out
    assert "[unsteered]" in out and "[steered, lam=0.5]" in out


def test_build_table(tmp_path, shared_data, capsys):
    out = tmp_path / "t.safetensors"
    assert main(["build-table", "--corpus", "sherlock_holmes", "--tokenizer",
                 str(shared_data / "tokenizers" / "llama2" / "hf"), "--order", "2", "--out", str(out)]) == 0
    assert out.exists()


def test_sweep_small(aidreams_path, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Once upon a time\nThe machine\n")
    assert main(["sweep", "--model", str(aidreams_path), "--corpus", "kjv_new_testament", "--lambdas", "0,1",
                 "--prompts", str(prompts), "--max-new-tokens", "6", "--out", str(tmp_path / "run")]) == 0
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
