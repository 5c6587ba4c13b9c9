"""The registry of steering methods: each turns (model, corpus, knob, options) into what to generate with.

A method is one :class:`Method` entry: its name, what its knob means, the
knob values a sweep tries by default, the option families it reads
(:mod:`steer.options`), its role (``steered``, or ``baseline``: a reference the
steered methods are compared with), and ``build(context, knob)`` returning a
:class:`Setup` (the model to generate with, a prompt prefix, logits
processors, a context manager, costs). Nothing outside this module branches on
method names; a new method is one :func:`register` call.

Methods receive only a corpus's steer split (through ``context.corpus`` and the
tables built from it); the judges never see them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field


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
    """What a method may use: the frozen model, the corpus's steer split, tables built from it, the options.

    ``table()``, ``background()``, ``background_corpus()`` and ``lora()`` build lazily and are cached
    by whoever made the context (a spec, a sweep); ``memo`` keeps what a method derives once per corpus
    (a style vector, an optimised cache). ``options`` maps an option family's name to its options;
    a family left out takes its defaults.
    """

    model: object
    tokenizer: object
    corpus: object  # steer.corpora.Corpus, or None for a corpus given as a saved table
    options: dict
    table: Callable[[], object]
    background: Callable[[], object]
    lora: Callable[[], tuple]
    background_corpus: Callable[[], object] | None = None  # steer.corpora.Corpus; methods use its steer split
    memo: dict = field(default_factory=dict)

    def get(self, name: str):
        """The options of family ``name`` (its defaults where none were given)."""
        from steer.options import family

        value = self.options.get(name)
        return family(name).from_dict(value)


ROLES = ("steered", "baseline")


@dataclass(frozen=True)
class Method:
    """A registered steering method.

    Attributes:
        name: the name results use (variants join their parts with "+").
        knob: what the knob is ("lam", "eps" for a KL budget, "scale", "steps", "" for none).
        knobs: default knob values of a sweep (None: the sweep's --lambdas).
        build: (context, knob) -> Setup.
        options: the option families it reads (besides ``corpus`` and ``decoding``, which every method reads).
        role: "steered", or "baseline" (a reference: prompting, LoRA and the prior with prompting).
        switch: the sweep's ``baselines`` entry that runs it (None: listed in ``methods``, or the reference).
        needs_text: needs the corpus's text (not just a table).
        needs_background: needs the background corpus (contrastive and activation methods).
        positive_knobs: a sweep runs it at knob values > 0 only (its knob 0 is another method's cell).
        servable: whether a serving engine can apply it (a logits processor of the n-gram tables alone).
        origin: the method whose cell is this one's knob 0 (None: the unsteered cell), where figures start
            its curve.
    """

    name: str
    knob: str
    knobs: tuple | None
    build: Callable[[Context, float], Setup]
    options: tuple[str, ...] = ()
    role: str = "steered"
    switch: str | None = None
    needs_text: bool = False
    needs_background: bool = False
    positive_knobs: bool = False
    servable: bool = False
    origin: str | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"`role` must be one of {ROLES}, got {self.role!r}")

    def families(self) -> tuple[str, ...]:
        """Every option family this method's spec holds, in a fixed order (an unknown one is named here:
        checked on use rather than at registration, which would import every family's module)."""
        from steer.options import family

        names = ("corpus", *self.options, "decoding")
        for name in names:
            family(name)
        return names


REGISTRY: dict[str, Method] = {}
# The method whose knob 0 is the unsteered cell every other is compared with: the seed paper's prior at lam = 0.
REFERENCE = "prior"


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


def servable_method(name) -> Method:
    """The registered method ``name``, if a serving engine can apply it (a logits processor of the tables alone)."""
    if name not in REGISTRY or not REGISTRY[name].servable:
        why = ("it steers more than the logits (hooks, a cache, a prefix or an adapter)" if name in REGISTRY
               else "it is not a registered method")
        served = [m.name for m in REGISTRY.values() if m.servable]
        raise ValueError(f"method {name!r} cannot be served ({why}); the serving adapters apply {served}")
    return REGISTRY[name]


def baseline_names() -> tuple[str, ...]:
    """The registered methods whose role is baseline."""
    return tuple(m.name for m in REGISTRY.values() if m.role == "baseline")


def switches() -> tuple[str, ...]:
    """The sweep's ``baselines`` entries (each runs the methods registered with that switch)."""
    return tuple(dict.fromkeys(m.switch for m in REGISTRY.values() if m.switch))


def listed_names() -> tuple[str, ...]:
    """The methods a sweep runs when named in its ``methods`` (neither the reference nor switched on)."""
    return tuple(m.name for m in REGISTRY.values() if m.switch is None and m.name != REFERENCE)


def method_of(row: dict) -> str:
    """The method of a result or sample row (rows written before sweeps ran several methods name none:
    they are the reference method's)."""
    return row.get("method", REFERENCE)


def is_unsteered(method: str, knob: float) -> bool:
    """Whether a cell is the unsteered one (the reference method at knob 0)."""
    return method == REFERENCE and knob == 0.0


# ---------------------------------------------------------------- the paper's prior and the baselines
def _table_costs(table) -> dict:
    return {"train_s": table.stats.get("build_seconds", float("nan")), "extra_mem_mb": table.nbytes / 2**20}


def _prior(ctx: Context, lam: float) -> Setup:
    from steer.style import NGramStylePrior

    table = ctx.table()
    # lam = 0 keeps the (identity) processor, so that the unsteered cell records JS = 0 like the others.
    return Setup(processors=[NGramStylePrior(table, lam, ctx.tokenizer, **ctx.get("prior").lookup())],
                 costs=_table_costs(table), lam=lam)


def _prompt(ctx: Context, knob: float) -> Setup:
    prefix = ctx.get("prompt").prefix(ctx.corpus.steer, ctx.tokenizer)
    return Setup(prefix=prefix, costs={"train_s": 0.0, "extra_mem_mb": 0.0})


def _prior_prompt(ctx: Context, lam: float) -> Setup:
    setup = _prior(ctx, lam)
    setup.prefix = _prompt(ctx, 0.0).prefix
    return setup


def _lora(ctx: Context, knob: float) -> Setup:
    model, meta, nbytes = ctx.lora()
    return Setup(model=model, costs={"train_s": meta["wall_seconds"], "extra_mem_mb": nbytes / 2**20})


register(Method(REFERENCE, "lam", None, _prior, options=("prior",), servable=True))
register(Method("prompt", "", (0.0,), _prompt, options=("prompt",), role="baseline", switch="prompt",
                needs_text=True))
register(Method("prior+prompt", "lam", None, _prior_prompt, options=("prior", "prompt"), role="baseline",
                switch="prompt", needs_text=True, positive_knobs=True, origin="prompt"))
register(Method("lora", "", (0.0,), _lora, options=("lora",), role="baseline", switch="lora", needs_text=True))


# ---------------------------------------------------------------- variants (steer.priors.GuidedStylePrior)
@dataclass(frozen=True)
class Variant:
    """What a variant of :class:`steer.priors.GuidedStylePrior` is made of."""

    contrastive: bool  # subtracts a background table
    plausible: bool  # the bonus applies on the plausible tokens only
    strength: str  # "constant", "entropy" or "kl" (the knob is then the budget eps)
    knobs: tuple  # default knob values of a sweep


VARIANTS = {
    "contrastive": Variant(True, False, "constant", (0.25, 0.5, 1.0, 2.0)),
    "contrastive+plausible": Variant(True, True, "constant", (1.0, 2.0, 4.0, 8.0)),
    "contrastive+entropy": Variant(True, False, "entropy", (0.5, 1.0, 2.0, 4.0)),
    "contrastive+kl": Variant(True, False, "kl", (0.02, 0.04, 0.06, 0.1)),
    "contrastive+plausible+kl": Variant(True, True, "kl", (0.02, 0.04, 0.06, 0.1)),
    "plausible": Variant(False, True, "constant", (0.5, 1.0, 2.0, 4.0)),
    "kl": Variant(False, False, "kl", (0.02, 0.04, 0.06, 0.1)),
}


def guided_prior(name: str, table, knob: float, background=None, options=None, tokenizer=None):
    """The GuidedStylePrior of variant ``name`` at knob value ``knob`` (lam, or the KL budget eps).

    ``options``: :class:`steer.options.GuidedOptions` (or its dict); ``background``: the table
    contrastive variants subtract.
    """
    from steer.options import GuidedOptions
    from steer.priors import GuidedStylePrior

    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: one of {sorted(VARIANTS)}")
    v = VARIANTS[name]
    if v.contrastive and background is None:
        raise ValueError(f"variant {name!r} subtracts a background table: give `background`")
    o = GuidedOptions.from_dict(options)
    kl = v.strength == "kl"
    return GuidedStylePrior(table, o.kl_max_lam if kl else knob, background=background if v.contrastive else None,
                            clip=o.clip, plausibility=o.plausibility if v.plausible else None, strength=v.strength,
                            kl_budget=knob if kl else None, tokenizer=tokenizer, centre=o.centre and v.plausible,
                            mask=o.mask and v.plausible, temper=o.temper, fresh=o.fresh)


def _guided(name: str) -> Callable[[Context, float], Setup]:
    def build(ctx: Context, knob: float) -> Setup:
        table = ctx.table()
        background = ctx.background() if VARIANTS[name].contrastive else None
        prior = guided_prior(name, table, knob, background, ctx.get("guided"), ctx.tokenizer)
        costs = _table_costs(table)
        if background is not None:
            costs["extra_mem_mb"] += background.nbytes / 2**20
        return Setup(processors=[prior], costs=costs, lam=prior.lam)

    return build


for _name, _v in VARIANTS.items():
    register(Method(_name, "eps" if _v.strength == "kl" else "lam", _v.knobs, _guided(_name), options=("guided",),
                    needs_background=_v.contrastive, servable=True))


# ---------------------------------------------------------------- activation steering (steer.activation)
def _style_vector(ctx: Context):
    """The corpus's style vector (steer split against the background's), measured once per corpus."""
    from steer.activation import vector_for

    o = ctx.get("activation")
    background = ctx.background_corpus()
    key = ("style_vector", background.steer_digest, o.position, o.chunk_tokens, o.max_chunks)
    if key not in ctx.memo:
        ctx.memo[key] = vector_for(ctx.model, ctx.tokenizer, ctx.corpus, background,
                                   position=o.position, chunk_tokens=o.chunk_tokens, max_chunks=o.max_chunks)
    return ctx.memo[key]


def _activation_setup(ctx: Context, scale: float) -> Setup:
    from steer.activation import ActivationSteering, default_layers

    o = ctx.get("activation")
    vector = _style_vector(ctx)
    layers = list(o.layers) if o.layers is not None else default_layers(ctx.model)
    hooks = ActivationSteering(ctx.model, vector, layers, scale, normalise=o.normalise)
    costs = {"train_s": vector.meta.get("seconds", float("nan")),
             "extra_mem_mb": vector.vectors.numel() * 4 / 2**20}
    return Setup(costs=costs, lam=0.0, context=lambda: hooks)


def _activation_guided(ctx: Context, lam: float) -> Setup:
    """The style vector at the fixed ``activation.scale`` plus contrastive+plausible at strength ``lam``."""
    setup = _guided("contrastive+plausible")(ctx, lam)
    hooked = _activation_setup(ctx, ctx.get("activation").scale)
    setup.context = hooked.context
    setup.costs = {"train_s": setup.costs["train_s"] + hooked.costs["train_s"],
                   "extra_mem_mb": setup.costs["extra_mem_mb"] + hooked.costs["extra_mem_mb"]}
    return setup


register(Method("activation", "scale", (0.0625, 0.125, 0.25, 0.375), _activation_setup, options=("activation",),
                needs_text=True, needs_background=True))
register(Method("activation+contrastive+plausible", "lam", (1.0, 2.0, 4.0), _activation_guided,
                options=("guided", "activation"), needs_text=True, needs_background=True))


# ---------------------------------------------------------------- hidden-state optimisation (steer.hso)
def _hso_setup(ctx: Context, steps: float) -> Setup:
    """The prompt method's exemplars, their cache optimised with ``steps`` steps per segment (0: plain)."""
    from steer.hso import HSOConfig, read_prefix
    from steer.models import encode_prompts

    if steps != int(steps) or steps < 0:
        raise ValueError(f"the `hso` knob is a step count (an int >= 0), got {steps!r}")
    o = ctx.get("hso")
    prefix = _prompt(ctx, 0.0).prefix
    key = ("hso", prefix, int(steps), o.segment, o.lr)
    if key not in ctx.memo:
        ids = encode_prompts(ctx.tokenizer, [prefix])["input_ids"][0].tolist()
        ctx.memo[key] = read_prefix(ctx.model, ids, HSOConfig(segment=o.segment, steps=int(steps), lr=o.lr))
    cached = ctx.memo[key]
    state = cached.state
    nbytes = sum(t.numel() * t.element_size() for t in state.leaves())
    return Setup(prefix=prefix, prefix_cache=cached, lam=0.0,
                 costs={"train_s": state.seconds, "extra_mem_mb": nbytes / 2**20})


def _hso_guided(ctx: Context, lam: float) -> Setup:
    """The exemplars' cache optimised with the fixed ``hso.steps``, plus contrastive+plausible at ``lam``."""
    setup = _guided("contrastive+plausible")(ctx, lam)
    cached = _hso_setup(ctx, ctx.get("hso").steps)
    setup.prefix, setup.prefix_cache = cached.prefix, cached.prefix_cache
    setup.costs = {"train_s": setup.costs["train_s"] + cached.costs["train_s"],
                   "extra_mem_mb": setup.costs["extra_mem_mb"] + cached.costs["extra_mem_mb"]}
    return setup


register(Method("hso", "steps", (1.0, 2.0, 4.0), _hso_setup, options=("prompt", "hso"), needs_text=True))
register(Method("hso+contrastive+plausible", "lam", (1.0, 2.0, 4.0), _hso_guided,
                options=("prompt", "guided", "hso"), needs_text=True, needs_background=True))
