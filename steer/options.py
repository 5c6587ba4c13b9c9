"""Typed options of every method family: one frozen dataclass each, with defaults, help and checks, and JSON.

An option is defined once, as a field of its family's class: its default, its help
(``metadata={"help": ...}``) and its check (in ``__post_init__``, through
:mod:`steer.checks`). The command line's flags (:func:`steer.cli.options.add_flags`), a sweep's
config, a :class:`steer.spec.SteeringSpec` and a serving request all read them from here.

Families: ``corpus`` (how the corpus is read and counted), ``prior`` (the seed paper's prior),
``guided`` (the contrastive / plausible / KL-budgeted variants), ``activation``, ``hso``, and,
defined beside what they configure, ``prompt`` (:class:`steer.baselines.prompt.StylePrompt`),
``lora`` (:class:`steer.baselines.lora.LoraTrainConfig`) and ``decoding``
(:class:`steer.generation.DecodeConfig`).

Example:
    >>> opts = GuidedOptions.from_dict({"plausibility": 0.05})
    >>> opts.plausibility, opts.kl_max_lam
    (0.05, 8.0)
    >>> GuidedOptions.from_dict(opts.to_dict()) == opts
    True
    >>> GuidedOptions.from_dict({"plausibility": 2})
    Traceback (most recent call last):
    ...
    ValueError: `guided`: `plausibility` must be a finite number in (0, 1], got 2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

from steer import checks


def option(default, help: str, **meta):
    """A dataclass field with its default and help (``flag``: the command line's name where it differs)."""
    return field(default=default, metadata={"help": help, **meta})


def _json(value):
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


@dataclass(frozen=True)
class Options:
    """Base of the option families: JSON round trip, unknown keys refused, errors named by family."""

    family: ClassVar[str] = ""

    def to_dict(self) -> dict:
        """Every option, JSON-ready (tuples become lists)."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}

    def changed(self) -> dict:
        """The options that differ from their defaults, JSON-ready."""
        default = type(self)()
        return {k: v for k, v in self.to_dict().items() if v != _json(getattr(default, k))}

    @classmethod
    def from_dict(cls, data: dict | None = None) -> Options:
        """The options of ``data`` (the others keep their defaults), checked; unknown keys are refused."""
        if data is None:
            return cls()
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"`{cls.family}` options must be an object, got {data!r}")
        known = sorted(f.name for f in fields(cls))
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"`{cls.family}` has unknown options {unknown}; known: {known}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"`{cls.family}`: {err}") from None

    def __str__(self) -> str:
        return json.dumps(self.to_dict())


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses keep the canonical form of a checked value


@dataclass(frozen=True)
class CorpusOptions(Options):
    """How a style corpus is read and counted (the same for every method of a study)."""

    family: ClassVar[str] = "corpus"
    order: int = option(3, "highest n-gram order N of the style and background tables")
    judge_fraction: float = option(0.2, "share of each corpus held out for the judges, never seen by any method")
    encoding: str = option("utf-8", "text encoding of corpus files")

    def __post_init__(self):
        checks.integer("order", self.order, low=1)
        _set(self, "judge_fraction", checks.number("judge_fraction", self.judge_fraction, 0, 0.5))
        checks.text("encoding", self.encoding)


@dataclass(frozen=True)
class PriorOptions(Options):
    """The seed paper's prior (:class:`steer.style.NGramStylePrior`): which estimate is added.

    The default is the paper's form, a weighted sum of per-order add-alpha log-probabilities; its
    weights are ours (the paper's are not given).
    """

    family: ClassVar[str] = "prior"
    smoothing: Literal["add_alpha", "kneser_ney"] = option(
        "add_alpha", "estimate of the prior (add_alpha: the seed paper's weighted orders)")
    mode: Literal["logsum", "mixture"] = option(
        "logsum", "how add-alpha orders combine (logsum, as in the seed paper, or a normalised mixture)")
    weights: tuple[float, ...] | None = option((0.2, 0.3, 0.5), "per-order weights b_1..b_N of add-alpha "
                                               "(one per order; none: equal weights)")
    alpha: float = option(0.01, "add-alpha pseudo-count")
    discount: float = option(0.75, "Kneser-Ney discount D")

    def __post_init__(self):
        checks.choice("smoothing", self.smoothing, ("add_alpha", "kneser_ney"))
        checks.choice("mode", self.mode, ("logsum", "mixture"))
        if self.weights is not None:
            _set(self, "weights", checks.numbers("weights", self.weights, low=0))
        _set(self, "alpha", checks.number("alpha", self.alpha, 0, low_open=True))
        _set(self, "discount", checks.number("discount", self.discount, 0, 1, low_open=True, high_open=True))

    def lookup(self) -> dict:
        """The keyword options of :meth:`ngram.NGramTable.logprobs` this estimate is (only those that apply)."""
        if self.smoothing == "kneser_ney":
            return {"smoothing": "kneser_ney", "discount": self.discount}
        out = {"smoothing": "add_alpha", "mode": self.mode, "alpha": self.alpha}
        if self.weights is not None:
            out["weights"] = list(self.weights)
        return {k: out[k] for k in ("smoothing", "mode", "weights", "alpha") if k in out}


@dataclass(frozen=True)
class GuidedOptions(Options):
    """The steering variants (:class:`steer.priors.GuidedStylePrior`): what the bonus is, where, how strong."""

    family: ClassVar[str] = "guided"
    plausibility: float = option(0.1, "alpha of the plausible methods: the bonus applies where p >= alpha max p")
    clip: float | None = option(None, "clip the variants' bonus to [-C, C] (none: no clipping)")
    kl_max_lam: float = option(8.0, "strength cap of the KL-budgeted methods (the budget, not lam, binds)")
    centre: bool = option(False, "the plausible methods centre the bonus over their support (its mean under the "
                                 "model there is subtracted)")
    mask: bool = option(False, "the plausible methods set the tokens outside their support to -inf")
    temper: bool = option(False, "the variants divide their steered scores by a per-row temperature that brings "
                                 "the distribution's entropy back to the model's (sampling only)")
    fresh: int | None = option(None, "no positive bonus for a token that would repeat an N-gram the text already "
                                     "holds (the style is rewarded once per N-gram; none: off)")

    def __post_init__(self):
        _set(self, "plausibility", checks.number("plausibility", self.plausibility, 0, 1, low_open=True))
        if self.clip is not None:
            _set(self, "clip", checks.number("clip", self.clip, 0, low_open=True))
        _set(self, "kl_max_lam", checks.number("kl_max_lam", self.kl_max_lam, 0, low_open=True))
        for name in ("centre", "mask", "temper"):
            checks.boolean(name, getattr(self, name))
        if self.fresh is not None:
            checks.integer("fresh", self.fresh, low=1)


@dataclass(frozen=True)
class ActivationOptions(Options):
    """Activation steering (:mod:`steer.activation`): where the style vector goes, how it is measured."""

    family: ClassVar[str] = "activation"
    layers: tuple[int, ...] | None = option(
        None, "decoder layers (0-based) the style vector is added at (none: one, at 72 % of the depth)")
    position: Literal["mean", "last"] = option(
        "mean", "style vectors from activations averaged over tokens, or at each chunk's last token")
    normalise: bool = option(True, "rescale the style vector to the residual stream's typical norm (off: the "
                                   "scale is in the activations' own units)", flag="activation-raw")
    scale: float = option(0.125, "the style vector's scale that the combined methods hold fixed")
    chunk_tokens: int = option(64, "tokens per chunk the vector is measured on")
    max_chunks: int = option(128, "chunks of each corpus the vector is measured on")

    def __post_init__(self):
        if self.layers is not None:
            _set(self, "layers", checks.ints("layers", self.layers, low=0))
        checks.choice("position", self.position, ("mean", "last"))
        checks.boolean("normalise", self.normalise)
        _set(self, "scale", checks.number("scale", self.scale))
        checks.integer("chunk_tokens", self.chunk_tokens, low=2)
        checks.integer("max_chunks", self.max_chunks, low=1)


@dataclass(frozen=True)
class HSOOptions(Options):
    """Hidden-state optimisation (:mod:`steer.hso`) of the exemplars' cache.

    ``lr``: the best of 0.001-0.1 on held-out perplexity of steer-split passages (docs/hso.md).
    """

    family: ClassVar[str] = "hso"
    segment: int = option(64, "tokens per segment of the optimisation of the exemplars' cache")
    lr: float = option(0.03, "learning rate (Adam)")
    steps: int = option(2, "steps per segment that hso+contrastive+plausible holds fixed")

    def __post_init__(self):
        checks.integer("segment", self.segment, low=1)
        _set(self, "lr", checks.number("lr", self.lr, 0, low_open=True))
        checks.integer("steps", self.steps, low=0)


_FAMILIES: dict[str, type[Options]] = {}


def families() -> dict[str, type[Options]]:
    """Every option family by name (importing the modules that define the last three)."""
    if not _FAMILIES:
        from steer.baselines.lora import LoraTrainConfig
        from steer.baselines.prompt import StylePrompt
        from steer.generation import DecodeConfig

        for cls in (CorpusOptions, PriorOptions, GuidedOptions, ActivationOptions, HSOOptions, StylePrompt,
                    LoraTrainConfig, DecodeConfig):
            _FAMILIES[cls.family] = cls
    return dict(_FAMILIES)


def family(name: str) -> type[Options]:
    """The options class of family ``name``."""
    known = families()
    if name not in known:
        raise ValueError(f"unknown option family {name!r}: one of {sorted(known)}")
    return known[name]
