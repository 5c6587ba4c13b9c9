"""Edit-span decoding: spans over the source instead of the whole target."""

from steer.edits.compact import CompactSpanGrammar, add_position_tokens, compact_source, format_compact, parse_compact
from steer.edits.format import NO_EDITS, SpanFormatError, format_spans, parse_spans
from steer.edits.spans import Span, apply_spans, extract_spans, normalize

__all__ = ["NO_EDITS", "CompactSpanGrammar", "Span", "SpanFormatError", "add_position_tokens", "apply_spans",
           "compact_source", "extract_spans", "format_compact", "format_spans", "normalize", "parse_compact",
           "parse_spans"]
