"""Training data for edit-span decoding: instruction + source -> span target, with length statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from steer.edits.anchored import format_anchored
from steer.edits.format import format_spans
from steer.edits.prompts import FORMATS, make_prompt
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


# Line-aligned layouts of the shared edit sets: a source file and its reference
# files, named <stem><source suffix> and <stem><reference mark><k>.
SOURCE_LAYOUTS = {".src": ".ref", ".orig": ".simp.", ".norm": ".turk."}
MRPC_HEADER = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8-sig").rstrip("\n").split("\n")


def _references(src: Path) -> list[Path]:
    mark = SOURCE_LAYOUTS[src.suffix]
    stem = src.name[: -len(src.suffix)]
    return sorted(f for f in src.parent.iterdir() if f.name.startswith(stem + mark) and f.name != src.name)


def _aligned_pairs(src: Path) -> tuple[list[tuple[str, str]], str]:
    refs = _references(src)
    if not refs:
        raise ValueError(f"source file {str(src)!r} has no reference files "
                         f"({src.name[: -len(src.suffix)]}{SOURCE_LAYOUTS[src.suffix]}*) beside it")
    sources = _lines(src)
    pairs = []
    for ref in refs:
        targets = _lines(ref)
        if len(targets) != len(sources):
            raise ValueError(f"{str(ref)!r} has {len(targets)} lines but {str(src)!r} has {len(sources)}: "
                             "a reference file must be line-aligned with its source")
        pairs += list(zip(sources, targets, strict=True))
    return pairs, f"{src}: {len(sources)} sources x {len(refs)} references = {len(pairs)} pairs"


def _mrpc_pairs(path: Path, lines: list[str]) -> tuple[list[tuple[str, str]], str]:
    pairs, negatives = [], 0
    for k, line in enumerate(lines[1:], start=2):
        cols = line.split("\t")
        if not line.strip():
            continue
        if len(cols) != 5:
            raise ValueError(f"line {k} of {str(path)!r} must have the 5 MRPC columns, got {len(cols)} fields")
        if cols[0].strip() == "1":
            pairs.append((cols[3], cols[4]))
        else:
            negatives += 1
    return pairs, f"{path}: MRPC layout, {len(pairs)} paraphrase pairs (quality 1), {negatives} non-paraphrases skipped"


def _file_pairs(path: Path) -> tuple[list[tuple[str, str]], str]:
    if path.suffix in SOURCE_LAYOUTS:
        return _aligned_pairs(path)
    lines = _lines(path)
    if lines and tuple(c.strip() for c in lines[0].split("\t")) == MRPC_HEADER:
        return _mrpc_pairs(path, lines)
    pairs = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                pairs.append((row["source"], row["target"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"line {k + 1} of {str(path)!r} must be a JSON object with "
                                 '"source" and "target"') from None
        else:
            cols = line.split("\t")
            if len(cols) != 2:
                raise ValueError(f"line {k + 1} of {str(path)!r} must be source<TAB>target, got {len(cols)} fields "
                                 "(other layouts: a .src/.orig/.norm file with its references, an MRPC TSV, "
                                 "or a folder of these)")
            pairs.append((cols[0], cols[1]))
    return pairs, f"{path}: {len(pairs)} pairs"


def read_pairs_with_notes(path) -> tuple[list[tuple[str, str]], list[str]]:
    """Like :func:`read_pairs`, also returning one line per file read saying what it gave."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`pairs` file {str(path)!r} not found")
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix in SOURCE_LAYOUTS and _references(f))
        if not files:
            raise ValueError(f"`pairs` folder {str(path)!r} holds no source file with references "
                             f"(<name>.src with <name>.ref*, .orig with .simp.*, .norm with .turk.*)")
    else:
        files = [path]
    pairs, notes = [], []
    for f in files:
        got, note = _file_pairs(f)
        pairs += got
        notes.append(note)
    if not pairs:
        raise ValueError(f"`pairs` file {str(path)!r} holds no pairs")
    return pairs, notes


def read_pairs(path) -> list[tuple[str, str]]:
    """(source, target) pairs from any of the layouts edit sets come in.

    - ``source<TAB>target`` a line (TSV), or ``{"source", "target"}`` a line (``.jsonl``);
    - a source file with line-aligned references beside it, one pair per
      reference: ``X.src`` + ``X.ref0..`` (JFLEG), ``X.orig`` + ``X.simp.0..``
      (ASSET), ``X.norm`` + ``X.turk.0..`` (TurkCorpus);
    - the MRPC TSV (``Quality, #1 ID, #2 ID, #1 String, #2 String``): the
      paraphrase pairs (quality 1);
    - a folder: every source file in it that has references (e.g. ``jfleg/dev``).
    """
    return read_pairs_with_notes(path)[0]


def make_examples(pairs, task: str = "gec", tokenizer=None, fmt: str = "text",
                  mark_every: int = 1) -> tuple[list[dict], LengthReport]:
    """One example per pair: {"prompt", "completion" (span list), "rewrite_prompt", "rewrite", "format"}.

    ``fmt="text"``: the span format of :mod:`steer.edits.format` after a numbered-word prompt;
    ``fmt="compact"``: one token per position (:mod:`steer.edits.compact`; the tokenizer, if
    given, must have the position tokens; ``mark_every``: which positions the prompt marks, see
    :func:`steer.edits.compact.compact_source`). ``fmt="anchored"``: edits that quote the source
    words they replace, after the plain source (:mod:`steer.edits.anchored`). An empty compact or
    anchored completion means no edits.
    """
    if fmt not in FORMATS:
        raise ValueError(f"`fmt` must be one of {FORMATS}, got {fmt!r}")
    if fmt == "compact" and tokenizer is not None:
        from steer.edits.compact import position_ids

        position_ids(tokenizer)
    lead = " " if fmt == "text" else ""
    examples, report = [], LengthReport(len(pairs), 0, 0, 0 if tokenizer else None, 0 if tokenizer else None)
    for src, tgt in pairs:
        spans_text = _write(fmt, src, extract_spans(src, tgt))
        rewrite = normalize(tgt)
        examples.append({"prompt": make_prompt(src, task, "spans", fmt, mark_every), "completion": lead + spans_text,
                         "rewrite_prompt": make_prompt(src, task, "rewrite"), "rewrite": " " + rewrite,
                         "source": src, "target": tgt, "format": fmt})
        report.span_words += len(spans_text.split())
        report.rewrite_words += len(rewrite.split())
        if tokenizer is not None:
            report.span_tokens += len(tokenizer(spans_text, add_special_tokens=False)["input_ids"])
            report.rewrite_tokens += len(tokenizer(rewrite, add_special_tokens=False)["input_ids"])
    return examples, report




def _write(fmt: str, source: str, spans: list) -> str:
    if fmt == "compact":
        from steer.edits.compact import format_compact

        return format_compact(spans)
    return format_anchored(source, spans) if fmt == "anchored" else format_spans(spans)
