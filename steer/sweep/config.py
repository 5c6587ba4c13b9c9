"""A sweep's settings: the grid of cells (corpora x methods x knobs), each one a steering spec."""

from __future__ import annotations

import math
import platform
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from steer.baselines.lora import LoraTrainConfig
from steer.baselines.prompt import StylePrompt
from steer.generation import DecodeConfig
from steer.methods import REFERENCE, get_method, listed_names, switches
from steer.options import ActivationOptions, CorpusOptions, GuidedOptions, HSOOptions, PriorOptions, family
from steer.runs import normalise
from steer.spec import SteeringSpec, is_table_file
from steer.style import check_lam

PROMPTS_PATH = Path(__file__).parent.parent / "data" / "prompts.txt"

NEUTRAL_CORPUS = "background"


def read_prompts(path) -> list[str]:
    """Prompts from a text file, one a line; blank lines are skipped."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def builtin_prompts() -> list[str]:
    """The neutral prompt set shipped with steer (one prompt a line)."""
    return read_prompts(PROMPTS_PATH)


def parse_lambdas(text: str) -> list[float]:
    """'0,0.1,1' -> [0.0, 0.1, 1.0]; a clear error for anything else."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"`lambdas` must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"`lambdas` must hold at least one number, got {text!r}")
    return [check_lam(v) for v in values]


@dataclass
class SweepConfig:
    """Every setting of a sweep (written to config.json beside the results).

    The options of the methods are those of their families (:mod:`steer.options`), stored as the
    values given (the others keep their defaults): each cell is the :class:`steer.spec.SteeringSpec`
    of :meth:`spec`.

    Attributes:
        model: model folder or hub id.
        corpora: corpus names or paths; a ``.safetensors`` path is a saved
            table (``steer build-table``), steered with as it is (no text, so
            no prompt or LoRA baseline for it).
        lambdas: the knob values of the seed paper's prior (and of every method without
            default knobs); 0 (the unsteered cell) is always added.
        prompts: prompt texts (default: the built-in neutral set).
        samples: continuations per prompt (seeds seed, seed+1, ...).
        max_new_tokens, seed, decoding, loop_ban, num_beams, temperature, top_p: the
            ``decoding`` options (:class:`steer.generation.DecodeConfig`), every cell alike.
        order, judge_fraction, encoding: the ``corpus`` options (:class:`steer.options.CorpusOptions`);
            the judges need ``judge_fraction`` >= 0.15.
        prior: the ``prior`` options (:class:`steer.options.PriorOptions`).
        table_metrics: also compute the columns that score text with the steering table itself
            (steer_table_ppl, overlap_1-3) or against the unsteered text (jaccard_vs_unsteered,
            prefix_vs_unsteered); they favour the prior by construction, so they are off by default
            (NaN) and kept for comparison with earlier runs, which computed them.
        metric_smoothing: estimate used for steer_table_ppl (Kneser-Ney).
        judges: which held-out judges score the cells (see steer.judges.panel.JUDGES).
        fluency_judge: a second model (folder, GGUF file, packaged model or hub id), ideally of
            another family, under which every continuation's perplexity is measured as well:
            ``cross_ppl`` (:class:`steer.judges.fluency.CrossModelFluency`), a fluency figure the
            steered model does not compute. None: only ``base_ppl``.
        classifier: options of the style classifier (steer.judges.classifier.StyleClassifier).
        neutral: the corpus of the classifier's neutral class (the base model's books).
        baselines: switches of the baseline methods (:func:`steer.methods.switches`): "prompt"
            (style prompting and the prior with prompting) and "lora" (a LoRA adapter per corpus).
        methods: further registered methods to run (:func:`steer.methods.listed_names`).
        knobs: method name -> knob values, overriding the method's defaults.
        background: the corpus contrastive and activation methods measure against.
        guided, activation, hso, style_prompt, lora: the ``guided``, ``activation``, ``hso``,
            ``prompt`` and ``lora`` options (:mod:`steer.options`); a dict gives some of them, the
            others keep their defaults.
    """

    model: str
    corpora: list[str]
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    prompts: list[str] = field(default_factory=builtin_prompts)
    max_new_tokens: int = DecodeConfig.max_new_tokens
    samples: int = 1
    seed: int = DecodeConfig.seed
    decoding: str = DecodeConfig.decoding
    loop_ban: list[int] | None = DecodeConfig.loop_ban
    num_beams: int = DecodeConfig.num_beams
    temperature: float = DecodeConfig.temperature
    top_p: float = DecodeConfig.top_p
    order: int = CorpusOptions.order
    prior: PriorOptions = field(default_factory=PriorOptions)
    table_metrics: bool = False
    metric_smoothing: str = "kneser_ney"
    judge_fraction: float = CorpusOptions.judge_fraction
    encoding: str = CorpusOptions.encoding
    judges: list[str] = field(default_factory=lambda: ["heldout_ppl", "classifier", "diversity"])
    fluency_judge: str | None = None
    classifier: dict = field(default_factory=dict)
    neutral: str = NEUTRAL_CORPUS
    baselines: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    knobs: dict = field(default_factory=dict)
    background: str = NEUTRAL_CORPUS
    guided: GuidedOptions = field(default_factory=GuidedOptions)
    activation: ActivationOptions = field(default_factory=ActivationOptions)
    hso: HSOOptions = field(default_factory=HSOOptions)
    style_prompt: StylePrompt = field(default_factory=StylePrompt)
    lora: LoraTrainConfig = field(default_factory=LoraTrainConfig)

    def __post_init__(self):
        if not self.corpora:
            raise ValueError("`corpora` must name at least one corpus")
        if not self.prompts:
            raise ValueError("`prompts` must hold at least one prompt")
        self.lambdas = sorted({check_lam(x) for x in self.lambdas} | {0.0})
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"`samples` must be an int >= 1, got {self.samples!r}")
        bad = [b for b in self.baselines if b not in switches()]
        if bad:
            raise ValueError(f"`baselines` must be among {switches()}, got {bad}")
        self.baselines = sorted(set(self.baselines))
        for name in self.methods:
            get_method(name)
        if len(set(self.methods)) != len(self.methods) or not set(self.methods) <= set(listed_names()):
            raise ValueError(f"`methods` must name other registered methods once each, got {self.methods}")
        for name, values in self.knobs.items():
            if name not in self.methods:
                raise ValueError(f"`knobs` has values for {name!r}, which is not in `methods` {self.methods}")
            if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                                 or v < 0 for v in values):
                raise ValueError(f"`knobs[{name!r}]` must be finite numbers >= 0, got {values!r}")
        # Every option family typed and checked (a dict, as config.json holds it, gives some of its options).
        for key, name in {**FAMILY_FIELDS, "prior": "prior"}.items():
            setattr(self, key, family(name).from_dict(getattr(self, key)))
        self.decode(0)
        if not 0.15 <= self.judge_fraction <= 0.5:
            raise ValueError(f"`judge_fraction` must lie in [0.15, 0.5], got {self.judge_fraction}")
        from steer.judges.panel import JUDGES

        bad = [j for j in self.judges if j not in JUDGES]
        if bad:
            raise ValueError(f"`judges` must be among {JUDGES}, got {bad}")
        if "classifier" in self.judges:
            from steer.judges.classifier import _sklearn

            _sklearn()
        if self.fluency_judge is not None and (not isinstance(self.fluency_judge, str) or not self.fluency_judge
                                               or self.fluency_judge == self.model):
            raise ValueError(f"`fluency_judge` must name a model other than the steered one ({self.model!r}), "
                             f"got {self.fluency_judge!r}")
        tables = [c for c in self.corpora if is_table_file(c)]
        if tables and any(get_method(m).needs_background for m in self.methods):
            raise ValueError(f"contrastive methods need corpus text, but {tables} are saved tables")
        if tables and (self.baselines or self.judges):
            raise ValueError(f"baselines and judges need corpus text, but {tables} are saved tables; give "
                             "those corpora by name or text path, or pass no baselines and judges=[]")

    def options(self, sample: int = 0) -> dict:
        """The options of every family, as this sweep sets them (decoding's seed: ``seed + sample``)."""
        out = {"corpus": CorpusOptions.from_dict({"order": self.order, "judge_fraction": self.judge_fraction,
                                                  "encoding": self.encoding}),
               "prior": self.prior, "decoding": self.decode(sample)}
        out.update({name: getattr(self, key) for key, name in FAMILY_FIELDS.items()})
        return out

    def decode(self, sample: int) -> DecodeConfig:
        return DecodeConfig.from_dict(dict(max_new_tokens=self.max_new_tokens, decoding=self.decoding,
                                           num_beams=self.num_beams, temperature=self.temperature,
                                           top_p=self.top_p, seed=self.seed + sample, loop_ban=self.loop_ban))

    def spec(self, corpus: str, method: str, knob: float, sample: int = 0) -> SteeringSpec:
        """The steering spec of one cell (its decoding seeded for continuation ``sample``)."""
        m = get_method(method)
        options = self.options(sample)
        return SteeringSpec(method, corpus, knob, self.background if m.needs_background else None,
                            {name: options[name] for name in m.families()})

    def method_names(self) -> list[str]:
        """Every method of the sweep, in the order cells run: the reference, the baselines switched on, the others."""
        from steer.methods import REGISTRY

        return [REFERENCE, *(m.name for m in REGISTRY.values() if m.switch in self.baselines), *self.methods]

    def knob_values(self, name: str) -> list[float]:
        """The knob values a method is swept over (``knobs``, its defaults, or the lambdas)."""
        method = get_method(name)
        if name in self.knobs:
            return sorted(float(v) for v in self.knobs[name])
        if method.knobs is not None:
            return list(method.knobs)
        return [lam for lam in self.lambdas if lam > 0 or not method.positive_knobs]

    def cells(self) -> list[tuple[str, str, float]]:
        """Every (corpus, method, knob) cell, in the order they are run and reported."""
        return [(c, m, k) for c in self.corpora for m in self.method_names() for k in self.knob_values(m)]


def config_defaults() -> dict:
    """SweepConfig's default values (JSON form): a setting added since a run began, left at its default,
    does not stop that run from resuming."""
    out = {}
    for f in fields(SweepConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING and f.name != "prompts":
            value = f.default_factory()
            out[f.name] = asdict(value) if is_dataclass(value) else value
    return normalise(out)


# The SweepConfig fields that hold an option family's given values, and the family.
FAMILY_FIELDS = {"guided": "guided", "activation": "activation", "hso": "hso", "style_prompt": "prompt", "lora": "lora"}


def canonical_config(stored: dict) -> dict:
    """A sweep's config.json settings with every option family written out in full, so that an option
    given at its default compares equal to one left out (settings that do not parse stay as they are)."""
    out = dict(stored)
    for key, name in FAMILY_FIELDS.items():
        if isinstance(out.get(key), dict):
            try:
                out[key] = family(name).from_dict(out[key]).to_dict()
            except ValueError:
                pass
    if isinstance(out.get("prior"), dict):
        try:
            out["prior"] = PriorOptions.from_dict(out["prior"]).lookup()
        except ValueError:
            pass
    return out


def package_versions() -> dict:
    import numpy
    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "numpy": numpy.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return versions
