"""Span extraction and application: (start, end, replacement) edits over the source's units.

Word units (the default) are the whitespace-separated words of a text; a text is
compared after whitespace normalisation, ``normalize(t) = " ".join(t.split())``
(runs of spaces, tabs and newlines become one space, leading and trailing
whitespace goes). The round trip is exact on normalised text:

    apply_spans(src, extract_spans(src, tgt)) == normalize(tgt)

Token units use a tokenizer's ids (no special tokens); there the replacement of a
span is a tuple of ids and the round trip is exact on ids.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple


class Span(NamedTuple):
    """Replace units [start, end) of the source by ``replacement``.

    ``start == end`` inserts before unit ``start``; an empty replacement deletes.
    For word units the replacement is a string of words (single spaces); for
    token units a tuple of ids.
    """

    start: int
    end: int
    replacement: str | tuple


def normalize(text: str) -> str:
    """Collapse all whitespace to single spaces and strip the ends."""
    return " ".join(text.split())


def _units(text, unit: str, tokenizer):
    if unit == "word":
        if not isinstance(text, str):
            raise TypeError(f"word spans need text, got {type(text).__name__}")
        return text.split()
    if unit == "token":
        if tokenizer is None:
            raise ValueError("`tokenizer` is required for unit='token'")
        if isinstance(text, str):
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(text)
    raise ValueError(f"`unit` must be 'word' or 'token', got {unit!r}")


def extract_spans(source, target, unit: str = "word", tokenizer=None) -> list[Span]:
    """A minimal list of spans turning ``source`` into ``target``.

    The alignment is difflib's longest-matching-block alignment of the two unit
    sequences (junk heuristics off); every maximal run of non-matching units is
    one span, so adjacent edits are merged and spans never touch. An insertion
    is placed after the source units it repeats, never before them: inserting
    "the" into "after the discovery" doubles the "the" as ``after the [the]
    discovery``, not ``after [the] the discovery``, so no inserted text is an
    echo of the source text right after it (the form a span model writes when
    it means "no change here", which :func:`steer.edits.anchored.parse_anchored`
    can then drop without losing a real edit).

    Args:
        source, target: texts (or id sequences for unit="token").
        unit: "word" (whitespace words) or "token" (``tokenizer`` ids).

    Returns:
        Spans sorted by start, with start_i > end_{i-1} for every later span.

    Example:
        >>> extract_spans("He go to school yesterday", "He went to school")
        [Span(start=1, end=2, replacement='went'), Span(start=4, end=5, replacement='')]
    """
    a, b = _units(source, unit, tokenizer), _units(target, unit, tokenizer)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    spans: list[Span] = []
    i = j = 0
    for block in matcher.get_matching_blocks():  # (i, j, size), the last one is (len a, len b, 0)
        if block.a > i or block.b > j:
            rep = b[j : block.b]
            spans.append(Span(i, block.a, " ".join(rep) if unit == "word" else tuple(rep)))
        i, j = block.a + block.size, block.b + block.size
    return _insert_after_repeats(a, _merge_touching(spans, unit), unit)


def _insert_after_repeats(units: list, spans: list[Span], unit: str) -> list[Span]:
    """The same edits with every insertion moved past the source units it starts with.

    Inserting r_1..r_k before a unit equal to r_1 gives the same text as inserting r_2..r_k r_1
    after that unit: rotate and move on until the next unit differs from the inserted text's first
    unit. An insertion that reaches the next span joins it (they touch); the merged spans are
    looked at again, as a merged insertion may start with the unit after it.
    """
    moved = True
    while moved:
        moved = False
        out: list[Span] = []
        for k, (start, end, rep) in enumerate(spans):
            new = (rep.split() if unit == "word" else list(rep)) if start == end else []
            stop = min(len(units), spans[k + 1].start if k + 1 < len(spans) else len(units))
            while new and start < stop and units[start] == new[0]:
                new, start, moved = new[1:] + new[:1], start + 1, True
            if new:
                rep = " ".join(new) if unit == "word" else tuple(new)
                end = start
            out.append(Span(start, end, rep))
        spans = _merge_touching(out, unit)
    return spans


def _merge_touching(spans: list[Span], unit: str) -> list[Span]:
    out: list[Span] = []
    for s in spans:
        if out and s.start <= out[-1].end:
            prev = out.pop()
            rep = (" ".join(x for x in (prev.replacement, s.replacement) if x) if unit == "word"
                   else tuple(prev.replacement) + tuple(s.replacement))
            s = Span(prev.start, s.end, rep)
        out.append(s)
    return out


def check_spans(spans: Sequence, n_units: int) -> list[Span]:
    """Validate spans against a source of ``n_units`` units; raise ValueError naming the first bad one."""
    out = []
    prev_end = -1
    for k, s in enumerate(spans):
        try:
            start, end, rep = s
        except (TypeError, ValueError):
            raise ValueError(f"span {k} must be (start, end, replacement), got {s!r}") from None
        if not (isinstance(start, int) and isinstance(end, int)):
            raise ValueError(f"span {k} positions must be ints, got {s!r}")
        if not 0 <= start <= end <= n_units:
            raise ValueError(f"span {k} {start}..{end} is out of range for a source of {n_units} units")
        if start <= prev_end and k > 0:
            raise ValueError(f"span {k} starts at {start}, not after the previous span's end {prev_end}: "
                             "spans must be sorted, non-overlapping and not touching")
        prev_end = end
        out.append(Span(start, end, rep))
    return out


def apply_spans(source, spans: Sequence, unit: str = "word", tokenizer=None):
    """Rebuild the target: the source with every span's units replaced.

    Returns:
        The normalised target text for unit="word"; the id list for unit="token".

    Example:
        >>> apply_spans("He go to school yesterday", [(1, 2, "went"), (4, 5, "")])
        'He went to school'
    """
    units = _units(source, unit, tokenizer)
    spans = check_spans(spans, len(units))
    out: list = []
    pos = 0
    for s in spans:
        out.extend(units[pos : s.start])
        if unit == "word":
            out.extend(s.replacement.split() if isinstance(s.replacement, str) else list(s.replacement))
        else:
            out.extend(s.replacement)
        pos = s.end
    out.extend(units[pos:])
    return " ".join(out) if unit == "word" else out
