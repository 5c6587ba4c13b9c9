"""Edit-span decoding: spans over the source instead of the whole target."""

from steer.edits.format import NO_EDITS, SpanFormatError, format_spans, parse_spans
from steer.edits.spans import Span, apply_spans, extract_spans, normalize

__all__ = ["NO_EDITS", "Span", "SpanFormatError", "apply_spans", "extract_spans", "format_spans",
           "normalize", "parse_spans"]
