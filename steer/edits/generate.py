"""edit_generate: prompt a model, decode spans under the grammar, apply them; and the full-rewrite path."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from steer import checks
from steer.edits.anchored import parse_anchored
from steer.edits.anchored_grammar import AnchoredGrammar
from steer.edits.compact import CompactSpanGrammar, parse_compact
from steer.edits.format import SpanFormatError, parse_spans
from steer.edits.grammar import EditSpanGrammar
from steer.edits.prompts import make_prompt, output_kind
from steer.edits.spans import Span, apply_spans, normalize
from steer.generation import greedy_drop_finished

# A short lead-in before the answer on its line: "Corrected sentence:", "The simplified version:".
_LABEL = re.compile(r"^\s*(?:[A-Za-z][\w' ]{0,30} )?(?:sentence|answer|version|text|correction|paraphrase|"
                    r"simplification|output|rewrite|result)(?: is| would be| should be)?\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`*"


@dataclass
class EditResult:
    """One output: the target text, the spans (target spans), the raw generated text, its token count.

    ``valid`` is False when the span list could not be completed within the
    token budget, or (the anchored format) does not place in the source; the target is
    then the source unchanged.
    """

    target: str
    spans: list[Span] | None
    raw: str
    n_tokens: int
    valid: bool


@torch.no_grad()
def edit_generate(model, tokenizer, sources: list[str], task: str = "gec", target: str = "spans",
                  fmt: str | None = None, instruct: bool = False, max_new_tokens: int = 64, num_beams: int = 1,
                  batch_size: int = 16,
                  mark_every: int = 1, chat: bool | None = None, sort_by_length: bool = True,
                  loop_ban: tuple[int, int] | None = (4, 2),
                  drop_finished: bool = True, skip_bad_edits: bool = False,
                  grammar: bool | None = None, prompt_lookup: int | None = None) -> tuple[list[EditResult], float]:
    """Edit every source with the model.

    ``target="spans"``: the model writes edits over the source in span format ``fmt`` and they are
    applied to it. ``fmt="text"`` (the default): a span list under :class:`EditSpanGrammar`;
    ``"compact"``: the same with one token per position (:mod:`steer.edits.compact`; the tokenizer
    and model need the position tokens; ``mark_every`` as the model was trained with, see
    :func:`steer.edits.compact.compact_source`); ``"anchored"``: the model reads the plain source and
    writes edits that quote the words they replace (:mod:`steer.edits.anchored`) under
    :class:`~steer.edits.anchored_grammar.AnchoredGrammar`, which keeps the quoted words to source
    words the parser can place (a byte-level BPE tokenizer). ``target="rewrite"``: the model writes
    the whole target (same prompt style), unconstrained. ``instruct=True`` (with target rewrite): an
    untuned instruction-following model is asked for the edited sentence and its answer is read by
    :func:`read_answer`.

    Args:
        chat: prompts through the tokenizer's chat template (None: whenever it has one), as
            :func:`steer.edits.finetune.finetune` trained them.
        sort_by_length: batch the sources in order of prompt length (results come back in the
            input order), so that a batch holds sources of like length and, mostly, answers of
            like length: greedy ``generate`` runs each batch until its longest answer ends.
        loop_ban: (n, r): no n-gram of the answer may occur r times
            (:class:`steer.repetition.NoNgramLoop`), for every target and format alike; None: no guard.
        drop_finished: with greedy decoding (``num_beams=1``), a row leaves the model's batch as
            soon as its answer ends (:func:`steer.generation.greedy_drop_finished`: the same
            answers as ``generate``, which runs every row until the batch's longest answer ends).
            False: ``model.generate``.
        grammar: decode span answers under their format's grammar; False: unconstrained, as the model was
            trained, where an answer that does not parse (or runs out of budget) is invalid and
            leaves the source unchanged. None (the default): under the grammar wherever the
            tokenizer allows it (always, except anchored spans with a tokenizer that is not
            byte-level BPE: :meth:`AnchoredGrammar.supports`); True: refuse to decode without it.
        prompt_lookup: decode with prompt-lookup drafts of this many tokens (transformers'
            ``generate(prompt_lookup_num_tokens=...)``: the model checks a stretch of the prompt that
            follows the answer's last words in one forward pass and keeps what greedy decoding would
            have written), so copied stretches of the source cost one pass for several tokens. The
            answers are greedy decoding's, with the same processors. transformers runs it one
            source at a time: it needs ``batch_size=1`` and ``num_beams=1``. None: plain decoding.
        skip_bad_edits: the anchored format: drop the edit lines of a finished answer that do not
            place in the source and apply the others (``parse_anchored(..., skip_bad=True)``),
            instead of leaving the whole source unchanged.

    Returns:
        (results, seconds of generation).
    """
    from steer.edits.prompts import as_chat, uses_chat
    from steer.models import document_ids, pad_left
    from steer.repetition import NoNgramLoop

    if isinstance(sources, str) or not sources:
        raise ValueError("`sources` must be a non-empty list of texts")
    kind = output_kind(target, fmt, instruct)  # the span format, "rewrite" or "instruct"
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"`num_beams` must be an int >= 1, got {num_beams!r}")
    checks.integer("batch_size", batch_size, low=1)
    if loop_ban is not None and (not isinstance(loop_ban, tuple) or len(loop_ban) != 2):
        raise ValueError(f"`loop_ban` must be an (ngram, repeats) tuple or None, got {loop_ban!r}")
    if loop_ban is not None:
        NoNgramLoop(*loop_ban, prompt_length=0)  # validates n and r by name
    if not isinstance(drop_finished, bool):
        raise TypeError(f"`drop_finished` must be a bool, got {drop_finished!r}")
    if not isinstance(skip_bad_edits, bool):
        raise TypeError(f"`skip_bad_edits` must be a bool, got {skip_bad_edits!r}")
    if grammar is not None and not isinstance(grammar, bool):
        raise TypeError(f"`grammar` must be a bool or None, got {grammar!r}")
    if prompt_lookup is not None:
        checks.integer("prompt_lookup", prompt_lookup, low=1)
        if batch_size != 1 or num_beams != 1:
            raise ValueError(f"`prompt_lookup` decodes one source at a time, greedily: it needs batch_size=1 and "
                             f"num_beams=1, got batch_size={batch_size} and num_beams={num_beams}")
    chat = uses_chat(tokenizer, chat)
    prompts = [make_prompt(s, task, target, fmt, mark_every, instruct) for s in sources]
    if chat:
        prompts = [as_chat(tokenizer, p) for p in prompts]
    ids = document_ids(tokenizer, prompts)  # tokenised once: for the order and for the batches
    order = list(range(len(sources)))
    if sort_by_length:
        order.sort(key=lambda i: len(ids[i]))
    results: list[EditResult | None] = [None] * len(sources)
    seconds = 0.0
    eos = tokenizer.eos_token_id
    stops = _stop_ids(model, tokenizer)
    constrain = {"text": EditSpanGrammar, "compact": CompactSpanGrammar, "anchored": AnchoredGrammar}.get(kind)
    if kind == "anchored" and grammar is None:
        grammar = AnchoredGrammar.supports(tokenizer)
    constrain = constrain if grammar is not False else None
    parse = {"compact": parse_compact, "text": parse_spans}.get(kind)
    for b0 in range(0, len(order), batch_size):
        rows = order[b0 : b0 + batch_size]
        batch = [sources[i] for i in rows]
        enc = pad_left(tokenizer, [ids[i] for i in rows], device=model.device)
        width = enc["input_ids"].shape[1]
        procs = [NoNgramLoop(*loop_ban, prompt_length=width)] if loop_ban is not None else []
        if constrain is not None:
            # The loop ban, then the grammar. Positions strictly increase along a span list, so
            # there the ban can only ever touch replacement words; an anchored row the ban leaves
            # without a choice picks among the grammar's tokens.
            procs.append(constrain(tokenizer, batch, width))
        t0 = time.perf_counter()
        if prompt_lookup is not None:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 prompt_lookup_num_tokens=prompt_lookup, pad_token_id=tokenizer.pad_token_id,
                                 logits_processor=LogitsProcessorList(procs))
        elif drop_finished and num_beams == 1:
            out = greedy_drop_finished(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                                       stop_ids=stops, pad_token_id=tokenizer.pad_token_id,
                                       logits_processor=procs)
        else:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList(procs))
        seconds += time.perf_counter() - t0
        for i, src, row in zip(rows, batch, out[:, width:].tolist(), strict=True):
            ended = eos in row
            answer = row[: row.index(eos)] if ended else row
            raw = tokenizer.decode(answer, skip_special_tokens=True)
            n_tok = len(answer) + int(ended)
            if kind == "rewrite":
                results[i] = EditResult(normalize(raw.split("\n")[0]), None, raw, n_tok, ended)
                continue
            if kind == "instruct":
                results[i] = EditResult(read_answer(raw), None, raw, n_tok, ended)
                continue
            try:
                spans = (None if not ended else parse_anchored(raw, src, skip_bad_edits) if kind == "anchored"
                         else parse(raw, len(src.split())))
            except SpanFormatError:
                spans = None
            if spans is None:
                results[i] = EditResult(normalize(src), None, raw, n_tok, False)
            else:
                results[i] = EditResult(apply_spans(src, spans), spans, raw, n_tok, True)
    return results, seconds



def _stop_ids(model, tokenizer) -> list[int]:
    """The ids ``generate`` stops at by default: the generation config's EOS (one or several), else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    return ids or [tokenizer.eos_token_id]


def read_answer(raw: str) -> str:
    """The sentence in an instruction-following model's free answer, normalised: its first non-empty
    line (the next one if that line ends in a colon, as in "Here is the corrected sentence:"), less a
    short label before a colon ("Corrected sentence: ...") and the quotes around it.

    Example:
        >>> read_answer('Corrected sentence: "He goes home."\\nI fixed the verb.')
        'He goes home.'
        >>> read_answer("The corrected sentence is:\\n\\nHe goes home.")
        'He goes home.'
    """
    lines = [x.strip() for x in raw.split("\n") if x.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    line = lines[0] if lines else ""
    return normalize(_LABEL.sub("", line).strip(_QUOTES + " "))
