"""Style prompting: the prefix is deterministic, quotes the corpus, and validates its settings."""

from __future__ import annotations

import pytest

from steer.baselines.prompt import StylePrompt

DOCS = [f"document number {i} has a few words in it for quoting" for i in range(10)]


def test_prefix_holds_instruction_and_exemplars():
    sp = StylePrompt(instruction="Write like this.", exemplars=2, seed=3)
    prefix = sp.prefix(DOCS)
    assert prefix.startswith("Write like this.\n\n") and prefix.endswith("\n\n")
    assert sum(d in prefix for d in DOCS) == 2
    assert sp.prefix(DOCS) == prefix  # deterministic
    assert sp.apply(DOCS, ["Hello"]) == [prefix + "Hello"]


def test_long_exemplars_are_cut_at_a_word():
    sp = StylePrompt(instruction="", exemplars=1, max_chars=30)
    prefix = sp.prefix(["word " * 50])
    assert len(prefix) <= 30 + 6 and prefix.rstrip().endswith("...")


@pytest.mark.parametrize("kw, match", [(dict(exemplars=-1), "`exemplars`"),
                                       (dict(max_chars=5), "`max_chars`"),
                                       (dict(instruction="", exemplars=0), "instruction")])
def test_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        StylePrompt(**kw)
