"""AnchoredGrammar: a LogitsProcessor that keeps each row's answer a list of anchored edits that places.

The language is :mod:`steer.edits.anchored`'s, with the old side of each edit
restricted to what :func:`~steer.edits.anchored.parse_anchored` can place in the
row's source: source words from the cursor on, copied token for token::

    answer := EOS | line ("\\n" line)* EOS
    line   := old " ->" new
    old    := ""                                 (an insertion at the cursor)
            | words                              (occurring in the source at or after the cursor)
            | words " ..." words                 (the last words after the first ones)
    new    := (" " text)*                        (no newline, no "->")

A copied word is the source word's own tokens: a byte-level BPE tokenizer splits
text before every " word", so " go" in the answer is the token of " go" in the
source. The row's state is a few [B] tensors and one [B, J] boolean over the
source's token offsets (J: the longest source in tokens): ``hyp[b, j]`` says the
old words written so far end at offset j for some start the parser would accept.
A step is a shift and a compare of that matrix, so no Python loop runs over rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from ngram import tokenizer_fingerprint
from steer import checks
from steer.edits.anchored import ARROW, ELLIPSIS, _escape
from steer.edits.grammar import token_surfaces

# Row modes: writing old words (k of them so far in this side), writing new words, ended, off the grammar.
OLD, NEW, DONE, DEAD = range(4)


class _Vocab:
    """What the grammar needs of a tokenizer, built once per vocabulary: the marker ids and token classes."""

    def __init__(self, tokenizer):
        def single(text: str) -> int:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"AnchoredGrammar needs {text!r} to be one token of the tokenizer, got {ids} "
                                 "(a byte-level BPE tokenizer, as GPT-2's or SmolLM2's, has it; "
                                 "edit_generate(..., grammar=False) decodes without the grammar)")
            return ids[0]

        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise ValueError("the tokenizer has no EOS token, which ends an answer")
        self.arrow, self.ellipsis, self.newline = single(" " + ARROW), single(" " + ELLIPSIS), single("\n")
        texts = token_surfaces(tokenizer)
        special = set(tokenizer.all_special_ids)
        # New words: any visible text without a line break or the arrow. A token that starts with
        # whitespace may open the new side; one that starts with ">" may not follow a "-".
        free = [bool(t) and i not in special and "\n" not in t and "\r" not in t and ARROW not in t
                for i, t in enumerate(texts)]
        self.cpu = dict(free=torch.tensor(free), opens=torch.tensor([t[:1].isspace() for t in texts]),
                        gt=torch.tensor([t.startswith(">") for t in texts]),
                        dash=torch.tensor([t.endswith("-") for t in texts]))
        self.size = len(texts)
        self._dev: dict = {}

    def on(self, device, width: int) -> dict:
        """The classes on ``device`` over ``width`` score columns (columns past the tokenizer: none)."""
        key = (device, width)
        if key not in self._dev:
            n = min(width, self.cpu["free"].shape[0])
            padded = {k: torch.zeros(width, dtype=torch.bool) for k in self.cpu}
            for k, t in self.cpu.items():
                padded[k][:n] = t[:n]
            self._dev[key] = {k: t.to(device) for k, t in padded.items()}
        return self._dev[key]


_VOCABS: dict[str, _Vocab] = {}


def _vocab(tokenizer) -> _Vocab:
    key = tokenizer_fingerprint(tokenizer)  # equal tokenizers share the classes
    if key not in _VOCABS:
        _VOCABS[key] = _Vocab(tokenizer)
    return _VOCABS[key]


def _pieces(tokenizer, sources: Sequence[str], vocab: _Vocab) -> list[tuple[list[int], list[int]]]:
    """Per source: its old-side tokens (every word as " word", escaped as the format writes it) and the
    token offset at which each word starts (plus the end). Refuses a tokenizer that does not split there."""
    out = []
    for i, src in enumerate(sources):
        written = [" " + _escape(w, (ARROW, ELLIPSIS)) for w in src.split()]
        ids = tokenizer(written, add_special_tokens=False)["input_ids"] if written else []
        flat = [t for piece in ids for t in piece]
        starts = [0]
        for piece in ids:
            starts.append(starts[-1] + len(piece))
        # The old side as a line of an answer must tokenize into these same pieces.
        line = "".join(written)
        whole = tokenizer(line + " " + ARROW + "\n" + line + " " + ELLIPSIS + line, add_special_tokens=False)
        expect = flat + [vocab.arrow, vocab.newline] + flat + [vocab.ellipsis] + flat
        if whole["input_ids"] != expect:
            raise ValueError(f"source {i} ({src[:60]!r}) does not tokenize word by word with this tokenizer "
                             "(\" word\" pieces must be the same alone and in a line); AnchoredGrammar needs a "
                             "byte-level BPE tokenizer")
        out.append((flat, starts))
    return out


class AnchoredGrammar(LogitsProcessor):
    """Allows only tokens that keep each row's answer a list of anchored edits that places in its source.

    Every finished answer parses with ``parse_anchored(answer, source)`` (no line skipped), so the
    edits always apply; an answer cut by the token budget is still unfinished. The old side
    follows the parser exactly: its words are looked up at their first occurrence from the
    cursor, and the cursor moves to where the parser puts it.

    Args:
        tokenizer: the model's tokenizer (byte-level BPE: " ->", " ..." and "\\n" single tokens, and
            every " word" tokenized alone).
        sources: one source text per prompt; rows map to sources as ``row // (rows / len(sources))``
            (beam search's layout).
        prompt_length: width of the (left-padded) prompt batch; the answer starts there.

    A row's state moves by its last token each step, after finding its parent row of the previous
    step by content (beams may be reordered); where no parent is found the state is rebuilt from
    the row's whole answer. A row that has ended (EOS) is left alone. Where a processor before this
    one (a repetition ban) has ruled out every token the grammar allows, the row picks among the
    allowed tokens with equal scores rather than leave the grammar.

    Example:
        >>> grammar = AnchoredGrammar(tokenizer, ["He go to school yesterday"], prompt_length=enc_width)
        >>> model.generate(**enc, logits_processor=LogitsProcessorList([grammar]))  # doctest: +SKIP
    """

    @staticmethod
    def supports(tokenizer) -> bool:
        """Whether the tokenizer has what the grammar needs (" ->", " ..." and "\\n" as single tokens, an EOS)."""
        try:
            _vocab(tokenizer)
        except ValueError:
            return False
        return True

    def __init__(self, tokenizer, sources: Sequence[str], prompt_length: int):
        if isinstance(sources, str) or not sources:
            raise ValueError("`sources` must be a non-empty list of texts")
        if not all(isinstance(s, str) for s in sources):
            raise TypeError("`sources` must hold strings")
        checks.integer("prompt_length", prompt_length, low=0)
        self.vocab = _vocab(tokenizer)
        pieces = _pieces(tokenizer, list(sources), self.vocab)
        j = max(1, max(len(flat) for flat, _ in pieces))
        # Per source, over token offsets 0..J: the token there (-1 past the end), whether a word
        # starts there (a boundary; the end of the source is one), and the word index of a boundary.
        tok = torch.full((len(pieces), j), -1, dtype=torch.long)
        bound = torch.zeros(len(pieces), j + 1, dtype=torch.bool)
        word = torch.zeros(len(pieces), j + 1, dtype=torch.long)
        for r, (flat, starts) in enumerate(pieces):
            tok[r, : len(flat)] = torch.tensor(flat, dtype=torch.long)
            bound[r, starts] = True
            word[r, starts] = torch.arange(len(starts))
        self.table = dict(tok=tok, bound=bound, word=word, length=torch.tensor([len(f) for f, _ in pieces]))
        self.prompt_length = prompt_length
        self._dev: dict = {}
        self._last = None  # the previous call's answers and states

    def _rows(self, rows: int, device) -> dict:
        """The source table gathered per row (beam rows share their source's), on ``device``."""
        key = (rows, device)
        if key not in self._dev:
            n_src = self.table["tok"].shape[0]
            src = (torch.arange(rows) // max(rows // n_src, 1)).clamp(max=n_src - 1)
            t = {k: v[src].to(device) for k, v in self.table.items()}
            t["offset"] = torch.arange(t["bound"].shape[1], device=device)
            t["src"] = src.to(device)
            self._dev[key] = t
        return self._dev[key]

    def _starts(self, t: dict, lo: torch.Tensor) -> torch.Tensor:
        # (B, J+1): offsets where an old side may start: a word boundary at word >= lo, before the end.
        return t["bound"] & (t["word"] >= lo[:, None]) & (t["offset"][None] < t["length"][:, None])

    def _initial(self, t: dict, b: int, device) -> dict:
        zero = torch.zeros(b, dtype=torch.long, device=device)
        false = torch.zeros(b, dtype=torch.bool, device=device)
        return dict(mode=zero + OLD, k=zero, part=zero, cur=zero, fresh=false, dash=false,
                    hyp=self._starts(t, zero))

    def _end_word(self, t: dict, hyp: torch.Tensor) -> torch.Tensor:
        # The parser takes the first occurrence: of the offsets where the written words may end on a
        # boundary, the smallest (all candidates hold the same words, so the same length).
        ends = hyp & t["bound"]
        first = torch.where(ends, t["offset"][None], hyp.shape[1]).min(1).values.clamp(max=hyp.shape[1] - 1)
        return t["word"].gather(1, first[:, None])[:, 0]

    def _step(self, t: dict, s: dict, x: torch.Tensor) -> dict:
        """Every row's state after its token ``x`` (B,)."""
        v, eos = self.vocab, self.vocab.eos
        c = v.on(x.device, v.size)
        mode, k, part, hyp = s["mode"], s["k"], s["part"], s["hyp"]
        tok = t["tok"]
        # Old words: the candidates whose next source token is x move one offset on (a shift).
        match = hyp[:, :-1] & (tok == x[:, None])  # (B, J)
        cont = match.any(1)
        moved = torch.nn.functional.pad(match, (1, 0))  # (B, J+1)
        at_bound = (hyp & t["bound"]).any(1) & (k > 0)
        line_start = (k == 0) & (part == 0)
        old = mode == OLD
        # A token that continues a source word is read as that word, before any marker it could also be.
        o_word = old & cont
        o_arrow = old & ~cont & (x == v.arrow) & (at_bound | line_start)
        o_ell = old & ~cont & (x == v.ellipsis) & at_bound & (part == 0)
        o_eos = old & ~cont & (x == eos) & line_start
        new = mode == NEW
        xc = x.clamp(0, c["free"].shape[0] - 1)
        n_eos = new & (x == eos)
        n_line = new & (x == v.newline)
        n_word = new & ~n_eos & ~n_line & c["free"][xc] & (c["opens"][xc] | ~s["fresh"]) & ~(c["gt"][xc] & s["dash"])
        end = self._end_word(t, hyp)
        cur = torch.where(o_arrow & (k > 0), end, s["cur"])
        lo = torch.where(o_ell, end, cur)
        restart = o_ell | n_line  # a fresh side: the last words after the first, or the next line
        hyp2 = torch.where(o_word[:, None], moved, torch.where(restart[:, None], self._starts(t, lo), hyp))
        mode2 = torch.where(o_word | o_ell | n_line, OLD, torch.where(o_arrow | n_word, NEW, DEAD))
        mode2 = torch.where(o_eos | n_eos | (mode == DONE), DONE, mode2)
        return dict(mode=mode2, k=torch.where(o_word, k + 1, torch.where(restart, 0, k)),
                    part=torch.where(o_ell, 1, torch.where(n_line, 0, part)), cur=cur,
                    fresh=o_arrow | (s["fresh"] & ~n_word), dash=n_word & c["dash"][xc], hyp=hyp2)

    def _states(self, t: dict, answers: torch.Tensor) -> dict:
        """The states after the whole of each row's answer (B, T): the steps replayed from the start."""
        s = self._initial(t, answers.shape[0], answers.device)
        for i in range(answers.shape[1]):
            s = self._step(t, s, answers[:, i])
        return s

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        b, size = scores.shape
        t = self._rows(b, scores.device)
        answers = input_ids[:, self.prompt_length :]
        last = self._last
        state = None
        if last is not None and last["answers"].shape == (b, answers.shape[1] - 1):
            # Each row's parent: a previous row of the same source whose answer is this one less its
            # last token (greedy: itself; beams: any); one host read checks that every row has one.
            same = (answers[:, None, :-1] == last["answers"][None]).all(-1) & (t["src"][:, None] == t["src"][None])
            if bool(same.any(1).all()):
                parent = same.long().argmax(1)
                state = self._step(t, {k: v[parent] for k, v in last["state"].items()}, answers[:, -1])
        if state is None:
            state = self._states(t, answers)
        self._last = dict(answers=answers, state=state)
        c = self.vocab.on(scores.device, size)
        mode, k, part, hyp = state["mode"], state["k"], state["part"], state["hyp"]
        v = self.vocab
        # Old words: scatter each candidate's next source token into its row (pads carry weight 0).
        nxt = hyp[:, :-1] & (t["tok"] >= 0)  # (B, J)
        words = torch.zeros(b, size, device=scores.device).scatter_add_(1, t["tok"].clamp(min=0), nxt.float()) > 0
        at_bound = (hyp & t["bound"]).any(1) & (k > 0)
        line_start = (k == 0) & (part == 0)
        old, new = mode == OLD, mode == NEW
        free, opens, gt = c["free"], c["opens"], c["gt"]
        allowed = (words & old[:, None]) | (free[None] & new[:, None] & (opens[None] | ~state["fresh"][:, None])
                                            & ~(gt[None] & state["dash"][:, None]))  # (B, V)
        allowed[:, v.arrow] |= old & (at_bound | line_start)
        allowed[:, v.ellipsis] |= old & at_bound & (part == 0)
        allowed[:, v.eos] |= (old & line_start) | new
        allowed[:, v.newline] |= new
        allowed |= ((mode == DONE) | (mode == DEAD))[:, None]  # ended rows (and, never under this grammar, lost ones)
        out = scores.masked_fill(~allowed, float("-inf"))
        # Every allowed token already at -inf (a ban before this processor): choose among them evenly.
        stuck = ~torch.isfinite(out).any(1, keepdim=True)  # (B, 1)
        return torch.where(stuck & allowed, torch.zeros_like(out), out)
