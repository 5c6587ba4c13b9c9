"""Make-data files read for training, their span format, and what a saved edit model writes."""

from __future__ import annotations

import json

import pytest

from steer.edits.compact import POSITION
from steer.edits.trained import EDIT_OUTPUT_FILE, example_fields, read_examples, span_format, trained_output


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_examples_are_read_with_the_fields_their_target_needs(tmp_path):
    path = _write(tmp_path / "gec.jsonl", [{"prompt": "p", "completion": "c", "rewrite_prompt": "rp", "rewrite": "r"},
                                           "", {"prompt": "p2", "completion": "c2", "rewrite_prompt": "q",
                                                "rewrite": "s"}])
    assert [ex["completion"] for ex in read_examples(path, "spans")] == ["c", "c2"]  # blank lines skipped
    assert [ex["rewrite"] for ex in read_examples(path, "rewrite")] == ["r", "s"]
    assert example_fields("rewrite") == ("rewrite_prompt", "rewrite")
    with pytest.raises(ValueError, match="`target`"):
        example_fields("edits")


@pytest.mark.parametrize("rows, match", [(["{not json"], "line 1 .* is not JSON"),
                                         ([{"prompt": "p"}], "line 1 .* needs text fields 'prompt' and 'completion'"),
                                         ([{"prompt": "p", "completion": 3}], "needs text fields"),
                                         ([""], "holds no examples")])
def test_a_bad_file_is_refused_by_line_and_reason(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        read_examples(_write(tmp_path / "bad.jsonl", rows))


def test_a_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        read_examples(tmp_path / "nowhere.jsonl")


def test_the_span_format_comes_from_the_examples():
    assert span_format([{"prompt": "a", "format": "anchored"}]) == "anchored"
    assert span_format([{"prompt": f"x {POSITION.format(0)} y"}]) == "compact"  # files from before the field
    assert span_format([{"prompt": "plain"}]) == "text"
    with pytest.raises(ValueError, match="mix span formats"):
        span_format([{"prompt": "a", "format": "anchored"}, {"prompt": "b", "format": "text"}])


class _Vocab:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return self.vocab


def test_a_saved_model_says_what_it_writes(tmp_path):
    (tmp_path / EDIT_OUTPUT_FILE).write_text('{"target": "rewrite", "format": null}\n')
    assert trained_output(tmp_path, _Vocab({})) == ("rewrite", None)
    (tmp_path / EDIT_OUTPUT_FILE).unlink()
    (tmp_path / "edit_mode.json").write_text('{"mode": "compact"}\n')  # models saved before edit_output.json
    assert trained_output(tmp_path, _Vocab({})) == ("spans", "compact")
    (tmp_path / "edit_mode.json").unlink()
    assert trained_output(tmp_path, _Vocab({POSITION.format(0): 7})) == ("spans", "compact")
    assert trained_output(tmp_path, _Vocab({})) == ("spans", "text")
