"""EditSpanGrammar: a LogitsProcessor that keeps each row's output a valid span list for its source.

The language (see steer.edits.format), with n = number of words of the row's source:

    output  := "NONE" EOS | span (";" " "? span)* EOS        (" ; " between spans)
    span    := int " " int (" " words)?                      start <= end <= n, start > previous end

Tokens are sorted once per tokenizer into a few shape classes by their surface
text (digits, " "+digits, " ", ";", " ;", word pieces, EOS); each step, every
row's state is read off its generated text and the allowed tokens are a handful
of [B, V] boolean ops over those classes. Numbers are checked digit by digit:
a digit token is allowed only if the number typed so far can still end inside
its range. Replacement words containing ";", a backslash or a newline cannot be
generated (the format would need escapes for them).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ngram import tokenizer_fingerprint
from steer.edits.format import NO_EDITS

# Row modes.
START, NUM_S, AFTER_S, NUM_E, REPL, SEP, SEP_SP, NONE_SEQ, DONE, FINISHED, INVALID = range(11)
# Token classes: banned, digits, " "+digits, " ", ";", " ;", word piece, " "+word piece, EOS.
BAN, D, SD, SP, SC, SSC, WN, WS, EOS = range(9)
_MAX_DIGITS = 6


def token_surfaces(tokenizer) -> list[str]:
    """The text each token adds after other text (leading spaces kept), for every id."""
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
    base = tokenizer.decode([anchor])
    return [tokenizer.decode([anchor, i])[len(base):] for i in range(len(tokenizer))]


class _Classes:
    """Per-token shape classes of one tokenizer (built once, moved to devices lazily)."""

    def __init__(self, tokenizer):
        texts = token_surfaces(tokenizer)
        special = set(tokenizer.all_special_ids)
        v = len(texts)
        self.eos = tokenizer.eos_token_id
        self.texts = texts
        d, sd, sp, sc, ssc, w, ws = ([False] * v for _ in range(7))
        val, ndig, lead0 = [0] * v, [0] * v, [False] * v
        for i, t in enumerate(texts):
            if i in special or not t:
                continue
            body = t[1:] if t.startswith(" ") else t
            if body and body.isascii() and body.isdigit() and len(body) <= _MAX_DIGITS:
                (sd if t.startswith(" ") else d)[i] = True
                val[i], ndig[i], lead0[i] = int(body), len(body), body.startswith("0") and len(body) > 1
            elif t == " ":
                sp[i] = True
            elif t == ";":
                sc[i] = True
            elif t == " ;":
                ssc[i] = True
            elif t.strip() and not any(c in t for c in ";\\\n\r\ufffd") and not t.startswith("  "):
                w[i] = True
                ws[i] = t.startswith(" ")
        as_t = lambda x, dt=torch.bool: torch.tensor(x, dtype=dt)  # noqa: E731
        digit_idx = [i for i in range(v) if d[i] or sd[i]]
        # One class id per token, so that a per-row [B, n_classes] table of what
        # each row may emit becomes its [B, V] mask with a single gather.
        cls_id = [BAN] * v
        for i in range(v):
            for flag, k in ((d, D), (sd, SD), (sp, SP), (sc, SC), (ssc, SSC), (w, WN)):
                if flag[i]:
                    cls_id[i] = WS if (k == WN and ws[i]) else k
        if self.eos is not None:
            cls_id[self.eos] = EOS
        self.cpu = dict(cls_id=as_t(cls_id, torch.long), digit_idx=as_t(digit_idx, torch.long),
                        digit_sd=as_t([sd[i] for i in digit_idx]),
                        val=as_t([val[i] for i in digit_idx], torch.long),
                        ndig=as_t([ndig[i] for i in digit_idx], torch.long),
                        lead0=as_t([lead0[i] for i in digit_idx]))
        self.none_ids = list(tokenizer(NO_EDITS, add_special_tokens=False)["input_ids"])
        self._dev: dict = {}

    def on(self, device) -> dict:
        if device not in self._dev:
            self._dev[device] = {k: t.to(device) for k, t in self.cpu.items()}
        return self._dev[device]


_CACHE: dict[str, _Classes] = {}


def _classes(tokenizer) -> _Classes:
    # Keyed by vocabulary fingerprint, not object identity: equal tokenizers
    # share the classes, and a recycled id() can never return another's.
    key = tokenizer_fingerprint(tokenizer)
    if key not in _CACHE:
        _CACHE[key] = _Classes(tokenizer)
    return _CACHE[key]


def parse_state(text: str, n: int):
    """Mode and numbers of a generated text: (mode, value, lo, start, prev_end).

    ``value`` is the number being typed (-1 if none), ``lo`` the smallest value
    it may take (in a replacement: the smallest start of a next span),
    ``start`` the current span's start, ``prev_end`` the last end.
    """
    mode, v, start, prev_end = START, -1, -1, -1
    for ch in text:
        if mode in (START, SEP_SP) and ch.isdigit():
            mode, v = NUM_S, int(ch)
        elif mode == START and ch == " ":
            mode = SEP_SP  # a leading space must be followed by the first digit
        elif mode in (NUM_S, NUM_E) and ch.isdigit():
            if v == 0:
                return INVALID, -1, 0, start, prev_end
            v = v * 10 + int(ch)
        elif mode == NUM_S and ch == " ":
            if not prev_end < v <= n and not (prev_end == -1 and v == 0):
                return INVALID, -1, 0, start, prev_end
            mode, start, v = AFTER_S, v, -1
        elif mode == AFTER_S and ch.isdigit():
            mode, v = NUM_E, int(ch)
        elif mode == NUM_E and ch in " ;":
            if not start <= v <= n:
                return INVALID, -1, 0, start, prev_end
            prev_end, v = v, -1
            mode = REPL if ch == " " else SEP
        elif mode == REPL and ch == ";":
            mode = SEP
        elif mode == REPL and ch not in "\\\n\r":
            pass
        elif mode == SEP and ch == " ":
            mode = SEP_SP
        else:
            return INVALID, -1, 0, start, prev_end
    lo = {NUM_S: prev_end + 1, AFTER_S: start, NUM_E: start, START: 0, SEP_SP: prev_end + 1,
          SEP: prev_end + 1, REPL: prev_end + 1}.get(mode, 0)
    return mode, v, lo, start, prev_end


class EditSpanGrammar(LogitsProcessor):
    """Allows only tokens that keep each row's output a valid span list for that row's source.

    Args:
        tokenizer: the model's tokenizer.
        sources: one source text per prompt (rows of a beam search map to
            ``row // num_beams``, inferred from the batch size).
        prompt_length: width of the (left-padded) prompt batch; generated text starts there.

    State is read from ``input_ids`` every step, so beams can be reordered freely.
    Rows that have emitted EOS are left unconstrained (generate pads them).
    """

    def __init__(self, tokenizer, sources: list[str], prompt_length: int):
        if isinstance(sources, str) or not sources:
            raise ValueError("`sources` must be a non-empty list of source texts")
        if not isinstance(prompt_length, int) or prompt_length < 0:
            raise ValueError(f"`prompt_length` must be an int >= 0, got {prompt_length!r}")
        self.cls = _classes(tokenizer)
        self.n_words = [len(s.split()) for s in sources]
        self.prompt_length = prompt_length

    def states(self, input_ids: torch.LongTensor):
        """Per row: (mode, value, lo, hi, none_progress) as lists."""
        rows = input_ids.shape[0]
        per = max(rows // len(self.n_words), 1)
        gen = input_ids[:, self.prompt_length :].tolist()
        out = []
        none = self.cls.none_ids
        for r, ids in enumerate(gen):
            n = self.n_words[min(r // per, len(self.n_words) - 1)]
            if self.cls.eos in ids:
                out.append((FINISHED, -1, 0, n, 0))
                continue
            k = len(ids)
            if k and ids == none[:k]:
                out.append((NONE_SEQ if k < len(none) else DONE, -1, 0, n, k))
                continue
            mode, v, lo, _, _ = parse_state("".join(self.cls.texts[i] for i in ids), n)
            out.append((mode, v, lo, n, 0))
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        st = self.states(input_ids)
        dev = scores.device
        c = self.cls.on(dev)
        v_sz = scores.shape[-1]
        mode = torch.tensor([s[0] for s in st], device=dev)[:, None]  # (B, 1)
        val = torch.tensor([s[1] for s in st], device=dev)[:, None]
        lo = torch.tensor([s[2] for s in st], device=dev)[:, None]
        hi = torch.tensor([s[3] for s in st], device=dev)[:, None]
        k_none = torch.tensor([s[4] for s in st], device=dev)

        b = len(st)
        m = mode[:, 0]
        # Number checks run on the digit tokens only ([B, Vd], Vd << V). A digit
        # token extends the number typed so far (or starts one); the result
        # must still be able to end in [lo, hi]: for some j >= 0, the interval
        # [p*10^j, p*10^j + 10^j - 1] meets [lo, hi]. No leading zeros.
        tval, tdig, lead0 = c["val"][None, :], c["ndig"][None, :], c["lead0"][None, :]  # (1, Vd)
        is_sd = c["digit_sd"][None, :]
        typing = val >= 0

        def can_end(prefix, low_bound):  # (B, Vd): some completion of `prefix` lies in [low_bound, hi]
            ok = torch.zeros(prefix.shape, dtype=torch.bool, device=dev)
            for j in range(_MAX_DIGITS + 1):
                low = prefix * 10**j
                ok |= (low <= hi) & (low + 10**j - 1 >= low_bound) & ((prefix > 0) | (j == 0))
            return ok & (prefix >= 0)

        start_digits = torch.where(lead0, -1, tval).expand(b, -1)
        extend = can_end(torch.where(typing, val * (10**tdig) + tval, -1), lo) & (val != 0)
        fresh = can_end(start_digits, lo)
        end_after_start = can_end(start_digits, val)  # " 12" right after the start number
        value_ok = typing & (val >= lo) & (val <= hi)  # (B, 1): the number may end here
        sep_ok = value_ok & (val + 1 <= hi)  # another span can still start after this end

        def is_(k):
            return (mode == k)

        digits = (is_(START) & fresh) | (is_(NUM_S) & ((~is_sd & extend) | (is_sd & value_ok & end_after_start)))
        digits |= (is_(AFTER_S) | is_(SEP_SP)) & ~is_sd & fresh
        digits |= is_(NUM_E) & ((~is_sd & extend) | (is_sd & value_ok))
        digits |= is_(REPL) | is_(FINISHED) | (is_(SEP) & is_sd & fresh)

        # What each row may emit, by token class (digits come from the mask above).
        table = torch.zeros(b, 9, dtype=torch.bool, device=dev)
        v_ok, s_ok, repl = value_ok[:, 0], sep_ok[:, 0], m == REPL
        table[:, SP] = ((m == NUM_S) | (m == NUM_E)) & v_ok | repl | (m == SEP)
        table[:, SC] = table[:, SSC] = ((m == NUM_E) & s_ok) | (repl & (lo[:, 0] <= hi[:, 0]))
        table[:, WN] = repl
        table[:, WS] = repl | ((m == NUM_E) & v_ok)
        table[:, EOS] = repl | (m == DONE) | ((m == NUM_E) & v_ok)
        table[m == FINISHED] = True

        cls_id = c["cls_id"]
        if cls_id.shape[0] < v_sz:  # scores wider than the tokenizer: padding ids are banned
            cls_id = torch.nn.functional.pad(cls_id, (0, v_sz - cls_id.shape[0]), value=BAN)
        allowed = table.gather(1, cls_id[:v_sz].expand(b, -1))  # (B, V)
        allowed.index_copy_(1, c["digit_idx"], allowed[:, c["digit_idx"]] | digits)
        none = self.cls.none_ids
        if none:
            nxt = torch.tensor(none + [none[-1]], device=dev)[k_none.clamp(max=len(none))]  # (B,)
            want = (m == NONE_SEQ) | ((m == START) & (k_none == 0))
            allowed[torch.arange(b, device=dev)[want], nxt[want]] = True
        # Never leave a row without a token: a row in no valid state may only end.
        stuck = ~allowed.any(1)
        allowed[stuck, self.cls.eos] = True
        return scores.masked_fill(~allowed, float("-inf"))
