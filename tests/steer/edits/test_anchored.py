"""Text-anchored spans: exact round trips, the shortest anchors, errors that name the edit."""

from __future__ import annotations

import copy
import random

import pytest

from steer.edits.anchored import format_anchored, parse_anchored
from steer.edits.data import load_edit_set
from steer.edits.finetune import finetune
from steer.edits.format import SpanFormatError
from steer.edits.generate import edit_generate
from steer.edits.make_data import make_examples
from steer.edits.prompts import make_prompt
from steer.edits.spans import Span, apply_spans, extract_spans, normalize

ALL_SETS = [("jfleg", "dev"), ("jfleg", "test"), ("asset", "valid"), ("asset", "test"),
            ("turkcorpus", "tune"), ("mrpc", "train"), ("mrpc", "test")]


def _round_trip(src: str, tgt: str) -> str:
    return apply_spans(src, parse_anchored(format_anchored(src, extract_spans(src, tgt)), src))


def test_examples():
    src = "He go to school yesterday"
    assert format_anchored(src, [(1, 2, "went"), (4, 5, "")]) == " go -> went\n yesterday ->"
    assert format_anchored(src, []) == ""
    assert parse_anchored("", src) == []
    # An insertion borrows the word before it; one at the start has no old words at all.
    assert format_anchored(src, [(0, 0, "Then"), (3, 3, "the")]) == " -> Then\n to -> to the"
    assert _round_trip(src, "Then He go to the school yesterday") == "Then He go to the school yesterday"


def test_anchors_grow_left_until_the_first_occurrence_is_the_span():
    src = "the cat saw the dog and the bird"
    # "the" at word 6 first occurs at 0, "and the" only at 5.
    assert format_anchored(src, [(6, 7, "a")]) == " and the -> and a"
    assert parse_anchored(" and the -> and a", src) == [Span(6, 7, "a")]
    # After an edit the lookup starts past its old words: the second "the" is the next one.
    assert parse_anchored(" the -> a\n the -> a", src) == [Span(0, 1, "a"), Span(3, 4, "a")]
    assert format_anchored(src, [(0, 1, "a"), (3, 4, "a")]) == " the -> a\n the -> a"


def test_long_old_words_are_shortened_around_an_ellipsis():
    src = "he said that the plan , which nobody liked , would work"
    spans = [(5, 10, "")]  # delete ", which nobody liked ,"
    text = format_anchored(src, spans)
    assert text == " , ... , ->"
    assert apply_spans(src, parse_anchored(text, src)) == "he said that the plan would work"
    # Short ones are written whole.
    assert format_anchored(src, [(7, 9, "")]) == " nobody liked ->"


@pytest.mark.parametrize("src, tgt", [
    ("a -> b ... c \\d", "a b ... c \\d ->"),
    ("... ... x ... y", "... x y ..."),
    ("-> -> ->", "-> x ->"),
    ("", "a new sentence"),
    ("old words", ""),
    ("x x x x x x x x", "x x y x x x x x z"),
])
def test_markers_in_the_text_are_escaped(src, tgt):
    assert _round_trip(src, tgt) == normalize(tgt)


def test_random_round_trips_over_a_small_vocabulary():
    """Few distinct words, so that anchors must grow and the ellipsis must find the right ends."""
    rng = random.Random(0)
    vocab = ["a", "b", "c", "the", "...", "->", "\\x"]
    for _ in range(3000):
        src = " ".join(rng.choice(vocab) for _ in range(rng.randrange(0, 14)))
        words = src.split()
        for _ in range(rng.randrange(0, 4)):
            i = rng.randrange(len(words) + 1)
            op = rng.randrange(3)
            if op == 0:
                words.insert(i, rng.choice(vocab))
            elif words and i < len(words):
                if op == 1:
                    del words[i : i + rng.randrange(1, 7)]
                else:
                    words[i] = rng.choice(vocab)
        tgt = " ".join(words)
        assert _round_trip(src, tgt) == normalize(tgt), (src, tgt)


@pytest.mark.slow
@pytest.mark.parametrize("name, split", ALL_SETS)
def test_round_trip_on_every_shared_pair(name, split, shared_data):
    pairs = load_edit_set(name, split, root=shared_data / "edits").pairs()
    assert len(pairs) > 100
    echoes = 0
    for src, ref in pairs:
        spans = extract_spans(src, ref)
        text = format_anchored(src, spans)
        assert apply_spans(src, parse_anchored(text, src)) == normalize(ref), (src, ref)
        # Each line quotes at most its span, the anchors a lookup needs and an ellipsis' worth of words.
        assert text.count("\n") == max(len(spans) - 1, 0)
        echoes += parse_anchored(text, src, drop_echoes=True) != parse_anchored(text, src)
    assert echoes <= 6  # a reference edit that doubles the words after it is rare (0-6 a set)


@pytest.mark.parametrize("text, match", [
    (" go went", "exactly one '->'"),
    (" go -> -> went", "exactly one '->'"),
    (" went -> gone", "'went' does not occur"),
    (" school -> home\n go -> went", "'go' does not occur in the source after word 4"),
    (" ... school -> x", "between words"),
    (" He ... go ... school -> x", "between words"),
    (" school ... He -> x", "'school ... He' does not occur"),
])
def test_malformed_edits_are_refused_by_name(text, match):
    with pytest.raises(SpanFormatError, match=match):
        parse_anchored(text, "He go to school yesterday")
    with pytest.raises(TypeError, match="`text`"):
        parse_anchored(None, "a")


def test_make_examples_reads_the_plain_source(llama2_tokenizer):
    pairs = [("He go to school yesterday", "He went to school"), ("fine as it is", "fine as it is")]
    examples, report = make_examples(pairs, "gec", llama2_tokenizer, fmt="anchored")
    assert examples[0]["prompt"] == make_prompt(pairs[0][0], "gec", "rewrite").replace("Rewrite:", "Edits:")
    assert examples[0]["completion"] == " go -> went\n yesterday ->"
    assert examples[1]["completion"] == ""  # no edits: the answer is EOS alone
    assert report.span_tokens > 0 and report.rewrite_tokens > 0


def test_generate_keeps_the_source_when_an_answer_does_not_parse(aidreams):
    model, tok = aidreams
    sources = ["the cat sat on the mat", "a dog", "one two three four five six"]
    res, secs = edit_generate(model, tok, sources, fmt="anchored", max_new_tokens=12)
    assert len(res) == 3 and secs > 0
    for src, r in zip(sources, res, strict=True):
        if r.valid:
            assert r.target == apply_spans(src, r.spans)
        else:
            assert r.target == normalize(src) and r.spans is None


def test_finetune_teaches_an_anchored_edit(aidreams):
    """A model trained on one edit writes it by quoting the word, and the edit applies."""
    model, tok = copy.deepcopy(aidreams[0]), aidreams[1]
    pairs = [("the cat sat on on the mat", "the cat sat on the mat")]
    examples, _ = make_examples(pairs, "gec", tok, fmt="anchored")
    losses = finetune(model, tok, examples, steps=40, batch_size=2, lr=3e-3, warmup=0).losses
    assert losses[-1] < losses[0] / 4
    (res,), _ = edit_generate(model, tok, [pairs[0][0]], task="gec", fmt="anchored", max_new_tokens=12)
    assert res.valid and res.target == pairs[0][1], res.raw


def test_skip_bad_keeps_the_edits_that_place():
    src = "He go to school yesterday"
    text = " go -> went\n tomorrow -> today\n -> -> x\n yesterday ->"
    with pytest.raises(SpanFormatError, match="'tomorrow' does not occur"):
        parse_anchored(text, src)
    # The bad lines are dropped and the cursor stays put: "yesterday" is still found.
    assert parse_anchored(text, src, skip_bad=True) == [Span(1, 2, "went"), Span(4, 5, "")]
    assert parse_anchored(" zz -> x", src, skip_bad=True) == []
    with pytest.raises(TypeError, match="`skip_bad`"):
        parse_anchored(text, src, skip_bad="yes")


def test_drop_echoes_drops_only_insertions_of_words_already_there():
    src = "New technology has been introduced to the society"
    text = " has -> has been\n to -> to the\n society -> world"
    assert apply_spans(src, parse_anchored(text, src)) == "New technology has been been introduced to the the world"
    kept = parse_anchored(text, src, drop_echoes=True)
    assert apply_spans(src, kept) == "New technology has been introduced to the world"
    # A real insertion (the words after the anchor differ) stays.
    assert parse_anchored(" has -> has not", src, drop_echoes=True) == [Span(3, 3, "not")]
    with pytest.raises(TypeError, match="drop_echoes"):
        parse_anchored(text, src, drop_echoes=1)
