"""Fine-tuning a causal LM on edit examples: loss on the target only, a weighted mix of example sets."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Training:
    """What :func:`finetune` did.

    Attributes:
        losses: the training loss of every step taken, from step 1 (a resumed run's earlier steps included).
        seconds: seconds spent training in this call (a resumed run's earlier calls not included).
        heldout: (steps taken, mean held-out loss per target token) at every evaluation, from step 0;
            empty without held-out examples.
        best_step: the evaluation the model was left at (the lowest held-out loss); without held-out
            examples, the last step.
        stopped: why training ended: "steps" (the step budget ran out) or "plateau".
        resumed_at: the step a checkpoint was resumed at (0: a fresh start).
        total_seconds: seconds spent training over every call of a resumed run (up to its last
            checkpoint before this call, then this call's).
    """

    losses: list[float]
    seconds: float
    heldout: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0
    stopped: str = "steps"
    resumed_at: int = 0
    total_seconds: float = 0.0


STATE_FILE = "trainer_state.pt"  # in a checkpoint folder: model, optimiser, schedule, draws, history
BEST_FILE = "best_model.pt"  # the model at the lowest held-out loss so far


def _batch(chunk: list[tuple[list[int], list[int]]], pad: int, device):
    """Right-padded ids, attention mask and labels (-100 outside the targets) of (prompt, target) pairs."""
    width = max(len(p) + len(t) for p, t in chunk)
    ids = torch.full((len(chunk), width), pad)
    labels = torch.full((len(chunk), width), -100)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for i, (p, t) in enumerate(chunk):
        ids[i, : len(p) + len(t)] = torch.tensor(p + t)
        labels[i, len(p) : len(p) + len(t)] = torch.tensor(t)  # the loss sees the target only
        mask[i, : len(p) + len(t)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


@torch.no_grad()
def heldout_loss(model, encoded: Sequence[tuple[list[int], list[int]]], pad: int, batch_size: int = 16) -> float:
    """The mean cross-entropy per target token of ``encoded`` (pairs from :func:`encode_examples`),
    in fixed batches of ``batch_size``: the same figure for the same model, whenever it is measured."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for b0 in range(0, len(encoded), batch_size):
        ids, mask, labels = _batch(list(encoded[b0 : b0 + batch_size]), pad, device)
        n = int((labels[:, 1:] != -100).sum())
        total += target_loss(model, ids, mask, labels).item() * n
        count += n
    return total / count


def _fingerprint(model, encoded, weights, heldout, settings: dict) -> dict:
    """What a checkpoint must agree with to be resumed: the settings, and digests of the data and the model's shapes."""
    digest = hashlib.sha256(json.dumps([encoded, weights, heldout]).encode()).hexdigest()
    shapes = hashlib.sha256(json.dumps([[k, list(v.shape)] for k, v in model.state_dict().items()]).encode())
    return {**settings, "data": digest, "model_shapes": shapes.hexdigest()}


def _save_atomic(obj, path: Path) -> None:
    # Written beside, then renamed: an interrupted save never leaves a half-written checkpoint.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_checkpoint(folder: Path, fingerprint: dict) -> dict | None:
    """The state saved in ``folder`` (None if there is none), refused if it belongs to another run."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:  # weights_only: tensors and plain containers, never arbitrary pickled objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {e}); "
                         "remove it to start afresh") from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise ValueError(f"checkpoint {str(path)!r} is not a steer training checkpoint")
    differ = sorted(k for k in fingerprint.keys() | state["fingerprint"].keys()
                    if fingerprint.get(k) != state["fingerprint"].get(k))
    if differ:
        raise ValueError(f"checkpoint {str(path)!r} belongs to another run: its {', '.join(differ)} differ "
                         f"from this call's; use another checkpoint folder or remove it")
    return state


def finetune(model, tokenizer, examples: Sequence[dict], *, prompt_key: str = "prompt",
             target_key: str = "completion", weights: Sequence[float] | None = None, steps: int = 2000,
             batch_size: int = 16, lr: float = 5e-4, warmup: int = 100, max_grad_norm: float = 1.0,
             seed: int = 0, chat: bool | None = None, heldout: Sequence[dict] | None = None,
             eval_every: int = 100, patience: int | None = None, min_delta: float = 0.0,
             checkpoint: str | Path | None = None, checkpoint_every: int = 100, bf16: bool = False,
             progress: Callable[[int, float], None] | None = None,
             on_heldout: Callable[[int, float], None] | None = None) -> Training:
    """Train every parameter of ``model`` (in place) to write each example's target after its prompt.

    Each step draws ``batch_size`` examples with replacement (in proportion to ``weights`` when
    given, so several sets can be mixed at chosen rates), right-pads them with EOS, and takes one
    AdamW step on the mean cross-entropy of the target tokens (prompt and padding are masked out
    with -100); the learning rate warms up linearly for ``warmup`` steps and then decays on a
    cosine to 0 at ``steps``. The model is left in eval mode without gradients.

    With ``heldout`` examples, their loss (:func:`heldout_loss`) is measured before the first step
    and every ``eval_every`` steps; training stops early once ``patience`` evaluations in a row
    have not lowered the best loss by more than ``min_delta`` of it (a plateau), and the model is
    left at its best evaluation, not its last step.

    With a ``checkpoint`` folder, the whole training state (model, optimiser, schedule, the draws'
    random state, the history) is saved there every ``checkpoint_every`` steps and at the end, and a
    call that finds a checkpoint of the same run (same settings, data and model shapes; anything
    else is refused) resumes from it: a run interrupted and resumed ends exactly as an
    uninterrupted one. A finished run's checkpoint returns at once, with the model at its result.

    Args:
        chat: prompts through the tokenizer's chat template (None: whenever it has one), as
            :func:`encode_examples`.
        bf16: each step's forward and backward pass in bfloat16 under ``torch.autocast`` (the
            weights, gradients and optimiser state stay float32; held-out losses are measured in
            float32). About 1.7x faster on a CPU with AVX512-BF16 (SmolLM2-135M, 16 x 96 tokens:
            5.8 s a step against 9.4-11.4). Part of the run's settings: a checkpoint of the other
            precision is refused.
        progress: called as ``progress(step, loss)`` after every step (``step`` from 0).
        on_heldout: called as ``on_heldout(steps_taken, loss)`` after every held-out evaluation.

    Returns:
        A :class:`Training`.
    """
    from transformers import get_cosine_schedule_with_warmup

    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1), ("warmup", warmup, 0),
                             ("eval_every", eval_every, 1), ("checkpoint_every", checkpoint_every, 1)):
        checks.integer(name, value, low=low)
    if patience is not None:
        checks.integer("patience", patience, low=1)
    checks.number("min_delta", min_delta, low=0, high=1, high_open=True)
    checks.boolean("bf16", bf16)
    if not lr > 0:
        raise ValueError(f"`lr` must be > 0, got {lr!r}")
    if not examples:
        raise ValueError("`examples` is empty")
    if heldout is not None and not heldout:
        raise ValueError("`heldout` is empty: give held-out examples or None")
    if patience is not None and heldout is None:
        raise ValueError("`patience` needs `heldout` examples to measure a plateau on")
    if weights is not None:
        weights = [float(w) for w in weights]
        if len(weights) != len(examples) or min(weights) < 0 or not sum(weights) > 0:
            raise ValueError(f"`weights` must hold one non-negative weight per example ({len(examples)}) "
                             f"with a positive sum, got {len(weights)} weights")
    encoded = encode_examples(tokenizer, examples, prompt_key, target_key, chat)
    held = None if heldout is None else encode_examples(tokenizer, heldout, prompt_key, target_key, chat)
    pad = tokenizer.eos_token_id
    device = next(model.parameters()).device
    rng = random.Random(seed)
    # The cumulative weights once (random.choices would sum them again every step; same draws).
    cum = None if weights is None else list(itertools.accumulate(weights))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = get_cosine_schedule_with_warmup(opt, warmup, steps)
    run = Training([], 0.0)
    best = math.inf
    since_best = 0
    folder = None if checkpoint is None else Path(checkpoint)
    fingerprint = _fingerprint(model, encoded, weights, held, {
        "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "max_grad_norm": max_grad_norm,
        "seed": seed, "eval_every": eval_every, "patience": patience, "min_delta": min_delta,
        **({"bf16": True} if bf16 else {})})  # absent when off: float32 checkpoints of earlier runs still resume
    state = None if folder is None else _load_checkpoint(folder, fingerprint)
    kept = None  # the best model's weights, when there is no checkpoint folder to keep them in
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.setstate(_as_rng_state(state["draws"]))
        torch.set_rng_state(state["torch_rng"])
        run = Training(list(state["losses"]), 0.0, [tuple(h) for h in state["heldout"]], state["best_step"],
                       state["stopped"], len(state["losses"]))
        best, since_best = state["best"], state["since_best"]
    earlier = 0.0 if state is None else state["seconds"]  # training time of the calls before this one

    def save(done: bool) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            _save_atomic({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": opt.state_dict(),
                          "schedule": schedule.state_dict(), "draws": rng.getstate(),
                          "torch_rng": torch.get_rng_state(), "losses": run.losses, "heldout": run.heldout,
                          "best_step": run.best_step, "best": best, "since_best": since_best,
                          "stopped": run.stopped, "done": done,
                          "seconds": earlier + time.perf_counter() - t0}, folder / STATE_FILE)

    def evaluate(step: int) -> bool:
        """Measure the held-out loss at ``step``; True when it has plateaued."""
        nonlocal best, since_best, kept
        model.eval()
        loss = heldout_loss(model, held, pad, batch_size)
        model.train()
        run.heldout.append((step, loss))
        if on_heldout is not None:
            on_heldout(step, loss)
        if loss < best * (1 - min_delta) or not math.isfinite(best):
            best, since_best, run.best_step = loss, 0, step
            weights_now = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if folder is None:
                kept = weights_now
            else:
                folder.mkdir(parents=True, exist_ok=True)
                _save_atomic(weights_now, folder / BEST_FILE)
        else:
            since_best += 1
        return patience is not None and since_best >= patience

    t0 = time.perf_counter()
    model.train().requires_grad_(True)
    try:
        done = state is not None and state["done"]
        if not done and held is not None and not run.heldout:
            done = evaluate(0)
            run.stopped = "plateau" if done else run.stopped
        step = len(run.losses)
        while not done and step < steps:
            chunk = [encoded[i] for i in rng.choices(range(len(encoded)), cum_weights=cum, k=batch_size)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = target_loss(model, *_batch(chunk, pad, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            schedule.step()
            run.losses.append(loss.item())
            step += 1
            if held is not None and (step % eval_every == 0 or step == steps) and evaluate(step):
                run.stopped = "plateau"
                done = True
            done = done or step == steps
            if done or step % checkpoint_every == 0:
                save(done)
            if progress is not None:
                progress(step - 1, run.losses[-1])
        if held is None:
            run.best_step = len(run.losses)
        elif folder is not None:
            model.load_state_dict(torch.load(folder / BEST_FILE, map_location="cpu", weights_only=True))
        else:
            model.load_state_dict(kept)
    finally:
        model.eval().requires_grad_(False)
    run.seconds = time.perf_counter() - t0
    run.total_seconds = earlier + run.seconds if state is None or not state["done"] else earlier
    return run


def _as_rng_state(saved) -> tuple:
    # random.Random.setstate wants (version, tuple of ints, gauss_next), as getstate gave it.
    version, internal, gauss = saved
    return version, tuple(internal), gauss
