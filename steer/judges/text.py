"""Text as every judge sees it: one normalisation, one word tokenisation."""

from __future__ import annotations

import re

# Typography is not style: curly quotes, dashes and non-breaking spaces vary
# with the edition or the site a corpus came from, not with its author.
_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2013": " - ", "\u2014": " - ", "\u2015": " - ", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
})
_DASHES = re.compile(r"-{2,}")
_SPACE = re.compile(r"\s+")
_WORDS = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def normalise_text(text: str) -> str:
    """Quotes and dashes to ASCII, Gutenberg ``_italics_`` underscores dropped, whitespace collapsed.

    Example:
        >>> normalise_text("\u201cWell\u2014_no_,\u201d  he said\u2026 well--known")
        '"Well - no," he said... well - known'
    """
    text = _DASHES.sub(" - ", text.translate(_TRANSLATE).replace("_", ""))
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Word and punctuation tokens of normalised text (``don't`` stays one word)."""
    return _WORDS.findall(normalise_text(text))
