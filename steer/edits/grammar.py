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
# What makes a transition succeed, and what it does to the number being typed.
ALWAYS, END_S, END_E, NOT_LEAD0, V_NONZERO, END_S_NOT_LEAD0 = range(6)
V_CLEAR, V_TOKEN, V_EXTEND = range(3)


def _transitions():
    """The automaton on token classes: (mode, class) -> (next mode, condition, value update, sets start, sets end).

    Each entry is what the character loop of :func:`parse_state` does with a
    token of that class; a failed condition (or a missing entry) is INVALID.
    Conditions: END_S, " " may end the start number (prev_end < v <= n, or the
    0-0 span); END_E, start <= v <= n; NOT_LEAD0, the token's digits have no
    leading zero; V_NONZERO, the number typed so far is not 0.
    """
    t = {}
    for m in (START, SEP_SP):
        t[m, D] = (NUM_S, NOT_LEAD0, V_TOKEN, False, False)
    for m in (NUM_S, NUM_E):
        t[m, D] = (m, V_NONZERO, V_EXTEND, False, False)
    t[AFTER_S, D] = (NUM_E, NOT_LEAD0, V_TOKEN, False, False)
    for m in (START, SEP):
        t[m, SD] = (NUM_S, NOT_LEAD0, V_TOKEN, False, False)
        t[m, SP] = (SEP_SP, ALWAYS, V_CLEAR, False, False)
    t[NUM_S, SD] = (NUM_E, END_S_NOT_LEAD0, V_TOKEN, True, False)
    t[NUM_S, SP] = (AFTER_S, END_S, V_CLEAR, True, False)
    for k in (SD, SP, WS):
        t[NUM_E, k] = (REPL, END_E, V_CLEAR, False, True)
    for k in (SC, SSC):
        t[NUM_E, k] = (SEP, END_E, V_CLEAR, False, True)
        t[REPL, k] = (SEP, ALWAYS, V_CLEAR, False, False)
    for k in (D, SD, SP, WN, WS, BAN):  # BAN: only texts without ";", "\\" or newlines get here
        t[REPL, k] = (REPL, ALWAYS, V_CLEAR, False, False)
    table = torch.zeros(11 * 9, 5, dtype=torch.long)
    table[:, 0] = INVALID
    for (m, k), entry in t.items():
        table[m * 9 + k] = torch.tensor([int(e) for e in entry])
    return table


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
        # Tokens whose effect on a row's state the vectorised step does not
        # model (text outside the classes, or a word that starts with a digit):
        # a row that emitted one is re-read from its text.
        complex_ = [cls_id[i] == BAN or (cls_id[i] in (WN, WS) and (t[1:] if ws[i] else t)[:1].isdigit())
                    for i, t in enumerate(texts)]
        # Inside a replacement, any text without ";", a backslash or a newline stays a replacement.
        repl_safe = [bool(t) and i not in special and not any(ch in t for ch in ";\\\n\r")
                     for i, t in enumerate(texts)]
        self.cpu = dict(cls_id=as_t(cls_id, torch.long), digit_idx=as_t(digit_idx, torch.long),
                        tok_val=as_t(val, torch.long), tok_ndig=as_t(ndig, torch.long), tok_lead0=as_t(lead0),
                        complex=as_t(complex_), repl_safe=as_t(repl_safe),
                        present=as_t(sorted({k for k in cls_id if k != BAN}), torch.long),
                        transitions=_transitions(), pow10=as_t([10**j for j in range(_MAX_DIGITS + 1)], torch.long),
                        digit_sd=as_t([sd[i] for i in digit_idx]),
                        val=as_t([val[i] for i in digit_idx], torch.long),
                        ndig=as_t([ndig[i] for i in digit_idx], torch.long),
                        lead0=as_t([lead0[i] for i in digit_idx]))
        self.none_ids = list(tokenizer(NO_EDITS, add_special_tokens=False)["input_ids"])
        self.cpu["none_ids"] = as_t(self.none_ids + [-1], torch.long)  # -1: nothing continues "NONE"
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

    Each step follows every row from its parent of the previous step, found by
    content (its text minus the last token), so beams can be reordered and
    duplicated freely; where that is not possible the rows' texts are read.
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
        self._last = None  # the previous step's rows and their states, for the incremental step
        self._row_cache: dict = {}

    def _rows(self, input_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(source length n, source index) of every row; rows of a beam search map to ``row // num_beams``."""
        key = (input_ids.shape[0], input_ids.device)
        if key not in self._row_cache:
            rows = input_ids.shape[0]
            per = max(rows // len(self.n_words), 1)
            src = (torch.arange(rows) // per).clamp(max=len(self.n_words) - 1)
            self._row_cache[key] = (torch.tensor(self.n_words)[src].to(input_ids.device), src.to(input_ids.device))
        return self._row_cache[key]

    def states(self, input_ids: torch.LongTensor) -> dict:
        """Every row's state read off its generated text (the reference; O(length) Python per row).

        Returns a dict of [B] tensors: ``mode`` (parse mode), ``val``, ``start``,
        ``prev_end`` (see :func:`parse_state`), ``in_none`` / ``k_none`` (the row
        is the first k tokens of "NONE"), ``fin`` (EOS emitted).
        """
        n_words, _ = self._rows(input_ids)
        gen = input_ids[:, self.prompt_length :].tolist()
        none = self.cls.none_ids
        cols = {k: [] for k in ("mode", "val", "start", "prev_end", "in_none", "k_none", "fin")}
        for ids, n in zip(gen, n_words.tolist(), strict=True):
            k = len(ids)
            mode, v, _, start, prev_end = parse_state("".join(self.cls.texts[i] for i in ids), n)
            for key, value in (("mode", mode), ("val", v), ("start", start), ("prev_end", prev_end),
                               ("in_none", ids == none[:k]), ("k_none", k), ("fin", self.cls.eos in ids)):
                cols[key].append(value)
        dev = input_ids.device
        return {key: torch.tensor(v, device=dev, dtype=torch.bool if key in ("in_none", "fin") else torch.long)
                for key, v in cols.items()}

    def _step_states(self, input_ids: torch.LongTensor, c: dict) -> dict | None:
        """The states from the previous call's by one token per row, with tensor ops; None if not derivable.

        Each row's parent is a row of the previous call (same source) whose
        text is this row's text minus its last token: beams may be reordered or
        duplicated freely. The last token moves the parent's state as the
        character loop of :func:`parse_state` would.
        """
        last = self._last
        gen = input_ids[:, self.prompt_length :]
        if last is None or gen.shape[0] != last["gen"].shape[0] or gen.shape[1] != last["gen"].shape[1] + 1:
            return None
        n, src = self._rows(input_ids)
        same = (gen[:, None, :-1] == last["gen"][None, :, :]).all(-1) & (src[:, None] == src[None, :])  # (B, B)
        old = {k: v[same.long().argmax(1)] for k, v in last["state"].items()}  # each row's parent's state
        x = gen[:, -1]
        m = old["mode"]
        in_repl = (m == REPL) & c["repl_safe"][x]
        modelled = ~(c["complex"][x] & ~old["fin"] & (m != INVALID) & ~in_repl)
        if not bool((same.any(1) & modelled).all()):  # one host read: every row has a parent and a known token
            return None
        cls, tv, nd, l0 = c["cls_id"][x], c["tok_val"][x], c["tok_ndig"][x], c["tok_lead0"][x]
        v, st, pe = old["val"], old["start"], old["prev_end"]
        nxt, cond, update, sets_start, sets_end = c["transitions"][m * 9 + cls].unbind(1)  # (B,) each
        end_s = ((pe < v) & (v <= n)) | ((pe == -1) & (v == 0))
        end_e = (st <= v) & (v <= n)
        ok = torch.stack([torch.ones_like(end_s), end_s, end_e, ~l0, v != 0, end_s & ~l0], 1)
        ok = ok.gather(1, cond[:, None])[:, 0]
        values = torch.stack([torch.full_like(v, -1), tv, v * 10**nd + tv], 1).gather(1, update[:, None])[:, 0]
        mode2 = torch.where(ok, nxt, INVALID)
        val2 = torch.where(ok, values, -1)
        st2 = torch.where(ok & (sets_start == 1), v, st)
        pe2 = torch.where(ok & (sets_end == 1), v, pe)
        k_old = old["k_none"]
        none = c["none_ids"]
        in_none = old["in_none"] & (x == none[k_old.clamp(max=none.shape[0] - 1)])
        return dict(mode=mode2, val=val2, start=st2, prev_end=pe2, in_none=in_none, k_none=k_old + 1,
                    fin=old["fin"] | (cls == EOS))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        dev = scores.device
        c = self.cls.on(dev)
        state = self._step_states(input_ids, c)
        if state is None:
            state = self.states(input_ids)
        self._last = dict(gen=input_ids[:, self.prompt_length :], state=state)
        v_sz = scores.shape[-1]
        hi, _ = self._rows(input_ids)
        hi = hi[:, None]
        # The row's mode for the mask: finished, spelling "NONE", or its parse mode.
        none_seq = state["in_none"] & (state["k_none"] > 0)
        k_none = torch.where(none_seq, state["k_none"], 0)
        full = state["k_none"] >= len(self.cls.none_ids)
        m = torch.where(none_seq, torch.where(full, DONE, NONE_SEQ), state["mode"])
        m = torch.where(state["fin"], FINISHED, m)
        pm, pe, st = state["mode"], state["prev_end"], state["start"]
        lo = torch.where((pm == AFTER_S) | (pm == NUM_E), st, torch.where(
            (pm == NUM_S) | (pm == SEP_SP) | (pm == SEP) | (pm == REPL), pe + 1, 0))
        parse = ~none_seq & ~state["fin"]
        mode = m[:, None]  # (B, 1)
        val = torch.where(parse, state["val"], -1)[:, None]
        lo = torch.where(parse, lo, 0)[:, None]

        b = mode.shape[0]
        m = mode[:, 0]
        # Number checks run on the digit tokens only ([B, Vd], Vd << V). A digit
        # token extends the number typed so far (or starts one); the result
        # must still be able to end in [lo, hi]: for some j >= 0, the interval
        # [p*10^j, p*10^j + 10^j - 1] meets [lo, hi]. No leading zeros.
        tval, tdig, lead0 = c["val"][None, :], c["ndig"][None, :], c["lead0"][None, :]  # (1, Vd)
        is_sd = c["digit_sd"][None, :]
        typing = val >= 0

        scale = c["pow10"]  # (J,): 10**j for j = 0.._MAX_DIGITS more digits

        def can_end(prefix, low_bound):  # (B, Vd): some completion of `prefix` lies in [low_bound, hi]
            low = prefix[..., None] * scale  # (B, Vd, J): smallest number with j more digits
            ok = (low <= hi[..., None]) & (low + scale - 1 >= low_bound[..., None])
            ok &= (prefix[..., None] > 0) | (scale == 1)  # no digits after a leading 0
            return ok.any(-1) & (prefix >= 0)

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
        # The mask as an additive penalty (0 allowed, -inf banned): one gather
        # of the per-row class table and one add, the cheapest [B, V] passes.
        inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=dev)
        zero = torch.zeros((), dtype=scores.dtype, device=dev)
        digit_idx = c["digit_idx"]
        penalty = torch.where(table, zero, inf).gather(1, cls_id[:v_sz].expand(b, -1))  # (B, V)
        penalty[:, digit_idx] = torch.where(table.gather(1, cls_id[digit_idx].expand(b, -1)) | digits, zero, inf)
        none = self.cls.none_ids
        want = torch.zeros(b, dtype=torch.bool, device=dev)
        if none:
            nxt = torch.tensor(none + [none[-1]], device=dev)[k_none.clamp(max=len(none))]  # (B,)
            want = (m == NONE_SEQ) | ((m == START) & (k_none == 0))
            penalty[torch.arange(b, device=dev)[want], nxt[want]] = 0
        # Never leave a row without a token: a row in no valid state may only end.
        # (Decided on the small tables, not by scanning the [B, V] mask.)
        stuck = ~(table[:, c["present"]].any(1) | digits.any(1) | want)
        penalty[stuck, self.cls.eos] = 0
        return scores + penalty
