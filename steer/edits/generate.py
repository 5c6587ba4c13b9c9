"""edit_generate: prompt a model, decode spans under the grammar, apply them; and the full-rewrite path."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from steer.edits.compact import CompactSpanGrammar, parse_compact
from steer.edits.format import SpanFormatError, parse_spans
from steer.edits.grammar import EditSpanGrammar
from steer.edits.prompts import make_prompt
from steer.edits.spans import Span, apply_spans, normalize


@dataclass
class EditResult:
    """One output: the target text, the spans (spans mode), the raw generated text, its token count.

    ``valid`` is False when the span list could not be completed within the
    token budget; the target is then the source unchanged.
    """

    target: str
    spans: list[Span] | None
    raw: str
    n_tokens: int
    valid: bool


@torch.no_grad()
def edit_generate(model, tokenizer, sources: list[str], task: str = "gec", mode: str = "spans",
                  max_new_tokens: int = 64, num_beams: int = 1, batch_size: int = 16,
                  mark_every: int = 1) -> tuple[list[EditResult], float]:
    """Edit every source with the model.

    ``mode="spans"``: the model writes a span list under :class:`EditSpanGrammar`
    and the spans are applied to the source. ``mode="compact"``: the same with
    one token per position (:mod:`steer.edits.compact`; the tokenizer and model
    need the position tokens; ``mark_every`` as the model was trained with, see
    :func:`steer.edits.compact.compact_source`). ``mode="rewrite"``: the model writes the whole
    target (same prompt style), unconstrained.

    Returns:
        (results, seconds of generation).
    """
    if isinstance(sources, str) or not sources:
        raise ValueError("`sources` must be a non-empty list of texts")
    if mode not in ("spans", "compact", "rewrite"):
        raise ValueError(f"`mode` must be 'spans', 'compact' or 'rewrite', got {mode!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"`num_beams` must be an int >= 1, got {num_beams!r}")
    from steer.models import encode_prompts

    results: list[EditResult] = []
    seconds = 0.0
    eos = tokenizer.eos_token_id
    for b0 in range(0, len(sources), batch_size):
        batch = sources[b0 : b0 + batch_size]
        prompts = [make_prompt(s, task, mode, mark_every) for s in batch]
        enc = encode_prompts(tokenizer, prompts, device=model.device)
        width = enc["input_ids"].shape[1]
        grammar = {"spans": EditSpanGrammar, "compact": CompactSpanGrammar}.get(mode)
        procs = [grammar(tokenizer, batch, width)] if grammar is not None else []
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList(procs))
        seconds += time.perf_counter() - t0
        for src, row in zip(batch, out[:, width:].tolist(), strict=True):
            ended = eos in row
            ids = row[: row.index(eos)] if ended else row
            raw = tokenizer.decode(ids, skip_special_tokens=True)
            parse = parse_compact if mode == "compact" else parse_spans
            n_tok = len(ids) + int(ended)
            if mode == "rewrite":
                results.append(EditResult(normalize(raw.split("\n")[0]), None, raw, n_tok, ended))
                continue
            try:
                spans = parse(raw, len(src.split())) if ended else None
            except SpanFormatError:
                spans = None
            if spans is None:
                results.append(EditResult(normalize(src), None, raw, n_tok, False))
            else:
                results.append(EditResult(apply_spans(src, spans), spans, raw, n_tok, True))
    return results, seconds
