"""Steering variants beyond the paper's injection: contrastive, plausibility-bounded, entropy-gated, KL-budgeted.

All of them add a per-token *bonus* b(w | h) from n-gram tables to the model's
scores, at a per-row strength; they differ in what the bonus is, where it
applies and how strong it is. :class:`GuidedStylePrior` composes the options;
:class:`steer.style.NGramStylePrior` stays exactly the seed paper's injection.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch
from transformers import LogitsProcessor

from ngram import ContrastPlan, NGramTable, last_ids
from ngram.host import host_lookup, tail_of
from steer import checks
from steer.repetition import followers
from steer.style import check_lam, check_width, one_row_contexts, pad_columns

Strength = Literal["constant", "entropy", "kl"]
STRENGTHS = ("constant", "entropy", "kl")
KL_BISECTION_STEPS = 12
# ``temper``: the per-row temperature is searched in [1 / TEMPER_MAX, TEMPER_MAX] on a log scale.
TEMPER_MAX = 4.0
TEMPER_BISECTION_STEPS = 12


def _finite_positive(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    return checks.number(name, value, 0, low_open=True)


# From this many rows a CPU call of the plausible variant looks its bonus up on the support only
# (contrastive+plausible on SmolLM2's vocabulary, warm, 2 threads: 0.65 ms against 0.84 ms dense at 4 rows,
# 0.78 against 1.76 at 8, 1.0-1.3 against 7.1 at 16; 0.57 against 0.42 at 1 row).
SPARSE_MIN_ROWS = 4


class GuidedStylePrior(LogitsProcessor):
    """scores + lam_t * where(support, b, 0), with the bonus b, the support and lam_t set by the options.

    With s the scores (logits) of a row, p = softmax(s) the model's next-token
    distribution, V the vocabulary and h the row's last N-1 tokens:

    * **bonus** b(w) = log p_style(w | h), or, with a ``background`` table,
      the contrastive b(w) = log p_style(w | h) - log p_background(w | h) (how
      much more the style uses w than ordinary text does; DExperts' expert
      minus anti-expert). Both are interpolated Kneser-Ney (discount D) in the
      steered model's token space. With ``clip`` c: b = min(max(b, -c), c).
      With ``fresh`` n: b(w) = min(b(w), 0) where (last n-1 tokens, w) is an
      n-gram the row already holds (prompt included): the style is rewarded
      once per n-gram, never for repeating it (the model may still repeat it
      on its own; a penalty stays).
    * **support**: all tokens, or with ``plausibility`` alpha only the
      plausible ones, p(w) >= alpha * max_w p(w), i.e. s(w) >= max s + log alpha
      (contrastive decoding's adaptive plausibility constraint); the other
      tokens keep their scores. With ``centre``, the bonus on the support is
      b(w) - m, m = sum_{v in S} p(v) b(v) / sum_{v in S} p(v): zero on average
      under the model there, so a bonus that is never positive (log p_style)
      reorders the plausible tokens instead of pushing them all below the rest.
      With ``mask``, the tokens outside the support get -inf instead (as
      contrastive decoding does): only plausible tokens can be drawn, for any
      lam > 0.
    * **strength** lam_t per row and step:
      ``"constant"``: lam;
      ``"entropy"``: lam * H(p) / log V (steer where the model is unsure);
      ``"kl"``: the largest lam_t in [0, lam] with KL(p_t || p) <= ``kl_budget``
      (epsilon, nats), where p_t = softmax(s + lam_t * where(support, b, 0)).
      KL(p_t || p) grows with lam_t (its derivative is lam_t Var_{p_t}(b) >= 0),
      so a fixed number (12) of vectorised bisection steps finds lam_t to
      within lam / 4096; a row whose KL at lam stays within the budget gets lam.
    * **temper** (optional): the steered scores o (after the support's mask)
      are divided by a per-row temperature tau, the largest in [1/4, 4] with
      H(softmax(o / tau)) <= H(p): the steered distribution is no more
      certain than the model's own at that step (H grows with tau, so 12
      bisection steps on log tau find it to within a factor 1.0007; a row
      already more uncertain than the model at tau = 1/4 gets 1/4, one that
      stays more certain at tau = 4 gets 4). It moves where the mass goes, not
      how spread it is. With ``mask`` the support is often too small to reach
      the model's entropy even flat, and tau is then the cap: a temperature of
      4 on the plausible set. The argmax is unchanged: greedy decoding is unaffected.

    With a background table both estimates come from one joint lookup
    (:class:`ngram.lookup.ContrastPlan`) where the tables allow it (same
    number of orders, exact keys), else from two.

    lam = 0 returns the scores unchanged (a copy). -inf scores stay -inf;
    columns beyond the tables' vocabulary (a padded embedding matrix) get no
    bonus. No state is kept between calls, no host sync and no Python loop
    over rows: beam reordering and batching need no care.

    Args:
        table: the style table (:class:`ngram.NGramTable`).
        lam: strength (the maximum strength for ``strength="kl"``), finite and >= 0.
        background: optional table of ordinary text with the same vocabulary
            (e.g. of the manifest's ``background`` corpus): makes the bonus contrastive.
        clip: optional c > 0, clip the bonus to [-c, c].
        plausibility: optional alpha in (0, 1], restrict the bonus to plausible tokens.
        centre: centre the bonus over the support (needs ``plausibility``).
        mask: set the scores outside the support to -inf (needs ``plausibility``).
        temper: match the steered distribution's entropy to the model's (above).
        fresh: optional n >= 1, no positive bonus for a token that repeats an n-gram of the row (above).
        strength: "constant", "entropy" or "kl".
        kl_budget: epsilon > 0 in nats, required for (and only for) strength="kl".
        discount: Kneser-Ney discount of both tables.
        tokenizer: if given, both tables must have been built with it.

    Example:
        >>> import torch
        >>> style = NGramTable.from_token_ids([[1, 2, 3, 2, 3]], vocab_size=5, order=2)
        >>> books = NGramTable.from_token_ids([[1, 2, 4, 2, 4]], vocab_size=5, order=2)
        >>> prior = GuidedStylePrior(style, lam=2.0, background=books, plausibility=0.1)
        >>> scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])  # 3 and 4 equally plausible after 2
        >>> prior(torch.tensor([[1, 2]]), scores)  # the style's 3 up, the books' 4 down; the rest untouched
        tensor([[ 0.0000,  0.0000,  0.0000,  6.8355, -4.8355]])
        >>> prior = GuidedStylePrior(style, lam=4.0, background=books, plausibility=0.1,
        ...                          strength="kl", kl_budget=0.05)  # doctest: +SKIP
        >>> model.generate(**inputs, logits_processor=[prior])  # doctest: +SKIP
    """

    def __init__(self, table: NGramTable, lam: float, background: NGramTable | None = None,
                 clip: float | None = None, plausibility: float | None = None, strength: str = "constant",
                 kl_budget: float | None = None, discount: float = 0.75, tokenizer=None, centre: bool = False,
                 mask: bool = False, temper: bool = False, fresh: int | None = None):
        if not isinstance(table, NGramTable):
            raise TypeError(f"`table` must be an ngram.NGramTable, got {type(table).__name__}")
        if background is not None:
            if not isinstance(background, NGramTable):
                raise TypeError(f"`background` must be an ngram.NGramTable, got {type(background).__name__}")
            if background.vocab_size != table.vocab_size:
                raise ValueError(f"`background` has vocabulary {background.vocab_size}, the style table "
                                 f"{table.vocab_size}: build both with the steered model's tokenizer")
            if table.fingerprint and background.fingerprint and table.fingerprint != background.fingerprint:
                raise ValueError("`background` was built with another tokenizer than the style table")
        self.table, self.background = table, background
        self.lam = check_lam(lam)
        self.clip = _finite_positive("clip", clip)
        self.plausibility = None if plausibility is None else checks.number("plausibility", plausibility, 0, 1,
                                                                              low_open=True)
        if not isinstance(centre, bool):
            raise TypeError(f"`centre` must be True or False, got {centre!r}")
        if centre and self.plausibility is None:
            raise ValueError("`centre` applies to a support: give `plausibility` too (over all tokens it "
                             "would only shift each row by a constant)")
        self.centre = centre
        if not isinstance(mask, bool):
            raise TypeError(f"`mask` must be True or False, got {mask!r}")
        if mask and self.plausibility is None:
            raise ValueError("`mask` applies to a support: give `plausibility` too")
        self.mask = mask
        if not isinstance(temper, bool):
            raise TypeError(f"`temper` must be True or False, got {temper!r}")
        self.temper = temper
        self.fresh = None if fresh is None else checks.integer("fresh", fresh, low=1)  # an n-gram order
        if strength not in STRENGTHS:
            raise ValueError(f"`strength` must be one of {STRENGTHS}, got {strength!r}")
        self.strength = strength
        if strength == "kl":
            self.kl_budget = _finite_positive("kl_budget", kl_budget, allow_none=False)
        elif kl_budget is not None:
            raise ValueError(f"`kl_budget` applies only with strength='kl', got strength={strength!r}")
        else:
            self.kl_budget = None
        self.options = table.options(smoothing="kneser_ney", discount=discount)
        self._pairs: dict = {}  # device -> both tables' joint lookup (or None where they do not combine)
        if tokenizer is not None:
            table.check_tokenizer(tokenizer)
            if background is not None:
                background.check_tokenizer(tokenizer)

    def bonus(self, input_ids: torch.LongTensor, width: int) -> torch.Tensor:
        """The bonus b for every row, float32 [B, width] (zeros past the tables' vocabulary)."""
        check_width(width, self.table.vocab_size)
        pair = self._pair(input_ids.device) if self.background is not None else None
        host = self._host_for(input_ids)
        if host is not None:  # one row on the CPU: the same values with a few numpy ops (ngram.host)
            est = host.row(tail_of(input_ids[0], host.width),
                           np.empty((host.tables, self.table.vocab_size), np.float32))
            b = torch.from_numpy(est[0] - est[1] if host.tables == 2 else est[0]).unsqueeze(0)  # (1, V)
        elif pair is not None and pair.windows_fit(input_ids.shape[0]):
            both = pair(input_ids)  # (B, 2, V): style and background in one lookup
            b = both[:, 0] - both[:, 1]
        else:
            # validate=False: no host sync per step; out-of-range ids never match.
            b = self.table.logprobs_with(input_ids, self.options, validate=False)  # (B, V)
            if self.background is not None:
                b = b - self.background.logprobs_with(input_ids, self.options, validate=False)  # (B, V)
        if self.clip is not None:
            b = b.clamp(-self.clip, self.clip)
        b = pad_columns(b, width)
        return b if self.fresh is None else self._unrewarded(input_ids, b)

    def _unrewarded(self, input_ids: torch.LongTensor, b: torch.Tensor) -> torch.Tensor:
        """``b`` [B, width] with min(b, 0) at every token that would repeat an n-gram (n = fresh) of its row."""
        if input_ids.shape[1] < self.fresh:
            return b  # no n-gram yet
        nxt, match = followers(input_ids, self.fresh)  # (B, W) each
        # amin-scatter 0 where the token repeats an n-gram, +inf elsewhere: b -> min(b, 0) there,
        # unchanged everywhere else; duplicate ids agree. A [B, W] scatter, no [B, V] mask.
        cap = torch.where(match, 0.0, float("inf")).to(b.dtype)
        return b.scatter_reduce(1, nxt.clamp(max=b.shape[-1] - 1), cap, reduce="amin")

    def _pair(self, device: torch.device) -> ContrastPlan | None:
        if device not in self._pairs:
            self._pairs[device] = ContrastPlan.combine(self.table.plan(self.options, device),
                                                       self.background.plan(self.options, device))
        return self._pairs[device]

    def support_bonus(self, input_ids: torch.LongTensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The bonus at given (row, token) pairs only, float32 [P]: ``bonus(...)[rows, cols]`` by point queries.

        Tokens past the tables' vocabulary (a padded embedding) get 0, as in :meth:`bonus`.
        """
        inside = cols < self.table.vocab_size
        w = cols.clamp(max=self.table.vocab_size - 1)
        pair = self._pair(input_ids.device) if self.background is not None else None
        if pair is not None:
            both = pair.score(last_ids(input_ids, pair.width)[rows], w)  # (P, 2): both tables in one pass
            b = both[:, 0] - both[:, 1]
        else:
            plan = self.table.plan(self.options, input_ids.device)
            tail = plan.tail(input_ids)[rows]  # (P, N-1): each pair's context
            b = plan.score(tail, w)  # (P,)
            if self.background is not None:
                bg = self.background.plan(self.options, input_ids.device)
                bg_tail = tail if bg.width == plan.width else bg.tail(input_ids)[rows]  # same order: one gather
                b = b - bg.score(bg_tail, w)
        if self.clip is not None:
            b = b.clamp(-self.clip, self.clip)
        b = torch.where(inside, b, 0.0)
        if self.fresh is not None and input_ids.shape[1] >= self.fresh:
            # The dense path's cap at the pairs only: does token cols[p] follow row rows[p]'s context
            # somewhere? A [P, W] compare (a few pairs per row, W ~ the row's length), no [B, V] mask.
            nxt, match = followers(input_ids, self.fresh)  # (B, W) each
            repeat = ((nxt[rows] == cols[:, None]) & match[rows]).any(dim=-1)  # (P,)
            b = torch.where(repeat, b.clamp(max=0.0), b)
        return b

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.lam == 0:
            return scores.clone()
        s = scores.float()
        if self._sparse_support(s):
            return self._call_on_support(input_ids, s, scores.dtype)
        b = self.bonus(input_ids, s.shape[-1])  # finite everywhere
        need_h = self.strength == "entropy" or self.temper
        # The row maxima once, for the support and the entropy.
        top = s.amax(dim=-1, keepdim=True) if self.plausibility is not None or need_h else None  # (B, 1)
        # The model's entropy per row, for the entropy gate and the temper (once for both).
        h = entropy(s, top) if need_h else None
        if self.plausibility is not None:
            # p(w) >= alpha max p  <=>  s(w) >= max s + log alpha: no softmax needed.
            support = s >= top + math.log(self.plausibility)  # (B, V)
            if self.centre:
                q = torch.where(support, (s - top).exp(), 0.0)  # p on the support, unnormalised (max 1)
                b = b - torch.linalg.vecdot(q, b).unsqueeze(-1) / q.sum(dim=-1, keepdim=True)
            b = torch.where(support, b, 0.0)
        if self.strength == "constant":  # -inf + lam * b stays -inf; b is fresh: written over
            out = torch.add(s, b, alpha=self.lam, out=b)
        else:
            if self.strength == "kl":
                # -inf scores would turn 0 * b into nan in the KL sums; they get no bonus and stay -inf.
                b = torch.where(torch.isneginf(s), 0.0, b)
            lam_t, scale = self._strength(s, b, h)
            out = torch.addcmul(s, lam_t, b, value=scale)  # s + scale * lam_t * b
        if self.mask:
            out = out.masked_fill(~support, float("-inf"))
        if self.temper:
            out = out / temperature_for_entropy(out, h)
        return out if scores.dtype == torch.float32 else out.to(scores.dtype)

    def add_to(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Steer float32 ``scores`` in place, to the values :meth:`__call__` returns; returns ``scores``.

        For engines that let a processor edit their logits (vLLM, llama.cpp). On a CPU the
        constant-strength plausible variant (without mask, centre or temper) changes the scores on
        its support only, so it reads the rows' maxima, looks the bonus up at the support's pairs and
        writes just those: no [B, V] copy, lookup or write. Elsewhere the result is copied in.
        """
        if scores.dtype != torch.float32:
            raise TypeError(f"`scores` must be float32 to be steered in place, got {scores.dtype}")
        if self.lam == 0:
            return scores
        if self._on_support() and scores.device.type == "cpu":
            check_width(scores.shape[-1], self.table.vocab_size)
            host = self._host_for(input_ids) if self.fresh is None else None
            if host is not None:
                return self._add_on_support_host(host, input_ids, scores)
            rows, cols, _ = support_pairs(scores, math.log(self.plausibility))
            # s + lam * b at the support, as the dense path's torch.add(s, b, alpha=lam) computes it.
            scores[rows, cols] = torch.add(scores[rows, cols], self.support_bonus(input_ids, rows, cols),
                                           alpha=self.lam)
            return scores
        return scores.copy_(self(input_ids, scores))

    @functools.cached_property
    def _host(self):
        """The one-context lookup of the bonus's table(s) on the CPU (:mod:`ngram.host`), or None where it
        does not serve them; found once (the tables' plans and their pair do not change)."""
        cpu = torch.device("cpu")
        if self.background is None:
            return host_lookup(self.table.plan(self.options, cpu))
        pair = self._pair(cpu)
        return None if pair is None else host_lookup(pair)

    def _host_for(self, input_ids: torch.LongTensor):
        """:meth:`_host` for one row on the CPU, else None (batches keep the batched step)."""
        return self._host if input_ids.shape[0] == 1 and input_ids.device.type == "cpu" else None

    def _support_on_host(self, host, ids, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plausible support of one row ``s`` and the bonus there, (cols [k], b float32 [k]), with
        numpy control flow (:mod:`ngram.host`): the pairs and values of support_pairs and support_bonus."""
        # s >= max s + log alpha, in float32 as support_pairs compares.
        cols = np.flatnonzero(s >= s.max() + np.float32(math.log(self.plausibility)))
        v = self.table.vocab_size
        est = host.values(tail_of(ids, host.width), np.minimum(cols, v - 1))  # (k, 1 or 2)
        b = est[:, 0] - est[:, 1] if host.tables == 2 else est[:, 0]
        if self.clip is not None:
            b = np.clip(b, np.float32(-self.clip), np.float32(self.clip))
        return cols, np.where(cols < v, b, np.float32(0))  # past the tables' vocabulary: no bonus

    def _add_on_support_host(self, host, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """:meth:`add_to`'s support path for one row with numpy control flow: the same pairs, bonus and sums."""
        s = scores[0].numpy()  # a view: written in place
        cols, b = self._support_on_host(host, input_ids[0], s)
        # The sum by the kernel the batched path uses (torch.add with alpha), on the support's few values.
        s[cols] = torch.add(torch.from_numpy(s[cols]), torch.from_numpy(b), alpha=self.lam).numpy()
        return scores

    def _on_support(self) -> bool:
        """Whether the steering changes the plausible support only, by a constant strength."""
        return (self.plausibility is not None and self.strength == "constant"
                and not (self.centre or self.mask or self.temper))

    @property
    def rows_on_host(self) -> bool:
        """Whether :meth:`add_to_row` steers a row with numpy alone (no torch op)."""
        return self.lam == 0 or self._row_lookup is not None

    @functools.cached_property
    def _row_lookup(self):
        """The host lookup :meth:`add_to_row` uses, or None where it goes through :meth:`add_to`; found
        once, not on every token."""
        return self._host if self._on_support() and self.fresh is None else None

    def add_to_row(self, ids, row: np.ndarray) -> np.ndarray:
        """Steer one row of float32 logits, a numpy array of any stride, in place; returns ``row``.

        ``ids`` is the sequence so far (a list or 1-D array). For engines that call a processor once
        per token with numpy arrays (llama.cpp): the constant-strength plausible variant finds its
        support and looks its bonus up with numpy control flow (:mod:`ngram.host`), the same pairs and
        bonus as :meth:`add_to`, added as ``row + (lam * b)`` (numpy has no fused multiply-add, so a
        logit may differ from :meth:`add_to`'s by one rounding). The other options go through
        :meth:`add_to`.
        """
        if self.lam == 0:
            return row
        host = self._row_lookup
        if host is None:
            # These read the row several times, and a strided read costs several times a contiguous one.
            work = np.ascontiguousarray(row)
            self.add_to(one_row_contexts(ids), torch.from_numpy(work).unsqueeze(0))
            if work is not row:
                row[:] = work
            return row
        check_width(row.shape[0], self.table.vocab_size)
        cols, b = self._support_on_host(host, ids, row)
        row[cols] += np.float32(self.lam) * b
        return row

    def _sparse_support(self, s: torch.Tensor) -> bool:
        """Whether this call looks the bonus up on the plausible support only (see :meth:`_call_on_support`):
        on a CPU, from SPARSE_MIN_ROWS rows (below that the dense rows are cheaper than the extra ops)."""
        return (self.plausibility is not None and self.strength == "constant" and not self.centre
                and s.device.type == "cpu" and s.shape[0] >= SPARSE_MIN_ROWS and not torch.compiler.is_compiling())

    def _call_on_support(self, input_ids, s: torch.Tensor, dtype) -> torch.Tensor:
        """The constant-strength plausible variant with the bonus looked up only where it is added.

        Off the support the bonus is 0, so only the support's (row, token) pairs,
        usually a few per row, need the tables: point queries instead of two
        [B, V] rows. The pairs come from :func:`support_pairs` (``nonzero`` reads
        their number: free on a CPU, a host sync on an accelerator, which keeps
        the dense path). Same values as the dense path.
        """
        check_width(s.shape[-1], self.table.vocab_size)
        rows, cols, top = support_pairs(s, math.log(self.plausibility))  # (P,), (P,), (B, 1)
        # (s + lam * b) at the support, as torch.add(s, b, alpha=lam) computes it on the dense path;
        # with ``mask`` everything else is -inf, so the output starts from a fill, not a copy.
        out = torch.full_like(s, float("-inf")) if self.mask else s.clone()
        out[rows, cols] = torch.add(s[rows, cols], self.support_bonus(input_ids, rows, cols), alpha=self.lam)
        if self.temper:
            out = out / temperature_for_entropy(out, entropy(s, top))
        return out if dtype == torch.float32 else out.to(dtype)

    def _strength(self, s: torch.Tensor, b: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        """(t [B, 1], scale) with lam_t = scale * t per row (entropy-gated by the model's entropy h, or KL-budgeted)."""
        if self.strength == "entropy":
            return h, self.lam / math.log(s.shape[-1])
        logp = torch.log_softmax(s, dim=-1)  # (B, V)
        # KL budget: bisection for every row at once, a fixed number of steps. The
        # bracket [lo, lo + width] halves each step, so only lo is carried.
        top = s.new_full((s.shape[0], 1), self.lam)
        ok_at_max = kl_tilt(logp, b, top) <= self.kl_budget  # (B, 1)
        lo, width = s.new_zeros((s.shape[0], 1)), self.lam
        for _ in range(KL_BISECTION_STEPS):
            width /= 2
            mid = lo + width
            lo = torch.where(kl_tilt(logp, b, mid) <= self.kl_budget, mid, lo)
        return torch.where(ok_at_max, top, lo), 1.0


# support_pairs reads the scores in blocks of this many columns (64: the fastest of 32-256 at 1 and 16
# rows of SmolLM2's vocabulary).
SUPPORT_BLOCK = 64


def support_pairs(s: torch.Tensor, log_alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plausible support {(r, w): s[r, w] >= max s[r] + log_alpha} as row-major (rows, cols), and max s [B, 1].

    The same pairs, in the same order, as ``(s >= top + log_alpha).nonzero()``
    without a [B, V] compare or a nonzero over it (on a CPU the two cost
    ~1.5 ms at 16 rows of a 49k vocabulary, more than the lookup itself). The
    scores are read as blocks of SUPPORT_BLOCK columns: one pass takes every
    block's max (the row's max is the max of its blocks), only the blocks whose
    max reaches the threshold can hold a support token, and only those blocks
    (no more than there are pairs) are compared in full.
    """
    b, v = s.shape
    pad = -v % SUPPORT_BLOCK  # columns that fill the last block
    blocks = torch.nn.functional.pad(s, (0, pad), value=float("-inf")) if pad else s
    blocks = blocks.reshape(b, -1, SUPPORT_BLOCK)  # (B, V / block, block); a view of contiguous scores
    block_max = blocks.amax(dim=-1)  # (B, V / block)
    top = block_max.amax(dim=-1, keepdim=True)  # (B, 1)
    threshold = top + log_alpha  # (B, 1), the dense path's value
    block_rows, block_ids = (block_max >= threshold).nonzero(as_tuple=True)  # (C,) each: candidate blocks
    pick, offset = (blocks[block_rows, block_ids] >= threshold[block_rows]).nonzero(as_tuple=True)  # within them
    rows, cols = block_rows[pick], block_ids[pick] * SUPPORT_BLOCK + offset
    if pad:  # a row whose scores are all -inf takes the padding too: drop it
        inside = cols < v
        rows, cols = rows[inside], cols[inside]
    return rows, cols, top


def kl_tilt(logp: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """KL(p_lam || p) in nats per row for the tilt p_lam ∝ p exp(lam b), float [B, 1].

    KL = sum_w p_lam(w) (lam b(w) - log Z), log Z = logsumexp_w(log p(w) + lam b(w)).
    Tokens with p = 0 (-inf log p) contribute 0 (b must be 0 there).
    """
    t = torch.addcmul(logp, lam, b)  # (B, V): log p + lam b
    top = t.amax(dim=-1, keepdim=True)  # (B, 1)
    e = _exp_floored(t.sub_(top))  # (B, V): exp(t - top), -inf -> exp(EXP_FLOOR)
    total = e.sum(dim=-1, keepdim=True)  # (B, 1), >= 1
    # sum_w q (lam b - log Z) = lam E_q[b] - log Z with q = e / total, log Z = top + log total.
    return lam * torch.linalg.vecdot(e, b).unsqueeze(-1) / total - top - total.log()


def entropy(s: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
    """H(softmax(s)) in nats per row, float [B, 1]; -inf scores take no part. ``top``: max s per row, if known."""
    return _entropy_at(_shifted(s, top), 1.0)


def temperature_for_entropy(o: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the largest tau in [1/TEMPER_MAX, TEMPER_MAX] with H(softmax(o / tau)) <= target, [B, 1].

    H(softmax(o / tau)) grows with tau (see :func:`_entropy_at`). Bisection on
    u = log tau for every row at once, a fixed number of steps; only the
    bracket's low end is carried.
    """
    z = _shifted(o)
    lo = o.new_full((o.shape[0], 1), -math.log(TEMPER_MAX))
    width = 2 * math.log(TEMPER_MAX)
    for _ in range(TEMPER_BISECTION_STEPS):
        width /= 2
        inv = (-(lo + width)).exp()  # (B, 1): 1 / tau at the bracket's midpoint
        lo = torch.where(_entropy_at(z, inv) <= target, lo + width, lo)
    return lo.exp()


# On a CPU, exp(x) for x below this is raised to exp(EXP_FLOOR) ~ 1.8e-35, still a normal float32:
# there, exponentials that underflow into subnormals or zero take a slow path (~10x). A sum of at
# most V such terms (< 1e-29 for V < 1e6) is invisible next to the sums of >= 1 they are added to.
# Accelerators have no such slow path and skip the extra op.
EXP_FLOOR = -80.0


def _exp_floored(x: torch.Tensor) -> torch.Tensor:
    """exp(x), on a CPU exp(max(x, EXP_FLOOR)); in place on ``x`` (which the caller owns)."""
    if x.device.type == "cpu":
        x.clamp_(min=EXP_FLOOR)
    return x.exp_()


def _shifted(s: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
    """s - max s per row (``top``, if given), with -inf raised to -1e4 (below the exponent floor at any tau <= 4)."""
    return (s - (s.amax(dim=-1, keepdim=True) if top is None else top)).clamp_(min=-1e4)


def _entropy_at(z: torch.Tensor, inv) -> torch.Tensor:
    """H(softmax(z * inv)) per row, [B, 1], for z = :func:`_shifted` scores and inv = 1 / tau.

    With e = exp(z / tau), S = sum e and D = sum e z: H = log S - D / (tau S); one
    exponential, no overflow (z <= 0), S >= 1 (the largest score gives e = 1). A
    former -inf adds exp(EXP_FLOOR) to S and 1e4 exp(EXP_FLOOR) to |D|: nothing a
    float32 sum of >= 1 can show.
    """
    e = _exp_floored(z * inv)  # (B, V)
    total = e.sum(dim=-1, keepdim=True)  # (B, 1)
    return total.log() - inv * torch.linalg.vecdot(e, z).unsqueeze(-1) / total
