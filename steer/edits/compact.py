"""Compact span positions: one token per position, for the span list and for the prompt.

Position k of a source of n words is the boundary before word k (k = n: the
end). Each position is one token ``<@k>`` added to the tokenizer
(:func:`add_position_tokens`, which also resizes the model's embeddings). A
span list is its positions and replacement words with nothing in between, and
no edits is the empty list (the model answers with EOS at once)::

    <@1><@2>went<@4><@5>          replace word 1 by "went"; delete word 4
    <@0><@0>Yesterday<@3><@3>the   insert "Yesterday" at the start; "the" before word 3

The prompt shows the source with every position marked, ``<@0>He<@1>go<@2>home<@3>``,
one token per word boundary. The spans are the word spans of
:mod:`steer.edits.spans` (same extraction, same application); only their
written form differs from :mod:`steer.edits.format`, so the round trip stays
exact. :class:`CompactSpanGrammar` keeps every row a valid span list for its
source, reading each row's state off its generated ids in a few tensor ops (no
per-row Python, no state between steps, so beams may reorder freely).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from ngram import tokenizer_fingerprint
from steer import checks
from steer.edits.format import SpanFormatError, checked
from steer.edits.spans import Span, normalize

POSITION = "<@{}>"
MAX_POSITIONS = 256  # sources of up to 255 words
_POSITION_RE = re.compile(r"<@(\d+)>")


def position_token(k: int) -> str:
    return POSITION.format(k)


def add_position_tokens(tokenizer, model=None, n_positions: int = MAX_POSITIONS, noise: float = 0.5) -> int:
    """Add ``<@0>`` .. ``<@{n_positions - 1}>`` to ``tokenizer`` (and to ``model``'s embeddings).

    The tokens are ordinary (not special) added tokens, matched verbatim. When a
    model is given its input (and untied output) embeddings are resized and each
    new row starts near the number it stands for: a mean of the rows of the digits
    of k weighted towards the leading digit (``<@12>``: 2/3 of "1", 1/3 of "2", so
    ``<@12>`` and ``<@21>`` differ), plus Gaussian noise at ``noise`` times the
    per-dimension spread of the existing rows (seeded by k). Without the noise
    ``<@3>`` would be the digit "3" itself, which the source text also contains,
    and with tied embeddings the model could neither tell them apart nor name one
    without the other. Idempotent: tokens already present are kept.

    Returns:
        The id of ``<@0>``; the positions are the ids ``first .. first + n_positions - 1``.
    """
    from transformers import AddedToken

    checks.integer("n_positions", n_positions, low=2, high=4096)
    checks.number("noise", noise, 0)
    names = [position_token(k) for k in range(n_positions)]
    old = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False, lstrip=False, rstrip=False)
                          for t in names])
    first = position_ids(tokenizer, n_positions)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        emb_old = model.get_input_embeddings().weight.shape[0]
        digit_ids = [[d for d in tokenizer.convert_tokens_to_ids(_digit_tokens(tokenizer, k))
                      if d is not None and 0 <= d < min(old, emb_old)] for k in range(n_positions)]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                          if m is not None}.values():
                w = layer.weight
                spread = w[:emb_old].float().std(0)
                for k, digits in enumerate(digit_ids):
                    if digits:
                        # Weights 2^-j over the digits, leading digit first, normalised to sum 1.
                        lead = torch.tensor([2.0 ** -j for j in range(len(digits))])
                        row = (lead[:, None] / lead.sum() * w[digits].float()).sum(0)
                    else:
                        row = w[:emb_old].float().mean(0)
                    g = torch.Generator().manual_seed(k)
                    w[first + k] = (row + noise * spread * torch.randn(row.shape, generator=g)).to(w.dtype)
    return first


def _digit_tokens(tokenizer, k: int) -> list[str]:
    ids = tokenizer(str(k), add_special_tokens=False)["input_ids"]
    return [t for t in tokenizer.convert_ids_to_tokens(ids) if any(c.isdigit() for c in t)]


def position_ids(tokenizer, n_positions: int | None = None) -> int:
    """The id of ``<@0>``; the positions must be consecutive ids (as :func:`add_position_tokens` adds them)."""
    vocab = tokenizer.get_vocab()
    if position_token(0) not in vocab:
        raise ValueError("the tokenizer has no position tokens: call steer.edits.compact.add_position_tokens "
                         "(tokenizer, model) before training or decoding compact spans")
    first = vocab[position_token(0)]
    for k in range(count_positions(vocab) if n_positions is None else n_positions):
        if vocab.get(position_token(k)) != first + k:
            raise ValueError(f"position token {position_token(k)} is not id {first + k}: the position "
                             "tokens must be consecutive ids")
    return first


def count_positions(vocab: dict) -> int:
    """How many position tokens ``<@0>``, ``<@1>``, ... a vocabulary (``tokenizer.get_vocab()``) has."""
    n = 0
    while position_token(n) in vocab:
        n += 1
    return n


def format_compact(spans: Sequence) -> str:
    """Write word spans compactly.

    Example:
        >>> format_compact([(1, 2, "went"), (4, 5, "")])
        '<@1><@2>went<@4><@5>'
        >>> format_compact([])
        ''
    """
    out = []
    for s in spans:
        start, end, rep = s
        words = " ".join(str(rep).split())
        if "<@" in words:
            raise ValueError(f"a replacement cannot contain '<@' (it would read as a position): {rep!r}")
        out.append(f"{position_token(start)}{position_token(end)}{words}")
    return "".join(out)


def parse_compact(text: str, n_words: int | None = None) -> list[Span]:
    """Read a compact span list back (spaces the tokenizer put around positions are ignored).

    Raises:
        SpanFormatError: text before the first position, an odd number of positions, spans out of
            range, overlapping, touching or unsorted, or an insertion with no words.

    Example:
        >>> parse_compact("<@1><@2> went<@4><@5>", n_words=5)
        [Span(start=1, end=2, replacement='went'), Span(start=4, end=5, replacement='')]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a string, got {type(text).__name__}")
    pieces = _POSITION_RE.split(text)  # [before, k1, after1, k2, after2, ...]
    if pieces[0].strip():
        raise SpanFormatError(f"text before the first position: {pieces[0].strip()!r}")
    ks, texts = [int(k) for k in pieces[1::2]], pieces[2::2]
    if len(ks) % 2:
        raise SpanFormatError(f"{len(ks)} positions: a span needs two (start, end)")
    spans = []
    for j in range(0, len(ks), 2):
        if texts[j].strip():
            raise SpanFormatError(f"words between the positions of span {j // 2}: {texts[j].strip()!r}")
        rep = normalize(texts[j + 1])
        if ks[j] == ks[j + 1] and not rep:
            raise SpanFormatError(f"span {j // 2} inserts nothing at {ks[j]}")
        spans.append(Span(ks[j], ks[j + 1], rep))
    return checked(spans, n_words)


def compact_source(source: str, mark_every: int = 1) -> str:
    """The source with its positions marked: every one by default, ``<@0>He<@1>go<@2>home<@3>``.

    ``mark_every=m`` marks only the positions that are multiples of m, and the end:
    ``<@0>He go<@2>home<@3>`` (m = 2). The prompt is then shorter (about one token per m words
    instead of one per word), and the model has to count the words after a mark to name the
    positions in between.
    """
    checks.integer("mark_every", mark_every, low=1)
    words = source.split()
    if any("<@" in w for w in words):
        raise ValueError("a source cannot contain '<@' (it would read as a position)")
    out = []
    for i, w in enumerate(words):
        # A marked position joins its word without a space (the tokenizer starts the word itself);
        # unmarked ones are plain spaces.
        out.append(position_token(i) + w if i % mark_every == 0 else " " + w)
    return "".join(out) + position_token(len(words))


_CLASSES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _word_classes(tokenizer, first: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(word, visible word) flags of every id: words are every non-special token but the positions.

    Some words are only spaces (Llama-2 writes " 12" as "▁", "1", "2"); an insertion needs a
    visible one before it may end. Cached per vocabulary fingerprint.
    """
    key = tokenizer_fingerprint(tokenizer)
    if key not in _CLASSES:
        v = len(tokenizer)
        texts = tokenizer.convert_ids_to_tokens(list(range(v)))
        visible = torch.tensor([t is not None and bool(tokenizer.convert_tokens_to_string([t]).strip())
                                for t in texts], dtype=torch.bool)
        word = torch.ones(v, dtype=torch.bool)
        word[list(set(tokenizer.all_special_ids))] = False
        word[first:first + k] = False
        _CLASSES[key] = (word, visible & word)
    return _CLASSES[key]


class CompactSpanGrammar(LogitsProcessor):
    """Keeps each row's continuation a valid compact span list for its source.

    With n the row's source length, P the position tokens, W every other
    non-special token with visible text:

        output := EOS | (P_s P_e W*)+ EOS,  start <= end <= n, start > the previous end,
                  an insertion (start = end) has at least one word.

    The state is read off the generated ids each step with a handful of
    [B, L] ops (how many positions so far, the last two), and the mask is a
    few [B, V] comparisons against the position id range, added as a 0/-inf
    penalty. Rows that have finished (hold EOS) are left alone.

    Args:
        tokenizer: with position tokens (:func:`add_position_tokens`).
        sources: the batch's sources; rows map to sources as ``row // (rows / len(sources))``
            (beam search's layout).
        prompt_length: width of the (left-padded) prompt batch.
    """

    def __init__(self, tokenizer, sources: Sequence[str], prompt_length: int):
        if isinstance(sources, str) or not sources:
            raise ValueError("`sources` must be a non-empty list of texts")
        checks.integer("prompt_length", prompt_length, low=0)
        self.first = position_ids(tokenizer)
        self.k = count_positions(tokenizer.get_vocab())
        self.n_words = [len(s.split()) for s in sources]
        too_long = [i for i, n in enumerate(self.n_words) if n >= self.k]
        if too_long:
            i = too_long[0]
            raise ValueError(f"source {i} has {self.n_words[i]} words; the tokenizer's {self.k} position tokens "
                             f"cover sources of up to {self.k - 1} (add_position_tokens(n_positions=...))")
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise ValueError("the tokenizer has no EOS token, which ends a span list")
        self._word, self._visible = _word_classes(tokenizer, self.first, self.k)
        self.prompt_length = prompt_length
        self._cache: dict = {}

    def _on(self, device, rows: int, width: int):
        key = (device, rows, width)
        if key not in self._cache:
            if width < self.first + self.k:
                raise ValueError(f"scores have {width} columns but the position tokens end at id "
                                 f"{self.first + self.k - 1}: resize the model's embeddings "
                                 "(add_position_tokens(tokenizer, model))")
            per = max(rows // len(self.n_words), 1)
            src = (torch.arange(rows) // per).clamp(max=len(self.n_words) - 1)
            n = torch.tensor(self.n_words)[src]
            word = torch.zeros(width, dtype=torch.bool)  # columns past the tokenizer (padding) stay banned
            word[: self._word.numel()] = self._word
            visible = torch.zeros(width, dtype=torch.bool)
            visible[: self._visible.numel()] = self._visible
            value = torch.arange(width) - self.first  # position value of each id (meaningless outside)
            in_range = (value >= 0) & (value < self.k)
            self._cache[key] = tuple(t.to(device) for t in (n, word, visible, value, in_range))
        return self._cache[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        b, v = scores.shape
        n, word, visible, k, in_range = self._on(scores.device, b, v)
        gen = input_ids[:, self.prompt_length:]  # (B, L)
        length = gen.shape[1]
        is_pos = (gen >= self.first) & (gen < self.first + self.k)  # (B, L)
        count = is_pos.sum(1)  # (B,)
        if length:
            # Index of the last and second-to-last position token (-1: none): a max over masked indices.
            idx = torch.arange(length, device=gen.device).expand(b, length)
            last_i = torch.where(is_pos, idx, -1).max(1).values  # (B,)
            prev_i = torch.where(is_pos & (idx < last_i[:, None]), idx, -1).max(1).values
            last = torch.where(last_i >= 0, gen.gather(1, last_i.clamp(min=0)[:, None])[:, 0] - self.first, -1)
            prev = torch.where(prev_i >= 0, gen.gather(1, prev_i.clamp(min=0)[:, None])[:, 0] - self.first, -1)
            # A visible word since the last position (ids past the table, e.g. padding, count as none).
            seen = visible[gen.clamp(0, v - 1)] & (idx > last_i[:, None])
            has_word = seen.any(1)
            done = (gen == self.eos).any(1)
        else:
            last = prev = count - 1  # -1: nothing generated yet
            has_word = done = count > 0
        expect_end = count % 2 == 1
        # Where the next position may go: an end in [start, n]; a new start in (previous end, n].
        lo = torch.where(expect_end, last, last + 1)
        hi = n
        # An insertion (start == end) needs a word before anything else.
        needs_word = ~expect_end & (count > 0) & (prev == last) & ~has_word
        pos_ok = ~needs_word
        word_ok = ~expect_end & (count > 0)
        eos_ok = ~expect_end & ~needs_word
        allowed = (in_range & (k >= lo[:, None]) & (k <= hi[:, None]) & pos_ok[:, None]) \
            | (word & word_ok[:, None])  # (B, V)
        allowed[:, self.eos] |= eos_ok
        allowed |= done[:, None]
        return scores.masked_fill(~allowed, float("-inf"))
