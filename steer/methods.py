"""The registry of steering methods a sweep can run: each turns (model, corpus, knob) into what to generate with.

A method is one :class:`Method` entry: its name, what its knob means, the
knob values a sweep tries by default, and ``build(context, knob)`` returning a
:class:`Setup` (the model to generate with, a prompt prefix, logits
processors, costs). The sweep never branches on method names; a new method is
one :func:`register` call.

Methods receive only a corpus's steer split (through ``context.corpus`` and the
tables built from it); the judges never see them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

# Options of the steering variants a sweep may set (SweepConfig.guided): alpha of the plausible
# methods (contrastive decoding's 0.1), an optional clip c of the bonus, the strength cap of the
# KL-budgeted methods (the budget, not lam, binds), whether the plausible methods centre the
# bonus over their support and mask the tokens outside it, whether every variant tempers its
# distribution back to the model's entropy, and the n-gram order below which a repeat earns no bonus
# (``fresh``; None: every repeat is rewarded like a first use).
GUIDED_DEFAULTS = {"plausibility": 0.1, "clip": None, "kl_max_lam": 8.0, "centre": False, "mask": False,
                   "temper": False, "fresh": None}


def guided_options(options: dict) -> dict:
    """The variants' options: GUIDED_DEFAULTS updated by ``options``, validated."""
    unknown = sorted(set(options) - set(GUIDED_DEFAULTS))
    if unknown:
        raise ValueError(f"`guided` has unknown options {unknown}; known: {sorted(GUIDED_DEFAULTS)}")
    out = {**GUIDED_DEFAULTS, **options}
    alpha, clip, cap = out["plausibility"], out["clip"], out["kl_max_lam"]
    for name in ("centre", "mask", "temper"):
        if not isinstance(out[name], bool):
            raise ValueError(f"`guided[{name!r}]` must be True or False, got {out[name]!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ValueError(f"`guided['plausibility']` must lie in (0, 1], got {alpha!r}")
    fresh = out["fresh"]
    if fresh is not None and (isinstance(fresh, bool) or not isinstance(fresh, int) or fresh < 1):
        raise ValueError(f"`guided['fresh']` must be None or an int >= 1 (an n-gram order), got {fresh!r}")
    for name, value in (("clip", clip), ("kl_max_lam", cap)):
        if value is None and name == "clip":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"`guided[{name!r}]` must be a finite number > 0, got {value!r}")
    return out


# Options of activation steering (SweepConfig.activation): the decoder layers the style vector is
# added at, how it is measured (the mean over tokens or each chunk's last token, chunks of the
# steer split and of the background corpus), whether it is normalised to the residual stream's
# typical norm, and the scale the combined methods hold fixed while their n-gram strength moves.
# layers=None: steer.activation.default_layers (one layer, at the depth chosen on SmolLM2's dev prompts).
ACTIVATION_DEFAULTS = {"layers": None, "position": "mean", "normalise": True, "scale": 0.125, "chunk_tokens": 64,
                       "max_chunks": 128}


def activation_options(options: dict) -> dict:
    """Activation steering's options: ACTIVATION_DEFAULTS updated by ``options``, validated."""
    from steer.activation import POSITIONS

    unknown = sorted(set(options) - set(ACTIVATION_DEFAULTS))
    if unknown:
        raise ValueError(f"`activation` has unknown options {unknown}; known: {sorted(ACTIVATION_DEFAULTS)}")
    out = {**ACTIVATION_DEFAULTS, **options}
    layers = out["layers"]
    if layers is not None and (not isinstance(layers, (list, tuple)) or not layers
                               or any(isinstance(v, bool) or not isinstance(v, int) for v in layers)):
        raise ValueError(f"`activation['layers']` must be a non-empty list of ints or None, got {layers!r}")
    if out["position"] not in POSITIONS:
        raise ValueError(f"`activation['position']` must be one of {POSITIONS}, got {out['position']!r}")
    if not isinstance(out["normalise"], bool):
        raise ValueError(f"`activation['normalise']` must be True or False, got {out['normalise']!r}")
    scale = out["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"`activation['scale']` must be a finite number, got {scale!r}")
    for name, low in (("chunk_tokens", 2), ("max_chunks", 1)):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`activation[{name!r}]` must be an int >= {low}, got {value!r}")
    out["layers"] = None if layers is None else list(layers)
    return out


# Options of hidden-state optimisation (SweepConfig.hso): the segment length and learning rate of
# the optimisation of the exemplars' cache (Adam), and the step count the combined method holds fixed
# while its n-gram strength moves. lr: the best of 0.001-0.1 on held-out perplexity of steer-split
# passages (docs/hso.md).
HSO_DEFAULTS = {"segment": 64, "lr": 0.03, "steps": 2}


def hso_options(options: dict) -> dict:
    """Hidden-state optimisation's options: HSO_DEFAULTS updated by ``options``, validated."""
    from steer.hso import HSOConfig

    unknown = sorted(set(options) - set(HSO_DEFAULTS))
    if unknown:
        raise ValueError(f"`hso` has unknown options {unknown}; known: {sorted(HSO_DEFAULTS)}")
    out = {**HSO_DEFAULTS, **options}
    try:
        HSOConfig(segment=out["segment"], steps=out["steps"], lr=out["lr"])
    except ValueError as err:
        raise ValueError(f"`hso`: {err}") from None
    return out


@dataclass
class Setup:
    """What one cell generates with."""

    model: object = None  # None: the frozen base model
    prefix: str = ""
    processors: list = field(default_factory=list)
    costs: dict = field(default_factory=dict)
    lam: float = 0.0  # the strength reported in the `lam` column (lam_max for budgeted methods)
    # Entered around each generation of the cell (activation steering's hooks), or None.
    context: Callable[[], AbstractContextManager] | None = None
    # The prefix already read into a cache that generation continues from (steer.hso.CachedPrefix:
    # hidden-state optimisation's exemplars), or None: every prompt then starts with its ids.
    prefix_cache: object = None

    def continue_prompts(self, model, tokenizer, prompts: list[str], decode, processors=None):
        """Continue ``prompts`` as this setup generates: with its model (else ``model``), its prefix before
        every prompt (read from its cache where it has one), its processors (or ``processors``, e.g. wrapped
        copies of them), inside its context (activation hooks, removed on exit).

        Returns :func:`steer.generation.continue_prompts`'s (prompt_ids, continuation_ids); the prompt ids
        hold the prefix.
        """
        from steer.generation import continue_prompts

        around = self.context or contextlib.nullcontext
        with around():
            return continue_prompts(self.model or model, tokenizer, [self.prefix + p for p in prompts],
                                    self.processors if processors is None else processors, decode,
                                    prefix=self.prefix_cache)


@dataclass
class Context:
    """What a method may use: the frozen model, the corpus's steer split and tables built from it.

    ``table()``, ``background()``, ``background_corpus()`` and ``lora()`` build lazily and are cached
    by the sweep; ``memo`` keeps what a method derives once per corpus (a style vector).
    """

    model: object
    tokenizer: object
    corpus: object  # steer.corpora.Corpus, or None for a corpus given as a saved table
    config: object  # steer.sweep.SweepConfig
    table: Callable[[], object]
    background: Callable[[], object]
    lora: Callable[[], tuple]
    background_corpus: Callable[[], object] | None = None  # steer.corpora.Corpus; methods use its steer split
    memo: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registered steering method.

    Attributes:
        name: the name results use (variants join their parts with "+").
        knob: what the knob is ("lam", "eps" for a KL budget, "" for none).
        knobs: default knob values of a sweep (None: the sweep's --lambdas).
        build: (context, knob) -> Setup.
        needs_text: needs the corpus's text (not just a table).
        needs_background: needs the background corpus (contrastive and activation methods).
    """

    name: str
    knob: str
    knobs: tuple | None
    build: Callable[[Context, float], Setup]
    needs_text: bool = False
    needs_background: bool = False


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (a name may be registered once)."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}: one of {sorted(REGISTRY)}")
    return REGISTRY[name]


# ---------------------------------------------------------------- the paper's prior and the baselines
def _table_costs(table) -> dict:
    return {"train_s": table.stats.get("build_seconds", float("nan")), "extra_mem_mb": table.nbytes / 2**20}


def _prior(ctx: Context, lam: float) -> Setup:
    from steer.style import NGramStylePrior

    table = ctx.table()
    # lam = 0 keeps the (identity) processor, so that the unsteered cell records JS = 0 like the others.
    return Setup(processors=[NGramStylePrior(table, lam, ctx.tokenizer, **ctx.config.prior)],
                 costs=_table_costs(table), lam=lam)


def _prompt(ctx: Context, knob: float) -> Setup:
    prefix = ctx.config.prompt_style().prefix(ctx.corpus.steer, ctx.tokenizer)
    return Setup(prefix=prefix, costs={"train_s": 0.0, "extra_mem_mb": 0.0})


def _prior_prompt(ctx: Context, lam: float) -> Setup:
    setup = _prior(ctx, lam)
    setup.prefix = _prompt(ctx, 0.0).prefix
    return setup


def _lora(ctx: Context, knob: float) -> Setup:
    model, meta, nbytes = ctx.lora()
    return Setup(model=model, costs={"train_s": meta["wall_seconds"], "extra_mem_mb": nbytes / 2**20})


register(Method("prior", "lam", None, _prior))
register(Method("prompt", "", (0.0,), _prompt, needs_text=True))
register(Method("prior+prompt", "lam", None, _prior_prompt, needs_text=True))
register(Method("lora", "", (0.0,), _lora, needs_text=True))


# ---------------------------------------------------------------- variants (steer.priors.GuidedStylePrior)
# name -> (subtracts a background table, plausibility-bounded, strength, default knobs of a sweep).
GUIDED_VARIANTS = {
    "contrastive": (True, False, "constant", (0.25, 0.5, 1.0, 2.0)),
    "contrastive+plausible": (True, True, "constant", (1.0, 2.0, 4.0, 8.0)),
    "contrastive+entropy": (True, False, "entropy", (0.5, 1.0, 2.0, 4.0)),
    "contrastive+kl": (True, False, "kl", (0.02, 0.04, 0.06, 0.1)),
    "contrastive+plausible+kl": (True, True, "kl", (0.02, 0.04, 0.06, 0.1)),
    "plausible": (False, True, "constant", (0.5, 1.0, 2.0, 4.0)),
    "kl": (False, False, "kl", (0.02, 0.04, 0.06, 0.1)),
}


def guided_prior(name: str, table, knob: float, background=None, options: dict | None = None, tokenizer=None):
    """The GuidedStylePrior of variant ``name`` at knob value ``knob`` (lam, or the KL budget eps).

    ``options``: GUIDED_DEFAULTS keys (validated); ``background``: the table contrastive variants subtract.
    """
    from steer.priors import GuidedStylePrior

    if name not in GUIDED_VARIANTS:
        raise ValueError(f"unknown variant {name!r}: one of {sorted(GUIDED_VARIANTS)}")
    contrastive, plausible, strength, _ = GUIDED_VARIANTS[name]
    if contrastive and background is None:
        raise ValueError(f"variant {name!r} subtracts a background table: give `background`")
    options = guided_options(options or {})
    lam = options["kl_max_lam"] if strength == "kl" else knob
    return GuidedStylePrior(table, lam, background=background if contrastive else None, clip=options["clip"],
                            plausibility=options["plausibility"] if plausible else None, strength=strength,
                            kl_budget=knob if strength == "kl" else None, tokenizer=tokenizer,
                            centre=options["centre"] and plausible, mask=options["mask"] and plausible,
                            temper=options["temper"], fresh=options["fresh"])


def _guided(name: str) -> Callable[[Context, float], Setup]:
    def build(ctx: Context, knob: float) -> Setup:
        table = ctx.table()
        background = ctx.background() if GUIDED_VARIANTS[name][0] else None
        prior = guided_prior(name, table, knob, background, ctx.config.guided, ctx.tokenizer)
        costs = _table_costs(table)
        if background is not None:
            costs["extra_mem_mb"] += background.nbytes / 2**20
        return Setup(processors=[prior], costs=costs, lam=prior.lam)

    return build


for _name, (_contrastive, _plausible, _strength, _knobs) in GUIDED_VARIANTS.items():
    register(Method(_name, "eps" if _strength == "kl" else "lam", _knobs, _guided(_name),
                    needs_background=_contrastive))


# ---------------------------------------------------------------- activation steering (steer.activation)
def _style_vector(ctx: Context):
    """The corpus's style vector (steer split against the background's), measured once per corpus."""
    from steer.activation import vector_for

    options = activation_options(ctx.config.activation)
    key = ("style_vector", options["position"], options["chunk_tokens"], options["max_chunks"])
    if key not in ctx.memo:
        ctx.memo[key] = vector_for(ctx.model, ctx.tokenizer, ctx.corpus, ctx.background_corpus(),
                                   position=options["position"], chunk_tokens=options["chunk_tokens"],
                                   max_chunks=options["max_chunks"])
    return ctx.memo[key]


def _activation_setup(ctx: Context, scale: float) -> Setup:
    from steer.activation import ActivationSteering, default_layers

    options = activation_options(ctx.config.activation)
    vector = _style_vector(ctx)
    layers = options["layers"] if options["layers"] is not None else default_layers(ctx.model)
    hooks = ActivationSteering(ctx.model, vector, layers, scale, normalise=options["normalise"])
    costs = {"train_s": vector.meta.get("seconds", float("nan")),
             "extra_mem_mb": vector.vectors.numel() * 4 / 2**20}
    return Setup(costs=costs, lam=0.0, context=lambda: hooks)


def _activation_guided(ctx: Context, lam: float) -> Setup:
    """The style vector at the fixed ``activation['scale']`` plus contrastive+plausible at strength ``lam``."""
    setup = _guided("contrastive+plausible")(ctx, lam)
    hooked = _activation_setup(ctx, activation_options(ctx.config.activation)["scale"])
    setup.context = hooked.context
    setup.costs = {"train_s": setup.costs["train_s"] + hooked.costs["train_s"],
                   "extra_mem_mb": setup.costs["extra_mem_mb"] + hooked.costs["extra_mem_mb"]}
    return setup


register(Method("activation", "scale", (0.0625, 0.125, 0.25, 0.375), _activation_setup, needs_text=True,
                needs_background=True))
register(Method("activation+contrastive+plausible", "lam", (1.0, 2.0, 4.0), _activation_guided, needs_text=True,
                needs_background=True))


# ---------------------------------------------------------------- hidden-state optimisation (steer.hso)
def _hso_setup(ctx: Context, steps: float) -> Setup:
    """The prompt method's exemplars, their cache optimised with ``steps`` steps per segment (0: plain)."""
    from steer.hso import HSOConfig, read_prefix
    from steer.models import encode_prompts

    if steps != int(steps) or steps < 0:
        raise ValueError(f"the `hso` knob is a step count (an int >= 0), got {steps!r}")
    options = hso_options(ctx.config.hso)
    prefix = _prompt(ctx, 0.0).prefix
    key = ("hso", prefix, int(steps), options["segment"], options["lr"])
    if key not in ctx.memo:
        ids = encode_prompts(ctx.tokenizer, [prefix])["input_ids"][0].tolist()
        config = HSOConfig(segment=options["segment"], steps=int(steps), lr=options["lr"])
        ctx.memo[key] = read_prefix(ctx.model, ids, config)
    cached = ctx.memo[key]
    state = cached.state
    nbytes = sum(t.numel() * t.element_size() for t in state.leaves())
    return Setup(prefix=prefix, prefix_cache=cached, lam=0.0,
                 costs={"train_s": state.seconds, "extra_mem_mb": nbytes / 2**20})


def _hso_guided(ctx: Context, lam: float) -> Setup:
    """The exemplars' cache optimised with the fixed ``hso['steps']``, plus contrastive+plausible at ``lam``."""
    setup = _guided("contrastive+plausible")(ctx, lam)
    cached = _hso_setup(ctx, hso_options(ctx.config.hso)["steps"])
    setup.prefix, setup.prefix_cache = cached.prefix, cached.prefix_cache
    setup.costs = {"train_s": setup.costs["train_s"] + cached.costs["train_s"],
                   "extra_mem_mb": setup.costs["extra_mem_mb"] + cached.costs["extra_mem_mb"]}
    return setup


register(Method("hso", "steps", (1.0, 2.0, 4.0), _hso_setup, needs_text=True))
register(Method("hso+contrastive+plausible", "lam", (1.0, 2.0, 4.0), _hso_guided, needs_text=True,
                needs_background=True))
