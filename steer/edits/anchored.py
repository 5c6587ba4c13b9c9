"""Text-anchored spans: each edit names the source words it replaces, not their positions.

One edit a line, the old words, ``->``, the new words::

     go -> went                     replace "go" by "went"
     yesterday ->                   delete "yesterday"
     to -> to the                   insert "the" after "to"

The prompt is the plain source, as for a full rewrite: the model points at a
place by copying its words, the skill a rewrite uses, instead of counting
positions. No edits is the empty answer.

Edits apply in order; each one's old words are looked up at their first
occurrence after the previous edit's old words. :func:`format_anchored` writes
each span with as few words as make that lookup land on the span: the span's
own words (an insertion borrows the word before it; one at the very start has
no old words), grown to the left until their first occurrence from the cursor
is the span itself. Old words longer than four are written as their first and
last words around ``...`` when that is shorter (``of a computer ... timers ->``
deletes everything from "of a computer" to "timers"), the last words looked up
at their first occurrence after the first ones.
The spans are those of :mod:`steer.edits.spans`, so the round trip is exact::

    apply_spans(src, parse_anchored(format_anchored(src, extract_spans(src, tgt)), src)) == normalize(tgt)

Every line starts with a space, so a copied word is the same token as in the
source ("go" after a space) for a byte-level BPE tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

from steer.edits.format import SpanFormatError
from steer.edits.spans import Span, _merge_touching, check_spans

ARROW = "->"
ELLIPSIS = "..."
_ESCAPE = "\\"
# Old words longer than this are written as their first and last words around the ellipsis when
# that is shorter and still lands on the same words.
_FULL_OLD = 4


def _escape(word: str, reserved: tuple[str, ...]) -> str:
    # A word that is a marker of the format, or starts with the escape, gets one escape in front.
    return _ESCAPE + word if word in reserved or word.startswith(_ESCAPE) else word


def _unescape(word: str) -> str:
    return word[1:] if word.startswith(_ESCAPE) else word


def _find(words: list[str], old: list[str], cursor: int) -> int:
    """The first p >= cursor with words[p : p + len(old)] == old, or -1 (an empty ``old``: the cursor)."""
    k = len(old)
    for p in range(cursor, len(words) - k + 1):
        if words[p : p + k] == old:
            return p
    return -1


def _old_side(words: list[str], a: int, b: int, cursor: int) -> str:
    """words[a:b] written as the old side of a line, as "first ... last" when that is shorter."""
    def written(ws):
        return " ".join(_escape(w, (ARROW, ELLIPSIS)) for w in ws)

    if b - a <= _FULL_OLD:
        return written(words[a:b])
    # The fewest first words whose first occurrence from the cursor is at a (all of them qualify),
    # then the fewest last words whose first occurrence after those is at b - j.
    i = next(i for i in range(1, b - a + 1) if _find(words, words[a : a + i], cursor) == a)
    j = next(j for j in range(1, b - a - i + 1) if _find(words, words[b - j : b], a + i) == b - j) if i < b - a else 0
    if i + j + 1 < b - a:
        return f"{written(words[a : a + i])} {ELLIPSIS} {written(words[b - j : b])}"
    return written(words[a:b])


def format_anchored(source: str, spans: Sequence) -> str:
    """Write word spans over ``source`` as anchored edits (the empty string: no edits).

    Example:
        >>> print(format_anchored("He go to school yesterday", [(1, 2, "went"), (4, 5, "")]))
         go -> went
         yesterday ->
    """
    words = source.split()
    spans = check_spans(spans, len(words))
    lines, cursor = [], 0
    for start, end, rep in spans:
        new = str(rep).split()
        a, b = start, end
        if a == b and a > cursor:  # an insertion after a word: that word is its anchor
            a -= 1
            new = [words[a], *new]
        # (An insertion at the cursor, which only the first span can be at, needs no old words.)
        # Grow the old words to the left until their first occurrence from the cursor is this span;
        # by a == cursor at the latest it is, and a - 1 >= cursor until then (spans never touch).
        while a < b and _find(words, words[a:b], cursor) < a:
            a -= 1
            new = [words[a], *new]
        old = _old_side(words, a, b, cursor)
        lines.append(" " + " ".join(x for x in (old, ARROW, " ".join(_escape(w, (ARROW,)) for w in new)) if x))
        cursor = b
    return "\n".join(lines)


def _locate(line: str, k: int, words: list[str], cursor: int) -> tuple[int, int, list[str]]:
    """One edit line: where its old words are in ``words`` (from ``cursor``) and its new words."""
    fields = line.split()
    arrows = [i for i, w in enumerate(fields) if w == ARROW]
    if len(arrows) != 1:
        raise SpanFormatError(f"edit {k} ({line.strip()!r}) must hold exactly one {ARROW!r}, got {len(arrows)}")
    written = fields[: arrows[0]]
    new = [_unescape(w) for w in fields[arrows[0] + 1 :]]
    cut = [i for i, w in enumerate(written) if w == ELLIPSIS]
    if len(cut) > 1 or (cut and (cut[0] == 0 or cut[0] == len(written) - 1)):
        raise SpanFormatError(f"edit {k} ({line.strip()!r}): {ELLIPSIS!r} may stand once on the old side, "
                              "between words")
    first = [_unescape(w) for w in written[: cut[0] if cut else len(written)]]
    p = _find(words, first, cursor)
    end = p + len(first)
    if cut and p >= 0:  # "first ... last": the last words' first occurrence after the first words
        last = [_unescape(w) for w in written[cut[0] + 1 :]]
        q = _find(words, last, end)
        end = q + len(last) if q >= 0 else -1
    if p < 0 or end < 0:
        raise SpanFormatError(f"edit {k}: {' '.join(written)!r} does not occur in the source after word {cursor}")
    return p, end, new


def parse_anchored(text: str, source: str, skip_bad: bool = False, drop_echoes: bool = False) -> list[Span]:
    """Read anchored edits back into minimal word spans over ``source`` (blank lines are skipped).

    Args:
        skip_bad: drop an edit line that does not parse or whose old words are not in the source
            after the previous edit's, and keep the others (the cursor stays where it was), instead
            of raising: a decoder's choice to keep the edits it can place.
        drop_echoes: drop an edit whose new words are its old words followed by the source words
            that come right after them (" has -> has been" where the source says "has been"): it
            inserts words that are already there. A reference edit is rarely one (a real doubling:
            9 answers with one in the 130,543 edit lines of the seven shared sets); a trained model
            writes them when it means "no change here".

    Raises:
        SpanFormatError: (unless ``skip_bad``) a line without exactly one ``->``, or old words that do
            not occur in the source after the previous edit's.

    Example:
        >>> parse_anchored(" go -> went\\n yesterday ->", "He go to school yesterday")
        [Span(start=1, end=2, replacement='went'), Span(start=4, end=5, replacement='')]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a string, got {type(text).__name__}")
    if not isinstance(skip_bad, bool):
        raise TypeError(f"`skip_bad` must be a bool, got {skip_bad!r}")
    if not isinstance(drop_echoes, bool):
        raise TypeError(f"`drop_echoes` must be a bool, got {drop_echoes!r}")
    words = source.split()
    spans: list[Span] = []
    cursor = 0
    for k, line in enumerate(x for x in text.split("\n") if x.strip()):
        try:
            p, end, new = _locate(line, k, words, cursor)
        except SpanFormatError:
            if skip_bad:
                continue
            raise
        old, cursor = words[p:end], end
        extra = len(new) - len(old)
        if drop_echoes and extra > 0 and new[: len(old)] == old and new[len(old) :] == words[end : end + extra]:
            continue
        # The minimal span: drop the words the old and new sides share at either end.
        head = 0
        while head < min(len(old), len(new)) and old[head] == new[head]:
            head += 1
        tail = 0
        while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
            tail += 1
        if len(old) - head - tail or len(new) - head - tail:
            spans.append(Span(p + head, cursor - tail, " ".join(new[head : len(new) - tail])))
    # Trimmed spans never overlap but may touch (one edit's words right after another's): merge those.
    return check_spans(_merge_touching(spans, "word"), len(words))
