"""Fine-tuning a causal LM on edit examples: loss on the target only, a weighted mix of example sets."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence

import torch

from steer import checks


def encode_examples(tokenizer, examples: Sequence[dict], prompt_key: str = "prompt",
                    target_key: str = "completion", chat: bool | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids with EOS) per example, as :func:`finetune` trains on them.

    The prompt is in the model's document format (:func:`steer.models.document_ids`, as
    :func:`steer.edits.generate.edit_generate` encodes it), through the chat template when
    ``chat`` says so (:func:`steer.edits.prompts.uses_chat`: by default whenever the tokenizer has
    one). The prompt and the target are tokenised apart, so the target's ids are exactly those a
    decoder continuing the prompt has to produce (an empty target is EOS alone; a chat model's EOS
    ends its turn).
    """
    from steer.edits.prompts import as_chat, uses_chat
    from steer.models import document_ids

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token, which ends every target")
    missing = [k for k in (prompt_key, target_key) if examples and k not in examples[0]]
    if missing:
        raise ValueError(f"examples have no {missing[0]!r} field (fields: {sorted(examples[0])})")
    texts = [ex[prompt_key] for ex in examples]
    if uses_chat(tokenizer, chat):
        texts = [as_chat(tokenizer, t) for t in texts]
    prompts = document_ids(tokenizer, texts)
    targets = tokenizer([ex[target_key] for ex in examples], add_special_tokens=False)["input_ids"]
    return [(p, t + [eos]) for p, t in zip(prompts, targets, strict=True)]


def mix(sets: Sequence[Sequence[dict]], shares: Sequence[float] | None = None) -> tuple[list[dict], list[float]]:
    """Several example sets as one list with per-example weights for :func:`finetune`: set i makes
    up ``shares[i] / sum(shares)`` of every batch on average, however many examples it has (equal
    shares by default)."""
    shares = [1.0] * len(sets) if shares is None else [float(w) for w in shares]
    if len(shares) != len(sets) or any(not w >= 0 for w in shares) or not sum(shares) > 0:
        raise ValueError(f"`shares` must hold one non-negative share per set ({len(sets)}) with a positive sum, "
                         f"got {shares!r}")
    if any(not exs for exs in sets):
        raise ValueError("every example set must hold examples")
    examples = [ex for exs in sets for ex in exs]
    weights = [w / len(exs) for w, exs in zip(shares, sets, strict=True) for _ in exs]
    return examples, weights


def target_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal LM loss of ``model(input_ids, attention_mask, labels=labels)``, projecting only the
    positions that predict a label onto the vocabulary.

    With a 32,000-token vocabulary the output projection of every position is most of a small
    model's training step, and an edit target is a tenth to a half of its sequence. Models whose
    head is not a plain projection of ``base_model``'s last hidden state (logit soft-capping,
    scaling) would differ, so those take the full forward.
    """
    head = model.get_output_embeddings()
    config = model.config
    plain = (head is not None and model.base_model is not model
             and getattr(config, "final_logit_softcapping", None) is None
             and getattr(config, "logit_scale", None) is None)
    if not plain:
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    # Position t predicts label t + 1: keep the positions whose next label counts.
    keep = labels[:, 1:] != -100
    logits = head(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep])


def finetune(model, tokenizer, examples: Sequence[dict], *, prompt_key: str = "prompt",
             target_key: str = "completion", weights: Sequence[float] | None = None, steps: int = 2000,
             batch_size: int = 16, lr: float = 5e-4, warmup: int = 100, max_grad_norm: float = 1.0,
             seed: int = 0, chat: bool | None = None, progress: Callable[[int, float], None] | None = None):
    """Train every parameter of ``model`` (in place) to write each example's target after its prompt.

    Each step draws ``batch_size`` examples with replacement (in proportion to ``weights`` when
    given, so several sets can be mixed at chosen rates), right-pads them with EOS, and takes one
    AdamW step on the mean cross-entropy of the target tokens (prompt and padding are masked out
    with -100); the learning rate warms up linearly for ``warmup`` steps and then decays on a
    cosine to 0 at ``steps``. The model is left in eval mode without gradients.

    Args:
        chat: prompts through the tokenizer's chat template (None: whenever it has one), as
            :func:`encode_examples`.
        progress: called as ``progress(step, loss)`` after every step.

    Returns:
        (the per-step losses, seconds spent training).
    """
    from transformers import get_cosine_schedule_with_warmup

    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1), ("warmup", warmup, 0)):
        checks.integer(name, value, low=low)
    if not lr > 0:
        raise ValueError(f"`lr` must be > 0, got {lr!r}")
    if not examples:
        raise ValueError("`examples` is empty")
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(examples) or min(weights) < 0 or not sum(weights) > 0:
            raise ValueError(f"`weights` must hold one non-negative weight per example ({len(examples)}) "
                             f"with a positive sum, got {len(weights)} weights")
    encoded = encode_examples(tokenizer, examples, prompt_key, target_key, chat)
    pad = tokenizer.eos_token_id
    device = next(model.parameters()).device
    rng = random.Random(seed)
    # The cumulative weights once (random.choices would sum them again every step; same draws).
    cum = None if weights is None else list(itertools.accumulate(weights))
    model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = get_cosine_schedule_with_warmup(opt, warmup, steps)
    losses: list[float] = []
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            chunk = [encoded[i] for i in rng.choices(range(len(encoded)), cum_weights=cum, k=batch_size)]
            width = max(len(p) + len(t) for p, t in chunk)
            ids = torch.full((batch_size, width), pad)
            labels = torch.full((batch_size, width), -100)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for i, (p, t) in enumerate(chunk):
                ids[i, : len(p) + len(t)] = torch.tensor(p + t)
                labels[i, len(p) : len(p) + len(t)] = torch.tensor(t)  # the loss sees the target only
                mask[i, : len(p) + len(t)] = 1
            loss = target_loss(model, ids.to(device), mask.to(device), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            schedule.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step, losses[-1])
    finally:
        model.eval().requires_grad_(False)
    return losses, time.perf_counter() - t0
