"""edit_generate end to end on a tiny model: every span output is valid and applied."""

from __future__ import annotations

import pytest

from steer.edits.generate import edit_generate
from steer.edits.prompts import make_prompt


def test_spans_and_rewrite_paths(aidreams):
    model, tok = aidreams
    sources = ["the cat sat on the mat", "a dog", "one two three four five six"]
    res, secs = edit_generate(model, tok, sources, mode="spans", max_new_tokens=24)
    assert len(res) == 3 and secs > 0
    for src, r in zip(sources, res, strict=True):
        if r.valid:
            assert all(0 <= s.start <= s.end <= len(src.split()) for s in r.spans)
        else:
            assert r.target == src
    res_b, _ = edit_generate(model, tok, sources[:2], mode="spans", max_new_tokens=16, num_beams=3)
    assert len(res_b) == 2
    rew, _ = edit_generate(model, tok, sources, mode="rewrite", max_new_tokens=8)
    assert all(r.spans is None for r in rew)


def test_bad_arguments(aidreams):
    model, tok = aidreams
    with pytest.raises(ValueError, match="`mode`"):
        edit_generate(model, tok, ["a"], mode="diff")
    with pytest.raises(ValueError, match="`sources`"):
        edit_generate(model, tok, "a b")
    with pytest.raises(ValueError, match="`task`"):
        make_prompt("a", task="translate")
