"""Spans and their format: exact round trips (hypothesis and every shared pair), clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steer.edits import (
    NO_EDITS,
    Span,
    SpanFormatError,
    apply_spans,
    extract_spans,
    format_spans,
    normalize,
    parse_spans,
)
from steer.edits.anchored import format_anchored, parse_anchored
from steer.edits.data import ALL_SETS, load_edit_set

WORDS = st.sampled_from(["the", "a", "cat", ";", "\\", "\\;", "naïve", "日本", "1", "2", "NONE", "é", "a;b"])
SPACE = st.sampled_from([" ", "  ", "\t", "\n", " \n "])


@st.composite
def texts(draw):
    words = draw(st.lists(WORDS, max_size=12))
    seps = [draw(SPACE) for _ in words]
    lead, trail = draw(st.sampled_from(["", " ", "\n"])), draw(st.sampled_from(["", " ", "\t"]))
    return lead + "".join(w + s for w, s in zip(words, seps, strict=True)).rstrip() + trail


@settings(max_examples=300, deadline=None)
@given(src=texts(), tgt=texts())
def test_word_round_trip_and_format_round_trip(src, tgt):
    spans = extract_spans(src, tgt)
    assert apply_spans(src, spans) == normalize(tgt)
    text = format_spans(spans)
    assert parse_spans(text, n_words=len(src.split())) == spans
    for a, b in zip(spans, spans[1:], strict=False):
        assert b.start > a.end  # merged: never touching
    if normalize(src) == normalize(tgt):
        assert spans == [] and text == NO_EDITS


def _echoes(source: str, spans) -> list:
    """The insertions whose words are the source words right after them."""
    words = source.split()
    return [s for s in spans if s.start == s.end and words[s.start : s.start + len(s.replacement.split())]
            == s.replacement.split()]


REPEATS = st.lists(st.sampled_from(["a", "b", "c"]), max_size=10).map(" ".join)  # words that repeat often


@settings(max_examples=500, deadline=None)
@given(src=REPEATS, tgt=REPEATS)
def test_no_insertion_echoes_the_source_after_it(src, tgt):
    """An insertion sits after the source words it repeats, so none is an echo, and dropping echoes
    from an anchored answer never drops a reference edit."""
    spans = extract_spans(src, tgt)
    assert apply_spans(src, spans) == normalize(tgt) and _echoes(src, spans) == []
    for a, b in zip(spans, spans[1:], strict=False):
        assert b.start > a.end
    written = format_anchored(src, spans)
    assert parse_anchored(written, src, drop_echoes=True) == parse_anchored(written, src)


def test_a_doubling_is_inserted_after_the_word_it_doubles():
    assert extract_spans("after the discovery", "after the the discovery") == [Span(2, 2, "the")]
    assert extract_spans("x y y z", "x y y y z") == [Span(3, 3, "y")]
    assert extract_spans("a b c", "a b c a b c") == [Span(3, 3, "a b c")]
    assert extract_spans("a b d", "a b a b d") == [Span(2, 2, "a b")]
    assert extract_spans("a b c", "a a b d") == [Span(1, 1, "a"), Span(2, 3, "d")]


@pytest.mark.slow
@pytest.mark.parametrize("name, split", ALL_SETS)
def test_no_reference_edit_is_an_echo(name, split, shared_data):
    pairs = load_edit_set(name, split, root=shared_data / "edits").pairs()
    assert not [(s, t) for s, t in pairs if _echoes(s, extract_spans(s, t))]


@settings(max_examples=100, deadline=None)
@given(src=texts(), tgt=texts())
def test_token_round_trip(src, tgt, llama2_tokenizer):
    spans = extract_spans(src, tgt, unit="token", tokenizer=llama2_tokenizer)
    want = llama2_tokenizer(tgt, add_special_tokens=False)["input_ids"]
    assert apply_spans(src, spans, unit="token", tokenizer=llama2_tokenizer) == want


def test_edge_cases():
    assert extract_spans("", "") == []
    assert extract_spans("", "new words") == [Span(0, 0, "new words")]
    assert extract_spans("old words", "") == [Span(0, 2, "")]
    assert extract_spans("b c", "a b c d") == [Span(0, 0, "a"), Span(2, 2, "d")]
    assert extract_spans("a a a", "a a") == [Span(2, 3, "")]
    assert apply_spans("x y", [(0, 0, "w"), (1, 2, "z q")]) == "w x z q"


@pytest.mark.slow
@pytest.mark.parametrize("name, split", ALL_SETS)
def test_round_trip_on_every_shared_pair(name, split, shared_data):
    edit_set = load_edit_set(name, split, root=shared_data / "edits")
    pairs = edit_set.pairs()
    assert len(pairs) > 100
    for src, ref in pairs:
        spans = extract_spans(src, ref)
        assert apply_spans(src, spans) == normalize(ref), (src, ref)
        assert parse_spans(format_spans(spans), len(src.split())) == spans


def test_token_round_trip_on_shared_pairs(shared_data, llama2_tokenizer):
    pairs = load_edit_set("jfleg", "dev", root=shared_data / "edits").pairs()[:400]
    for src, ref in pairs:
        spans = extract_spans(src, ref, unit="token", tokenizer=llama2_tokenizer)
        got = apply_spans(src, spans, unit="token", tokenizer=llama2_tokenizer)
        assert got == llama2_tokenizer(ref, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text, n, match", [
    ("", 3, "empty"), ("1", 3, "two non-negative integers"), ("a b c", 3, "integers"),
    ("2 1 x", 3, "out of range"), ("0 4", 3, "out of range"), ("2 3 ; 0 1", 3, "not after"),
    ("0 1 ; 1 2", 3, "not after"), ("0 1 x\\", 3, "escape"), ("-1 2", 3, "integers"),
])
def test_malformed_text(text, n, match):
    with pytest.raises(SpanFormatError, match=match):
        parse_spans(text, n_words=n)


def test_bad_spans_to_apply():
    with pytest.raises(ValueError, match="out of range"):
        apply_spans("a b", [(1, 3, "x")])
    with pytest.raises(ValueError, match="not after"):
        apply_spans("a b c", [(2, 3, "x"), (0, 1, "y")])
    with pytest.raises(ValueError, match="`unit`"):
        extract_spans("a", "b", unit="char")
    with pytest.raises(ValueError, match="`tokenizer`"):
        extract_spans("a", "b", unit="token")


def test_make_examples_and_length_report(llama2_tokenizer, tmp_path):
    from steer.edits.make_data import make_examples, read_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text("He go to school .\tHe goes to school .\nIt is fine .\tIt is fine .\n")
    pairs = read_pairs(path)
    examples, report = make_examples(pairs, "gec", llama2_tokenizer)
    assert examples[0]["completion"] == " 1 2 goes" and examples[1]["completion"] == " NONE"
    assert report.span_words == 4 and report.rewrite_words == 9 and 0 < report.token_ratio < 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one column\n")
    with pytest.raises(ValueError, match="source<TAB>target"):
        read_pairs(bad)
