"""Training the prefix attribute model on the model's own outputs, labelled by the attribute functions."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from scipy.stats import rankdata

from steer import checks
from steer.conditional.beam import HiddenStateTap
from steer.conditional.head import PrefixHead
from steer.degeneracy import Degeneracy
from steer.generation import DecodeConfig, continue_prompts

# Fewer held-out prefixes than this in either class makes the report warn.
MIN_HELDOUT_PER_CLASS = 20


@dataclass
class AttrTrainConfig:
    """How training data is made and the head trained.

    Attributes:
        max_new_tokens: length of the continuations generated as training data.
        samples: sampled continuations per prompt (pure sampling, seeds seed..).
        beams: beam widths whose best continuation is also used (1 = greedy).
        hidden, epochs, lr, batch_size: the head and its Adam training.
        heldout: fraction of prompts kept out for the reported accuracy and AUC.
        chunk: prompts generated per batch.
        degeneracy: thresholds of the attributes (fields of Degeneracy).
    """

    max_new_tokens: int = 40
    samples: int = 2
    beams: list[int] = field(default_factory=lambda: [1, 5])
    hidden: int = 64
    epochs: int = 4
    lr: float = 3e-3
    batch_size: int = 512
    heldout: float = 0.2
    chunk: int = 64
    seed: int = 0
    degeneracy: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("max_new_tokens", "hidden", "epochs", "batch_size", "chunk"):
            v = getattr(self, name)
            checks.integer(name, v, low=1)
        if not isinstance(self.samples, int) or self.samples < 0:
            raise ValueError(f"`samples` must be an int >= 0, got {self.samples!r}")
        if any(not isinstance(b, int) or b < 1 for b in self.beams):
            raise ValueError(f"`beams` must be ints >= 1, got {self.beams!r}")
        if self.samples == 0 and not self.beams:
            raise ValueError("no training data: `samples` is 0 and `beams` is empty")
        if not 0 <= self.heldout < 1:
            raise ValueError(f"`heldout` must lie in [0, 1), got {self.heldout}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`lr` must be a finite number > 0, got {self.lr}")
        Degeneracy(**self.degeneracy)


@dataclass
class Examples:
    """Prefix examples: the hidden state before each next token, the token, the final label."""

    states: torch.Tensor  # float [N, d_model]
    tokens: torch.Tensor  # long [N]
    labels: torch.Tensor  # float [N], 1 = the final output is not degenerate
    prompt: torch.Tensor  # long [N], index of the prompt (for held-out splits)


@torch.no_grad()
def collect_examples(model, tokenizer, prompts: list[str], config: AttrTrainConfig,
                     progress: Callable[[str], None] | None = None) -> tuple[Examples, dict]:
    """Generate continuations of ``prompts``, label them, and read the states of every prefix.

    Returns:
        (examples, stats) with stats the degenerate rate of each decoding.
    """
    deg = Degeneracy(**config.degeneracy)
    eos = tokenizer.eos_token_id
    runs = [DecodeConfig(config.max_new_tokens, "sample", seed=config.seed + s) for s in range(config.samples)]
    runs += [DecodeConfig(config.max_new_tokens, "greedy" if b == 1 else "beam", num_beams=b, seed=config.seed)
             for b in config.beams]
    states, tokens, labels, owner = [], [], [], []
    stats = {}
    for run in runs:
        name = "sample" if run.decoding == "sample" else f"beam{run.num_beams}"
        n_deg = 0
        for c0 in range(0, len(prompts), config.chunk):
            chunk = prompts[c0 : c0 + config.chunk]
            p_ids, conts = continue_prompts(model, tokenizer, chunk, (), run)
            ok = ~deg.is_degenerate(p_ids, conts)
            n_deg += int((~ok).sum())
            seqs = []
            for p, c in zip(p_ids, conts, strict=True):
                ended = len(c) < config.max_new_tokens and eos is not None
                seqs.append((p, list(c) + ([eos] if ended else [])))
            h, nxt, which = prefix_states(model, seqs)
            states.append(h)
            tokens.append(nxt)
            labels.append(ok[which].float())
            owner.append(which + c0)
            if progress:
                progress(f"{name}: {c0 + len(chunk)}/{len(prompts)} prompts")
        stats[name] = n_deg / len(prompts)
    ex = Examples(torch.cat(states), torch.cat(tokens), torch.cat(labels), torch.cat(owner))
    return ex, stats


@torch.no_grad()
def prefix_states(model, seqs: list[tuple[list[int], list[int]]], batch_size: int = 32):
    """For each (prompt, continuation): the LM-head input before every continuation token.

    Returns:
        (states float [N, d_model], next tokens long [N], sequence index long [N]).
    """
    device = next(model.parameters()).device
    hs, toks, which = [], [], []
    with HiddenStateTap(model) as tap:
        for b0 in range(0, len(seqs), batch_size):
            part = seqs[b0 : b0 + batch_size]
            full = [p + c for p, c in part]
            width = max(len(s) for s in full)
            ids = torch.zeros(len(full), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(full):  # right padding
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            st = tap.states.float().cpu()  # (b, width, d)
            for i, (p, c) in enumerate(part):
                if not c:
                    continue
                pos = torch.arange(len(p) - 1, len(p) - 1 + len(c))  # state before each cont token
                hs.append(st[i, pos])
                toks.append(torch.tensor(c))
                which.append(torch.full((len(c),), b0 + i))
    if not hs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(hs), torch.cat(toks), torch.cat(which)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg)); NaN if one class is absent."""
    pos = int(labels.sum())
    neg = int(labels.numel() - pos)
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = torch.from_numpy(rankdata(scores.numpy()))
    return float((ranks[labels.bool()].sum() - pos * (pos + 1) / 2) / (pos * neg))


def heldout_report(logit: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy, majority-class accuracy and AUC of held-out predictions, per-class counts and a warning.

    AUC is None (not NaN) when the held-out prefixes are all of one class; a
    ``heldout_warning`` says so, or that the rarer class has fewer than
    MIN_HELDOUT_PER_CLASS examples.
    """
    n_pos = int(y.sum())
    n_neg = int(y.numel()) - n_pos
    report = {"heldout_examples": int(y.numel()), "heldout_not_degenerate": n_pos, "heldout_degenerate": n_neg,
              "heldout_accuracy": float(((logit > 0).float() == y).float().mean()),
              "heldout_majority_accuracy": float(max(y.mean(), 1 - y.mean())),
              "heldout_auc": None if min(n_pos, n_neg) == 0 else auc(logit, y)}
    if min(n_pos, n_neg) == 0:
        report["heldout_warning"] = (
            f"the held-out prefixes are all of one class ({n_pos} not degenerate, {n_neg} degenerate), "
            "so AUC is undefined and accuracy says little; hold out more prompts (`heldout`) or give more")
    elif min(n_pos, n_neg) < MIN_HELDOUT_PER_CLASS:
        report["heldout_warning"] = (
            f"only {min(n_pos, n_neg)} held-out prefixes of the rarer class: the figures are rough; "
            "hold out more prompts (`heldout`) or give more")
    return report


def fit_head(model, ex: Examples, config: AttrTrainConfig, train_mask: torch.Tensor) -> PrefixHead:
    """Adam on the class-balanced logistic loss over the examples in ``train_mask``."""
    torch.manual_seed(config.seed)
    emb = model.get_input_embeddings().weight.detach().float().cpu()
    head = PrefixHead(ex.states.shape[1], emb.shape[1], config.hidden)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    idx = torch.nonzero(train_mask).flatten()
    y = ex.labels[idx]
    pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - pos) / pos) if pos > 0 else torch.tensor(1.0)
    gen = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        perm = idx[torch.randperm(len(idx), generator=gen)]
        for b0 in range(0, len(perm), config.batch_size):
            sel = perm[b0 : b0 + config.batch_size]
            logit = head.logits(ex.states[sel], emb[ex.tokens[sel]][:, None, :])[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, ex.labels[sel], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval().requires_grad_(False)


def train_attribute_model(model, tokenizer, prompts: list[str], config: AttrTrainConfig | None = None,
                          progress: Callable[[str], None] | None = None) -> tuple[PrefixHead, dict]:
    """Train P(not degenerate | prompt, prefix, next token) on the model's own outputs.

    The prompts are split (by prompt) into training and held-out parts; the
    report gives held-out accuracy and AUC of the prefix predictions, then the
    returned head is refitted on all prompts.

    Returns:
        (head, report).
    """
    config = config or AttrTrainConfig()
    if isinstance(prompts, str) or len(prompts) < 2:
        raise ValueError("`prompts` must be a list of at least 2 prompts")
    for i, p in enumerate(prompts):
        if not tokenizer(p, add_special_tokens=False)["input_ids"]:
            raise ValueError(f"`prompts[{i}]` ({p!r}) tokenises to nothing")
    ex, stats = collect_examples(model, tokenizer, prompts, config, progress)
    if ex.labels.numel() == 0:
        raise ValueError("no training examples: every continuation was empty")
    order = list(range(len(prompts)))
    random.Random(config.seed).shuffle(order)
    n_held = int(round(config.heldout * len(prompts)))
    held = torch.zeros(len(prompts), dtype=torch.bool)
    held[order[:n_held]] = True
    test = held[ex.prompt]
    report = {"n_prompts": len(prompts), "n_examples": int(ex.labels.numel()),
              "not_degenerate_rate": float(ex.labels.mean()), "degenerate_rate_by_decoding": stats,
              "config": asdict(config)}
    emb = model.get_input_embeddings().weight.detach().float().cpu()
    if n_held and bool(test.any()) and bool((~test).any()):
        head = fit_head(model, ex, config, ~test)
        with torch.no_grad():
            logit = head.logits(ex.states[test], emb[ex.tokens[test]][:, None, :])[:, 0]
        report.update(heldout_report(logit, ex.labels[test]))
    head = fit_head(model, ex, config, torch.ones_like(test))
    head.meta = report
    return head, report
