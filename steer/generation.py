"""One decode helper shared by the commands and studies: prompts in, continuations out."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from transformers import LogitsProcessorList

from steer import checks
from steer.models import encode_prompts, pad_left, stop_ids
from steer.options import Options, option

Decoding = Literal["greedy", "sample", "beam"]
DECODINGS = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class DecodeConfig(Options):
    """How continuations are decoded: the ``decoding`` option family.

    ``loop_ban`` (n, r) bans the r-th occurrence of any n-gram within a continuation
    (:class:`steer.repetition.NoNgramLoop`, applied after every other processor; the prompt does
    not count): a decoding setting, so in a study it applies to every cell alike.
    """

    family: ClassVar[str] = "decoding"
    max_new_tokens: int = option(40, "tokens generated per prompt")
    decoding: Literal["greedy", "sample", "beam"] = option("greedy", "how continuations are decoded")
    temperature: float = option(1.0, "sampling temperature (with decoding sample)")
    top_p: float = option(1.0, "nucleus sampling mass (with decoding sample)")
    num_beams: int = option(4, "beam width (with decoding beam)")
    seed: int = option(0, "torch seed set before every generate call")
    loop_ban: tuple[int, int] | None = option(
        None, "ban the R-th occurrence of any N-gram within a continuation (N,R; every method alike)",
        flag="ban-loops", metavar="N,R")

    def __post_init__(self):
        checks.choice("decoding", self.decoding, DECODINGS)
        checks.integer("max_new_tokens", self.max_new_tokens, low=1)
        object.__setattr__(self, "temperature", checks.number("temperature", self.temperature, 0, low_open=True))
        object.__setattr__(self, "top_p", checks.number("top_p", self.top_p, 0, 1, low_open=True))
        checks.integer("num_beams", self.num_beams, low=1)
        checks.integer("seed", self.seed)
        if self.loop_ban is not None:
            ban = checks.ints("loop_ban", self.loop_ban, length=2)
            if ban[0] < 1 or ban[1] < 2:
                raise ValueError(f"`loop_ban` must be (n >= 1, r >= 2) or None, got {self.loop_ban!r}")
            object.__setattr__(self, "loop_ban", ban)

    def generate_kwargs(self) -> dict:
        kw = dict(max_new_tokens=self.max_new_tokens, do_sample=self.decoding == "sample")
        if self.decoding == "sample":
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        if self.decoding == "beam":
            kw.update(num_beams=self.num_beams)
        return kw


@torch.no_grad()
def continue_prompts(model, tokenizer, prompts: list[str], processors=(), config: DecodeConfig | None = None,
                     prefix=None):
    """Generate a continuation of every prompt in one batch.

    ``prefix``: a context every prompt starts with, already read into a cache (``ids``, the
    context's token ids, and ``cache_for(batch)``, its cache for a batch; e.g.
    :class:`steer.hso.CachedPrefix`). Each prompt must tokenise to those ids followed by at
    least one more token; only the rest is read, after the cached states.

    Returns:
        (prompt_ids, continuation_ids): per prompt, the prompt's ids (with its
        document start) and the generated ids, stopped at and excluding the
        first EOS or document separator (:func:`steer.models.stop_ids`).
    """
    config = config or DecodeConfig()
    enc = encode_prompts(tokenizer, prompts, device=model.device)
    extra = {}
    if prefix is not None:
        enc = _after_prefix(enc, list(prefix.ids), tokenizer)
        extra["cache"] = prefix.cache_for(enc["input_ids"].shape[0])
    stops = stop_ids(tokenizer)
    width = enc["input_ids"].shape[1]
    processors = list(processors)
    if config.loop_ban is not None:
        from steer.repetition import NoNgramLoop

        processors.append(NoNgramLoop(*config.loop_ban, prompt_length=width))
    torch.manual_seed(config.seed)
    out = model.generate(
        **enc,
        logits_processor=LogitsProcessorList(processors),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops or None,
        **config.generate_kwargs(),
        **extra,
    )
    prompt_ids, conts = [], []
    for row, mask in zip(out, enc["attention_mask"], strict=True):
        prompt_ids.append(row[:width][mask.bool()].tolist())
        cont = row[width:].tolist()
        end = next((i for i, t in enumerate(cont) if t in stops), len(cont))
        conts.append(cont[:end])
    return prompt_ids, conts


def _after_prefix(enc: dict, prefix_ids: list[int], tokenizer) -> dict:
    """Re-lay a left-padded batch as [shared prefix | left-padded rest], checking every row starts with the prefix.

    The prefix then sits at the same columns (and positions) in every row, where its cache
    (one row, expanded) holds it; a row's padding moves between the prefix and its own tokens,
    masked like any padding.
    """
    n = len(prefix_ids)
    rests = []
    for i, (row, mask) in enumerate(zip(enc["input_ids"], enc["attention_mask"], strict=True)):
        ids = row[mask.bool()].tolist()
        if ids[:n] != prefix_ids or len(ids) == n:
            raise ValueError(f"prompt {i} does not tokenise to the cached prefix's {n} tokens followed by more")
        rests.append(ids[n:])
    device = enc["input_ids"].device
    rest = pad_left(tokenizer, rests, device)
    head = torch.tensor(prefix_ids, device=device).expand(len(rests), n)
    return {"input_ids": torch.cat([head, rest["input_ids"]], dim=1),
            "attention_mask": torch.cat([torch.ones_like(head), rest["attention_mask"]], dim=1)}


@torch.no_grad()
def greedy_drop_finished(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                         stop_ids: list[int], pad_token_id: int, logits_processor=()) -> torch.Tensor:
    """Greedy decoding that stops computing a row once it has ended: ``model.generate``'s output, less its waiting.

    ``generate`` runs every row of a batch through the model until the longest one ends; when
    answers vary in length (edit spans) part of every step computes rows that have ended. Here a
    finished row leaves the model's batch (its cache rows are dropped with
    ``DynamicCache.batch_select_indices``) and only the unfinished rows are run. transformers'
    continuous batching (``generate_batch``) also drops finished requests, but its processors see
    scores one token at a time without the ids generated so far, which history-dependent
    processors (the edit-span grammars, :class:`steer.repetition.NoNgramLoop`) need.

    The processors still see the whole batch, [B, L] ids and [B, V] scores with a finished row's
    ids padded by ``pad_token_id`` exactly as ``generate`` pads them, so any ``LogitsProcessor``
    (with per-row state indexed by batch row) works unchanged; a finished row's scores are zeros
    and its choice is ignored. Greedy with the same processors, the output equals ``generate``'s
    token for token up to floating-point ties (a row's logits are computed in a smaller batch;
    tested in float64).

    Args:
        input_ids, attention_mask: long [B, L], left-padded (as :func:`steer.models.pad_left` lays them).
        max_new_tokens: at most this many tokens per row (>= 1).
        stop_ids: ids that end a row (the stop id is kept in the output, as ``generate`` keeps it).
        pad_token_id: what follows a row's end.
        logits_processor: ``LogitsProcessor`` objects applied in order.

    Returns:
        long [B, L + T]: prompt and generated ids, T <= ``max_new_tokens`` the longest answer.
    """
    from transformers import DynamicCache

    checks.integer("max_new_tokens", max_new_tokens, low=1)
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"`input_ids` and `attention_mask` must both be [B, L], got {tuple(input_ids.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    if not stop_ids:
        raise ValueError("`stop_ids` must name at least one id")
    processors = LogitsProcessorList(logits_processor)
    n = input_ids.shape[0]
    device = input_ids.device
    stops = torch.tensor(list(stop_ids), device=device)
    ids = input_ids
    mask = attention_mask.long()
    # Left padding: a row's positions count its real tokens only, as generate numbers them.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    next_pos = positions[:, -1:] + 1  # [B, 1]: the position of each row's next token
    active = torch.arange(n, device=device)  # batch rows still in the model's batch, in cache order
    cache = DynamicCache(config=model.config)
    # Only the last position's logits are needed: on the prompt that spares a [B, L, V] product
    # through the LM head (generate does the same), where the vocabulary is large.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    step_ids, step_mask, step_pos = ids, mask, positions
    for _ in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos, cache=cache, use_cache=True,
                    **last_only)
        logits = out.logits[:, -1, :].float()
        scores = logits.new_zeros(n, logits.shape[-1]).index_copy(0, active, logits)
        scores = processors(ids, scores)
        nxt = torch.full((n,), pad_token_id, dtype=torch.long, device=device)
        nxt[active] = scores[active].argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.zeros_like(mask[:, :1]).index_fill(0, active, 1)], dim=1)
        ended = torch.isin(nxt[active], stops)
        if bool(ended.all()):
            break
        keep = (~ended).nonzero().squeeze(1)  # positions within the model's batch
        if len(keep) < len(active):
            cache.batch_select_indices(keep)
            active = active[keep]
        step_ids = ids[active, -1:]
        step_mask = mask[active]
        step_pos = next_pos[active]
        next_pos = next_pos + 1
    return ids


def continuation_texts(tokenizer, prompt_ids, conts) -> list[str]:
    """Each continuation's text exactly as it follows its prompt (leading space included)."""
    out = []
    for p, c in zip(prompt_ids, conts, strict=True):
        head = tokenizer.decode(p, skip_special_tokens=True)
        full = tokenizer.decode(list(p) + list(c), skip_special_tokens=True)
        out.append(full[len(head):] if full.startswith(head) else " " + tokenizer.decode(c, skip_special_tokens=True))
    return out
