"""Training data for edit-span decoding: instruction + source -> span target, with length statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from steer.edits.format import format_spans
from steer.edits.prompts import make_prompt
from steer.edits.spans import extract_spans, normalize


@dataclass
class LengthReport:
    """Span targets as a share of full rewrites, in words and (optionally) tokens."""

    n_pairs: int
    span_words: int
    rewrite_words: int
    span_tokens: int | None = None
    rewrite_tokens: int | None = None

    @property
    def word_ratio(self) -> float:
        return self.span_words / self.rewrite_words if self.rewrite_words else float("nan")

    @property
    def token_ratio(self) -> float | None:
        if self.span_tokens is None or not self.rewrite_tokens:
            return None
        return self.span_tokens / self.rewrite_tokens


def read_pairs(path) -> list[tuple[str, str]]:
    """Pairs from a TSV file (source<TAB>target a line) or JSONL ({"source", "target"} a line)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`pairs` file {str(path)!r} not found")
    pairs = []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            row = json.loads(line)
            pairs.append((row["source"], row["target"]))
        else:
            cols = line.split("\t")
            if len(cols) != 2:
                raise ValueError(f"line {k + 1} of {str(path)!r} must be source<TAB>target, got {len(cols)} fields")
            pairs.append((cols[0], cols[1]))
    if not pairs:
        raise ValueError(f"`pairs` file {str(path)!r} holds no pairs")
    return pairs


def make_examples(pairs, task: str = "gec", tokenizer=None) -> tuple[list[dict], LengthReport]:
    """One example per pair: {"prompt", "completion" (span list), "rewrite_prompt", "rewrite"}."""
    examples, report = [], LengthReport(len(pairs), 0, 0, 0 if tokenizer else None, 0 if tokenizer else None)
    for src, tgt in pairs:
        spans_text = format_spans(extract_spans(src, tgt))
        rewrite = normalize(tgt)
        examples.append({"prompt": make_prompt(src, task, "spans"), "completion": " " + spans_text,
                         "rewrite_prompt": make_prompt(src, task, "rewrite"), "rewrite": " " + rewrite,
                         "source": src, "target": tgt})
        report.span_words += len(spans_text.split())
        report.rewrite_words += len(rewrite.split())
        if tokenizer is not None:
            report.span_tokens += len(tokenizer(spans_text, add_special_tokens=False)["input_ids"])
            report.rewrite_tokens += len(tokenizer(rewrite, add_special_tokens=False)["input_ids"])
    return examples, report
