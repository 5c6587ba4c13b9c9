"""A compact, unambiguous text format for word-level span lists.

    NONE                              no edits
    1 2 went ; 4 5                    replace word 1 by "went"; delete word 4
    0 0 Yesterday ; 3 3 the           insert "Yesterday" at the start; insert "the" before word 3

Spans are separated by " ; ". Each is ``start end`` optionally followed by a
space and the replacement words. Inside a replacement, a literal ";" is written
"\\;" and a literal backslash "\\\\". Positions are word indices of the
whitespace-split source, end exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

from steer.edits.spans import Span, check_spans

NO_EDITS = "NONE"


class SpanFormatError(ValueError):
    """Text that is not a valid span list (for its source)."""


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;")


def format_spans(spans: Sequence) -> str:
    """Serialise word-level spans.

    Example:
        >>> format_spans([(1, 2, "went"), (4, 5, "")])
        '1 2 went ; 4 5'
        >>> format_spans([])
        'NONE'
    """
    if not spans:
        return NO_EDITS
    parts = []
    for s in spans:
        start, end, rep = s
        words = " ".join(_escape(w) for w in str(rep).split())
        parts.append(f"{start} {end}" + (f" {words}" if words else ""))
    return " ; ".join(parts)


def _split_unescaped(text: str) -> list[str]:
    """Split on ';' that is not escaped; unescape the pieces' '\\;' and '\\\\'."""
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\;":
                raise SpanFormatError(f"bad escape at character {i} of {text!r}")
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == ";":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_spans(text: str, n_words: int | None = None) -> list[Span]:
    """Parse the format back into spans, checking them against a source of ``n_words`` words.

    Raises:
        SpanFormatError: malformed text, or spans out of range, overlapping, touching or unsorted.

    Example:
        >>> parse_spans("1 2 went ; 4 5", n_words=5)
        [Span(start=1, end=2, replacement='went'), Span(start=4, end=5, replacement='')]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a string, got {type(text).__name__}")
    body = text.strip()
    if body == NO_EDITS:
        return []
    if not body:
        raise SpanFormatError(f"empty span list; write {NO_EDITS!r} for no edits")
    spans = []
    for k, part in enumerate(_split_unescaped(body)):
        fields = part.split()
        if len(fields) < 2 or not fields[0].isdigit() or not fields[1].isdigit():
            raise SpanFormatError(f"span {k} ({part.strip()!r}) must start with two non-negative integers")
        spans.append(Span(int(fields[0]), int(fields[1]), " ".join(fields[2:])))
    return checked(spans, n_words)


def checked(spans: list[Span], n_words: int | None) -> list[Span]:
    """``spans`` checked against a source of ``n_words`` words (None: unchecked), as SpanFormatError."""
    if n_words is None:
        return spans
    try:
        return check_spans(spans, n_words)
    except ValueError as err:
        raise SpanFormatError(str(err)) from None
