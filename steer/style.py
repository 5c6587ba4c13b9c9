"""NGramStylePrior: adds lam times an n-gram style log-prior to the scores at every step."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from transformers import LogitsProcessor

from ngram import ArpaModel, NGramTable
from ngram.host import host_lookup, tail_of


def check_lam(lam) -> float:
    """``lam`` as a float, or a ValueError/TypeError naming it."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"`lam` must be a number, got {lam!r}")
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"`lam` must be a finite number >= 0, got {lam}")
    return lam


def check_width(width: int, vocab_size: int) -> None:
    """Refuse scores narrower than the table's vocabulary (a table built for another token space)."""
    if width < vocab_size:
        raise ValueError(
            f"scores have {width} columns but the table's vocabulary has {vocab_size} tokens: "
            "the table was built for a larger token space than this model's"
        )


def one_row_contexts(ids) -> torch.LongTensor:
    """The contexts [1, T] of one sequence of ids (a list or 1-D array), for the batched processors."""
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)).reshape(1, -1)


def pad_columns(rows: torch.Tensor, width: int) -> torch.Tensor:
    """Zero columns up to ``width``: a model whose embedding matrix is padded gets no bonus there."""
    if width > rows.shape[-1]:
        rows = torch.nn.functional.pad(rows, (0, width - rows.shape[-1]))  # (B, width)
    return rows


class NGramStylePrior(LogitsProcessor):
    """scores + lam * table.logprobs(input_ids, **prior_options), at every decoding step.

    The prior is the table's natural-log next-token estimate for each row's last
    N-1 tokens, computed in float32 on the scores' device; the result has the
    scores' dtype. No state is kept between calls, so batching, left padding
    and beam reordering need no care. Columns beyond the table's vocabulary (a
    model whose embedding matrix is padded) get no bonus. -inf scores stay -inf.

    Args:
        table: an :class:`ngram.NGramTable` built in the model's token space.
        lam: weight of the prior, finite and >= 0 (the seed paper sweeps [0, 1]);
            0 leaves the scores unchanged.
        tokenizer: if given, the table must have been built with it.
        compile: run the table lookup through ``torch.compile(fullgraph=True)``
            (compiled once per device and batch size, on first use; needs a C++
            compiler on a CPU). Same values; fewer kernel launches per step.
        **prior_options: ``weights``, ``alpha``, ``mode``, ``order``,
            ``smoothing``, ``discount``, as in :meth:`ngram.NGramTable.logprobs`.

    Example:
        >>> import torch
        >>> from ngram import NGramTable
        >>> table = NGramTable.from_token_ids([[1, 2, 3, 2, 3]], vocab_size=5, order=2)
        >>> prior = NGramStylePrior(table, lam=1.0, smoothing="kneser_ney")
        >>> scores = torch.zeros(1, 5)                    # the model has no preference
        >>> prior(torch.tensor([[1, 2]]), scores).argmax(-1)  # the corpus follows 2 with 3
        tensor([3])
        >>> torch.equal(NGramStylePrior(table, lam=0.0)(torch.tensor([[1, 2]]), scores), scores)
        True
        >>> model.generate(**inputs, logits_processor=LogitsProcessorList([prior]))  # doctest: +SKIP

        Left padding puts pad ids into the context of short prompts; the prior
        then falls back to lower orders for those rows (no error).
    """

    def __init__(self, table: NGramTable, lam: float, tokenizer=None, compile: bool = False, **prior_options):
        if not isinstance(table, (NGramTable, ArpaModel)):
            raise TypeError(f"`table` must be an ngram.NGramTable or ngram.ArpaModel, got {type(table).__name__}")
        if not isinstance(compile, bool):
            raise TypeError(f"`compile` must be True or False, got {compile!r}")
        self.table = table
        self.lam = check_lam(lam)
        if isinstance(table, ArpaModel):  # an ARPA file holds its own estimate: nothing to choose
            if prior_options or compile:
                raise ValueError(f"an ARPA model takes no prior options or compile, got {sorted(prior_options)}"
                                 f"{' and compile' if compile else ''}")
            self.options = None
        else:
            self.options = table.options(**prior_options)
        self.compile = compile
        self._plans: dict = {}  # device -> the table's step plan for these options
        self._compiled: dict = {}  # device -> plan.step compiled
        if tokenizer is not None:
            table.check_tokenizer(tokenizer)

    def prior(self, input_ids: torch.LongTensor, width: int) -> torch.Tensor:
        """The style log-prior for every row, float32 [B, width] (zeros past the table's vocab)."""
        check_width(width, self.table.vocab_size)
        if self.options is None:  # an ARPA model: its backoff rows
            return pad_columns(self.table.logprobs(input_ids), width)
        self.table.check_contexts(input_ids)  # type and shape; out-of-range ids never match (no host sync)
        plan = self._plans.get(input_ids.device)
        if plan is None:  # once per device: a decode step then goes straight to the lookup
            plan = self._plans[input_ids.device] = self.table.plan(self.options, input_ids.device)
        host = host_lookup(plan) if input_ids.shape[0] == 1 and not self.compile else None
        if host is not None:  # one row on the CPU: the same values with a few numpy ops (ngram.host)
            out = (torch.zeros if width > self.table.vocab_size else torch.empty)(1, width)
            host.row(tail_of(input_ids[0], plan.width), out[:, : self.table.vocab_size].numpy())
            return out
        if self.compile and plan.orders:
            if plan.device not in self._compiled:
                self._compiled[plan.device] = torch.compile(plan.step, fullgraph=True, dynamic=False)
            # A fresh [B, N-1] copy: the slice's stride and offset change with the length
            # (even when a single row makes it "contiguous"), which would recompile.
            tail = plan.tail(input_ids).clone(memory_format=torch.contiguous_format)
            return pad_columns(self._compiled[plan.device](tail), width)
        return pad_columns(plan(input_ids), width)

    def add_to(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Steer float32 ``scores`` in place, to the values :meth:`__call__` returns; returns ``scores``.

        For engines that let a processor edit their logits (vLLM, llama.cpp): no [B, V] result is
        allocated. ``add_`` runs the same kernel as ``torch.add(scores, prior, alpha=lam)``.
        """
        if scores.dtype != torch.float32:
            raise TypeError(f"`scores` must be float32 to be steered in place, got {scores.dtype}")
        if self.lam == 0:
            return scores
        return scores.add_(self.prior(input_ids, scores.shape[-1]), alpha=self.lam)

    @property
    def rows_on_host(self) -> bool:
        """Whether :meth:`add_to_row` steers a row with numpy alone (no torch op)."""
        return self.lam == 0 or self._row_lookup is not None

    @functools.cached_property
    def _row_lookup(self):
        """The one-context lookup of the table on the CPU (:mod:`ngram.host`), or None where it does not
        serve it; found once, not on every token."""
        return host_lookup(self.table.plan(self.options, "cpu")) if self.options is not None else None

    def add_to_row(self, ids, row: np.ndarray) -> np.ndarray:
        """Steer one row of float32 logits, a numpy array of any stride, in place; returns ``row``.

        ``ids`` is the sequence so far (a list or 1-D array; its last N-1 ids are read). For engines
        that call a processor once per token with numpy arrays (llama.cpp), where a few batched torch
        ops cost most of the call: the prior is :meth:`prior`'s row bit for bit (:mod:`ngram.host`),
        added as ``row + (lam * prior)``. numpy has no fused multiply-add, so a logit may differ from
        :meth:`add_to`'s by one rounding. Tables the host lookup does not serve (the mixture, an ARPA
        model) go through :meth:`add_to`.
        """
        if self.lam == 0:
            return row
        host = self._row_lookup
        if host is None:
            self.add_to(one_row_contexts(ids), torch.from_numpy(row).unsqueeze(0))  # reads the row once
            return row
        v = self.table.vocab_size
        check_width(row.shape[0], v)
        prior = host.row(tail_of(ids, host.width), np.empty((1, v), np.float32))[0]
        prior *= np.float32(self.lam)
        row[:v] += prior
        return row

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.lam == 0:
            return scores.clone()
        prior = self.prior(input_ids, scores.shape[-1])  # a fresh tensor: the result is written over it
        # (a [B, V] allocation fewer: at 16 rows of Gemma 3's 262,144 columns, 2.0 -> 1.6 ms a call)
        if scores.dtype == torch.float32:
            return torch.add(scores, prior, alpha=self.lam, out=prior)
        return torch.add(scores.float(), prior, alpha=self.lam, out=prior).to(scores.dtype)
