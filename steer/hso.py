"""Hidden-state optimisation (HSO): gradient steps on the cached keys and values, the weights frozen.

Yoshida & Gimpel, "Reconsidering the Past: Optimizing Hidden States in Language Models" (Findings of
EMNLP 2021). A text is read segment by segment. Each segment is first predicted from the cache of the
earlier ones (those predictions are what perplexity counts); then the gradient of the segment's
log-likelihood with respect to every cached key and value updates the cache (Adam, one moment
estimate per cached state, kept as the state moves through the cache), ``steps`` times; the segment's
own keys and values then join the cache, to be optimised by the segments after it. The model's weights
never change and never receive a gradient.

For steering, :func:`read` optimises the cache of an in-style context and :func:`generate` continues
from it with ``model.generate``, so that every logits processor still applies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from steer import checks

OPTIMISERS = ("adam", "sgd")


@dataclass(frozen=True)
class HSOConfig:
    """How the cache is optimised.

    Attributes:
        segment: tokens per segment (each segment's loss updates the cache of those before it).
        steps: gradient steps per segment (0: plain cached evaluation).
        lr: learning rate.
        optimiser: "adam" (the paper's: a moment estimate per cached state) or "sgd".
        betas, eps: Adam's.
    """

    segment: int = 64
    steps: int = 1
    lr: float = 1e-2
    optimiser: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self):
        for name, low in (("segment", 1), ("steps", 0)):
            checks.integer(name, getattr(self, name), low=low)
        checks.number("lr", self.lr, 0, low_open=True)
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"`optimiser` must be one of {OPTIMISERS}, got {self.optimiser!r}")
        b = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(b) != 2 or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in b):
            raise ValueError(f"`betas` must be two numbers in [0, 1), got {self.betas!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ValueError(f"`eps` must be a number > 0, got {self.eps!r}")
        object.__setattr__(self, "betas", b)


@dataclass
class HSOState:
    """A text read so far: its (optimised) cache, and what the reading measured.

    Attributes:
        keys, values: per decoder layer, per segment read, the cached states [B, heads, S, d] (leaf
            tensors that require grad; the optimiser holds them).
        mask: [B, T] attention mask of everything read.
        logprobs: [B, T] log-probability of each token given everything before it, as predicted before
            any update that saw it (NaN for the first token of the text and for padding).
        last_logits: [B, V] the logits after the last token (predicting the next one).
        forwards, backwards: passes through the model; seconds: wall time of the reading.
    """

    keys: list[list[torch.Tensor]]
    values: list[list[torch.Tensor]]
    mask: torch.Tensor
    logprobs: torch.Tensor
    last_logits: torch.Tensor
    optimiser: torch.optim.Optimizer | None = None
    forwards: int = 0
    backwards: int = 0
    seconds: float = 0.0
    config: HSOConfig = field(default_factory=HSOConfig)

    def leaves(self) -> list[torch.Tensor]:
        return [t for layer in self.keys + self.values for t in layer]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, (keys, values) of every segment read, joined along the sequence."""
        return [(torch.cat(ks, dim=-2), torch.cat(vs, dim=-2)) for ks, vs in zip(self.keys, self.values, strict=True)]

    def cache(self, batch: int | None = None) -> DynamicCache:
        """A detached ``DynamicCache`` of the states read (optionally one row repeated ``batch`` times)."""
        data = []
        for k, v in self.layers():
            k, v = k.detach(), v.detach()
            if batch is not None:
                if k.shape[0] != 1:
                    raise ValueError(f"only a one-row state can be repeated, this one has {k.shape[0]} rows")
                # expand is a view; the cache's first update concatenates, so nothing is written through it.
                k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
            data.append((k, v))
        return DynamicCache(ddp_cache_data=data)


def _check_model(model) -> None:
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        raise TypeError("hidden-state optimisation needs a decoder-only model")
    types = getattr(config, "layer_types", None) or []
    if any("sliding" in str(t) for t in types) or getattr(config, "use_sliding_window", False):
        raise TypeError(f"{type(model).__name__} has sliding-window layers, whose cache drops old states; "
                        "hidden-state optimisation needs every state kept")


def _check_ids(input_ids, attention_mask):
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise TypeError(f"`input_ids` must be a [batch, length] LongTensor, got "
                        f"{getattr(input_ids, 'shape', type(input_ids))}")
    if input_ids.shape[1] == 0:
        raise ValueError("`input_ids` is empty")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise ValueError(f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, got "
                         f"{getattr(attention_mask, 'shape', type(attention_mask))}")
    return attention_mask.to(input_ids.device).long()


def _new_optimiser(config: HSOConfig, params: list[torch.Tensor]):
    if config.optimiser == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, eps=config.eps)
    return torch.optim.SGD(params, lr=config.lr)


def _segment_pass(model, ids, full_mask, state: HSOState | None, grad: bool):
    """One forward of a segment after the cache of ``state``: (logits, new keys, new values)."""
    # Positions count real tokens only, so a left-padded row reads as if it had no padding.
    pos = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
    cache = DynamicCache() if state is None else DynamicCache(ddp_cache_data=state.layers())
    with torch.set_grad_enabled(grad):
        out = model(input_ids=ids, attention_mask=full_mask, position_ids=pos, cache=cache, use_cache=True)
    s = ids.shape[1]
    # DynamicCache appends by concatenation: the segment's own states are each layer's last s positions.
    new_k = [layer.keys[..., -s:, :].detach() for layer in cache.layers]
    new_v = [layer.values[..., -s:, :].detach() for layer in cache.layers]
    return out.logits, new_k, new_v


def _within(logits, ids):
    """[B, S-1]: log p of ``ids[:, 1:]``, each predicted by the segment's own previous position."""
    return torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]


def _token_logprobs(lp, ids, prev_logits):
    """log p of each token of ``ids`` [B, S]: the first from ``prev_logits`` (or NaN), the rest ``lp`` (_within)."""
    if prev_logits is None:
        first = lp.new_full((lp.shape[0], 1), float("nan"))  # also for a one-token segment (lp is [B, 0])
    else:
        first = torch.log_softmax(prev_logits.float(), dim=-1).gather(-1, ids[:, :1])
    return torch.cat([first, lp], dim=1)


def read(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
         config: HSOConfig | None = None, state: HSOState | None = None) -> HSOState:
    """Read ``input_ids`` segment by segment, optimising the cache as the text goes (see the module).

    Args:
        model: a decoder-only causal LM (its weights are left untouched).
        input_ids, attention_mask: [B, T], left-padded; rows are optimised independently (the loss is a
            sum of per-row means, and the optimisers are elementwise), with no loop over rows.
        config: the settings (default :class:`HSOConfig`).
        state: a text already read, to continue after (its cache and optimiser go on being updated).

    Returns:
        The :class:`HSOState` after the whole text.
    """
    config = config or (state.config if state is not None else HSOConfig())
    if not isinstance(config, HSOConfig):
        raise TypeError(f"`config` must be an HSOConfig, got {type(config).__name__}")
    _check_model(model)
    mask = _check_ids(input_ids, attention_mask)
    if state is not None and state.mask.shape[0] != input_ids.shape[0]:
        raise ValueError(f"`state` has {state.mask.shape[0]} rows, `input_ids` has {input_ids.shape[0]}")
    frozen = [p.requires_grad for p in model.parameters()]
    t0 = time.perf_counter()
    try:
        # The weights take no part in the gradient: only the cached states are inputs of autograd.grad.
        for p in model.parameters():
            p.requires_grad_(False)
        state = _read(model, input_ids, mask, config, state)
    finally:
        for p, flag in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    state.seconds += time.perf_counter() - t0
    return state


def _read(model, input_ids, mask, config, state):
    lps = [] if state is None else [state.logprobs]
    for start in range(0, input_ids.shape[1], config.segment):
        ids = input_ids[:, start: start + config.segment]
        seg_mask = mask[:, start: start + config.segment]
        full_mask = seg_mask if state is None else torch.cat([state.mask, seg_mask], dim=1)
        prev = None if state is None else state.last_logits
        if state is None or config.steps == 0:
            logits, new_k, new_v = _segment_pass(model, ids, full_mask, state, grad=False)
            lp = _token_logprobs(_within(logits, ids), ids, prev)
            if state is not None:
                state.forwards += 1
        else:
            # Targets: each real token predicted from a real token of the segment.
            valid = (seg_mask[:, 1:] * seg_mask[:, :-1]).float()
            leaves = state.leaves()
            for step in range(config.steps):
                logits, new_k, new_v = _segment_pass(model, ids, full_mask, state, grad=True)
                state.forwards += 1
                # One log-softmax serves the loss and, on the first step, the score.
                within = _within(logits, ids)
                if step == 0:  # the segment is scored before any update that has seen it
                    lp = _token_logprobs(within.detach(), ids, prev)
                # Sum over rows of each row's mean: a row's update does not depend on the batch it is in.
                loss = ((-within * valid).sum(1) / valid.sum(1).clamp(min=1)).sum()
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
                state.backwards += 1
                for leaf, g in zip(leaves, grads, strict=True):
                    leaf.grad = None if g is None else torch.nan_to_num(g)
                state.optimiser.step()
                state.optimiser.zero_grad(set_to_none=True)
        last = logits[:, -1].detach()
        # A token is scored when it and the token before it are real (a row's first token has no prediction).
        before = torch.zeros_like(seg_mask[:, :1]) if state is None else state.mask[:, -1:]
        scored = seg_mask * torch.cat([before, seg_mask[:, :-1]], dim=1)
        lps.append(lp.masked_fill(scored == 0, float("nan")))
        # The segment's states join the cache as new leaves, with fresh moment estimates.
        new_k = [k.clone().requires_grad_(True) for k in new_k]
        new_v = [v.clone().requires_grad_(True) for v in new_v]
        if state is None:
            state = HSOState(keys=[[k] for k in new_k], values=[[v] for v in new_v], mask=seg_mask,
                             logprobs=torch.empty(0), last_logits=last, config=config,
                             optimiser=_new_optimiser(config, new_k + new_v), forwards=1)
        else:
            for layer, k in zip(state.keys, new_k, strict=True):
                layer.append(k)
            for layer, v in zip(state.values, new_v, strict=True):
                layer.append(v)
            state.optimiser.add_param_group({"params": new_k + new_v})
            state.mask, state.last_logits = full_mask, last
    state.logprobs = torch.cat(lps, dim=1)
    return state


def evaluate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             config: HSOConfig | None = None) -> HSOState:
    """:func:`read` for scoring: ``state.logprobs`` holds each token's log-probability (NaN where none)."""
    return read(model, input_ids, attention_mask, config)


def perplexity(state: HSOState, skip: int | None = None) -> torch.Tensor:
    """Per-row perplexity of the tokens after the first ``skip`` (default: the first segment)."""
    skip = state.config.segment if skip is None else skip
    lp = state.logprobs[:, skip:]
    ok = ~torch.isnan(lp)
    n = ok.sum(1)
    if (n == 0).any():
        raise ValueError(f"a row has no scored token after the first {skip}")
    return torch.exp(-(lp.nan_to_num(0.0) * ok).sum(1) / n)


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             config: HSOConfig | None = None, **generate_kwargs):
    """Optimise the cache of ``input_ids`` (all but the last token) and continue with ``model.generate``.

    ``generate_kwargs`` go to ``model.generate`` (``logits_processor``, sampling settings, ...);
    ``config.steps == 0`` is plain generation. Returns what ``model.generate`` returns.
    """
    mask = _check_ids(input_ids, attention_mask)
    if input_ids.shape[1] < 2:
        return model.generate(input_ids=input_ids, attention_mask=mask, **generate_kwargs)
    # generate needs at least one token it has not cached: the last one is read from the optimised cache.
    state = read(model, input_ids[:, :-1], mask[:, :-1], config)
    return model.generate(input_ids=input_ids, attention_mask=mask, cache=state.cache(), **generate_kwargs)


@dataclass
class CachedPrefix:
    """A context shared by every row of a batch, read (and optimised) once: its ids and its cache."""

    ids: list[int]
    state: HSOState

    def cache_for(self, batch: int) -> DynamicCache:
        return self.state.cache(batch)


def read_prefix(model, ids: list[int], config: HSOConfig | None = None) -> CachedPrefix:
    """:func:`read` one shared context (for example in-style exemplars), to continue a batch from with
    ``steer.generation.continue_prompts(..., prefix=)``."""
    if not ids:
        raise ValueError("`ids` is empty")
    state = read(model, torch.tensor([list(ids)], device=model.device), config=config)
    return CachedPrefix(list(ids), state)
