"""Metrics of a steered continuation: style and base perplexity, JS divergence, overlap, diversity.

All metrics score the *continuation* only (never the prompt), with the prompt as context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ngram import NGramTable


def _scored_positions(seqs: Sequence[Sequence[int]], starts: Sequence[int], width: int):
    """Every scored position's context and target, all at once.

    Returns:
        (contexts long [M, width], left-padded with -1 where a position has fewer
        than ``width`` tokens before it (matches nothing, as in the table's own
        lookup); targets long [M]; owner long [M], the sequence each came from).
    """
    ctx, tgt, owner = [], [], []
    for i, (seq, start) in enumerate(zip(seqs, starts, strict=True)):
        if start >= len(seq):
            continue
        padded = torch.tensor([-1] * width + list(seq), dtype=torch.long)
        # Window j of the padded sequence holds the `width` ids before position j.
        ctx.append(padded.unfold(0, width, 1)[start : len(seq)] if width else torch.zeros(len(seq) - start, 0,
                                                                                          dtype=torch.long))
        tgt.append(padded[width + start :])
        owner.append(torch.full((len(seq) - start,), i, dtype=torch.long))
    if not ctx:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, width, dtype=torch.long), empty, empty
    return torch.cat(ctx), torch.cat(tgt), torch.cat(owner)


def style_nll(table: NGramTable, prompts: Sequence[Sequence[int]], conts: Sequence[Sequence[int]],
              **options) -> list[float]:
    """Per sample: total NLL (nats) of the continuation under the style table, and its length.

    Every token is one point query (:meth:`ngram.NGramTable.score`), so no
    [tokens, V] rows are built. A token outside the table's vocabulary gets log V.

    Returns:
        list of (sum of -log p(y_t | prompt, y_<t), number of tokens) per sample.
    """
    seqs = [list(p) + list(c) for p, c in zip(prompts, conts, strict=True)]
    ctx, tgt, owner = _scored_positions(seqs, [len(p) for p in prompts], table.order - 1)
    opts = table.options(**options)
    inside = tgt < table.vocab_size  # a context id the table lacks simply matches nothing (validate=False)
    vals = -table.score_with(ctx, tgt.clamp(max=table.vocab_size - 1), opts, validate=False).double()
    vals = torch.where(inside, vals, math.log(table.vocab_size))
    nll = torch.zeros(len(seqs), dtype=torch.float64).index_add_(0, owner, vals)
    return [(float(n), len(c)) for n, c in zip(nll, conts, strict=True)]


def pooled_perplexity(nll: Sequence[float], counts: Sequence[float]) -> float:
    """exp(sum of NLL / sum of counts), tokens pooled over samples; NaN when nothing was scored."""
    total = sum(counts)
    return math.exp(sum(nll) / total) if total else float("nan")


def style_perplexity(table: NGramTable, prompts, conts, smoothing: str = "kneser_ney", **options) -> float:
    """exp(mean over all generated tokens of -log p_style(y_t | context)).

    The context is the prompt followed by the earlier generated tokens; p_style
    is the table's estimate, interpolated Kneser-Ney by default (a proper
    distribution, unlike the logsum prior). Tokens are pooled over samples.
    NaN if no token was generated.
    """
    per = style_nll(table, prompts, conts, smoothing=smoothing, **options)
    return pooled_perplexity([p[0] for p in per], [p[1] for p in per])


@torch.no_grad()
def base_nll(model, prompts: Sequence[Sequence[int]], conts: Sequence[Sequence[int]], batch_size: int = 16):
    """Per sample (sum of -log p_model(y_t | prompt, y_<t), length), teacher-forced, unsteered."""
    out = []
    device = next(model.parameters()).device
    for b0 in range(0, len(prompts), batch_size):
        ps, cs = prompts[b0 : b0 + batch_size], conts[b0 : b0 + batch_size]
        seqs = [list(p) + list(c) for p, c in zip(ps, cs, strict=True)]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):  # right padding: positions stay 0..len-1
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts tokens 1..width-1
        tok_lp = logp.gather(2, ids[:, 1:].to(device)[..., None])[..., 0].cpu()  # (b, width-1)
        for i, (p, c) in enumerate(zip(ps, cs, strict=True)):
            lo = len(p) - 1  # logp row predicting the first continuation token
            out.append((-float(tok_lp[i, lo : lo + len(c)].sum()), len(c)))
    return out


def base_perplexity(model, prompts, conts, batch_size: int = 16) -> float:
    """exp(mean -log p_model(y_t | prompt, y_<t)) over generated tokens, under the frozen, unsteered model."""
    per = base_nll(model, prompts, conts, batch_size)
    return pooled_perplexity([p[0] for p in per], [p[1] for p in per])


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits (base 2, in [0, 1]) between softmax rows.

    JS(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M), M = (P + Q)/2, computed in
    float64 from logits; -inf logits (masked tokens) contribute 0.

    Returns:
        float32 [B].
    """
    lp = torch.log_softmax(logits_p.double(), dim=-1)
    lq = torch.log_softmax(logits_q.double(), dim=-1)
    lm = torch.logaddexp(lp, lq) - math.log(2.0)

    def kl(la):  # sum_x a(x) (log a(x) - log m(x)), with 0 log 0 = 0
        return torch.where(torch.isneginf(la), 0.0, la.exp() * (la - lm)).sum(-1)

    js = 0.5 * (kl(lp) + kl(lq)) / math.log(2.0)
    return js.clamp(0.0, 1.0).float()


def ngram_overlap(table: NGramTable, conts: Sequence[Sequence[int]], n: int) -> float:
    """Fraction of the generated n-grams (within each continuation) that occur in the style corpus.

    Pooled over continuations; NaN when no continuation has n tokens.
    """
    grams = [c[i : i + n] for c in conts for i in range(len(c) - n + 1)]
    if not grams:
        return float("nan")
    counts = table.count_many(torch.tensor(grams, dtype=torch.long))
    return float((counts > 0).float().mean())


def distinct_n(conts: Sequence[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams, pooled over continuations."""
    grams = [tuple(c[i : i + n]) for c in conts for i in range(len(c) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def unigram_jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|set(a) & set(b)| / |set(a) | set(b)|; 1.0 when both are empty."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens two continuations share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# A baseline this close to 0 is rounding noise (JS divergence at lam = 0 is
# ~1e-17): a change relative to it would be a meaningless huge number.
RELATIVE_BASELINE_FLOOR = 1e-12


def relative_change(value: float, baseline: float) -> float:
    """(value - baseline) / baseline, as the seed paper reports (-0.247 = -24.7 %).

    NaN when either is NaN or when |baseline| < 1e-12 (a relative change
    against ~0 is noise, not a result).
    """
    if math.isnan(baseline) or math.isnan(value) or abs(baseline) < RELATIVE_BASELINE_FLOOR:
        return float("nan")
    return (value - baseline) / baseline
