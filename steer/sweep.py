"""The style study: model x corpora x lambdas (x baselines) -> metrics, samples, plot. No argv here."""

from __future__ import annotations

import csv
import functools
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from steer import metrics as M
from steer.corpora import Corpus, load_corpus
from steer.generation import DecodeConfig, continuation_texts, continue_prompts
from steer.methods import REFERENCE, get_method, is_unsteered, listed_names, switches
from steer.monitor import DivergenceRecorder
from steer.options import CorpusOptions, PriorOptions
from steer.runs import RunLock, check_same_config, normalise
from steer.spec import SteeringSpec, Workshop, is_table_file
from steer.style import check_lam

PROMPTS_PATH = Path(__file__).with_name("data") / "prompts.txt"
# Judge figures (held-out, independent of every method), then the older
# figures: steer_table_ppl and overlap_n use the steering table itself and
# so favour the prior by construction.
JUDGE_METRICS = ["judge_hit", "judge_hit_lo", "judge_hit_hi", "judge_p_target", "heldout_style_ppl",
                 "degenerate_rate", "distinct_1", "distinct_2", "self_bleu"]
# 95 % bootstrap intervals over prompts, computed from samples.jsonl when results are written.
INTERVALS = ["judge_p_target", "heldout_style_ppl", "degenerate_rate", "base_ppl"]
METRICS = [*JUDGE_METRICS, "base_ppl", "steer_table_ppl", "js_div", "overlap_1", "overlap_2", "overlap_3",
           "jaccard_vs_unsteered", "prefix_vs_unsteered", "mean_len",
           *[f"{m}_{end}" for m in INTERVALS for end in ("lo", "hi")]]
COSTS = ["train_s", "infer_ms_per_token", "extra_mem_mb"]
# Relative change vs the unsteered cell. Not for JS divergence (0 at lam = 0 by
# definition) nor for interval bounds.
REL_METRICS = ["judge_hit", "judge_p_target", "heldout_style_ppl", "base_ppl", "steer_table_ppl",
               "degenerate_rate", "distinct_2", "self_bleu", "overlap_3"]
COLUMNS = ["corpus", "method", "lam", "knob", "n_samples", *METRICS, *COSTS, *[f"{m}_rel" for m in REL_METRICS]]
NEUTRAL_CORPUS = "background"
# Every comparison at matched fluency and against the constraints, one row each, its table named in `kind`.
COMPARISONS = "comparisons.csv"
SUPERSEDED = ("results.json", "matched.csv", "matched_variants.csv", "matched_methods.csv", "no_worse_fluency.csv",
              "constraints.csv", "holding.csv")
# Per-sample values kept in samples.jsonl (judges, fluency), for paired comparisons.
SAMPLE_VALUES = ["judge_hit", "judge_p_target", "heldout_nll", "heldout_words", "degenerate", "base_nll",
                 "base_tokens"]


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
        prior: the ``prior`` options, as the table lookup takes them (:meth:`steer.options.PriorOptions.lookup`).
        metric_smoothing: estimate used for steer_table_ppl (Kneser-Ney).
        judges: which held-out judges score the cells (see steer.judges.panel.JUDGES).
        classifier: options of the style classifier (steer.judges.classifier.StyleClassifier).
        neutral: the corpus of the classifier's neutral class (the base model's books).
        baselines: switches of the baseline methods (:func:`steer.methods.switches`): "prompt"
            (style prompting and the prior with prompting) and "lora" (a LoRA adapter per corpus).
        methods: further registered methods to run (:func:`steer.methods.listed_names`).
        knobs: method name -> knob values, overriding the method's defaults.
        background: the corpus contrastive and activation methods measure against.
        guided, activation, hso, style_prompt, lora: the ``guided``, ``activation``, ``hso``,
            ``prompt`` and ``lora`` options given (the others keep their defaults).
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
    prior: dict = field(default_factory=lambda: PriorOptions().lookup())
    metric_smoothing: str = "kneser_ney"
    judge_fraction: float = CorpusOptions.judge_fraction
    encoding: str = CorpusOptions.encoding
    judges: list[str] = field(default_factory=lambda: ["heldout_ppl", "classifier", "diversity"])
    classifier: dict = field(default_factory=dict)
    neutral: str = NEUTRAL_CORPUS
    baselines: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    knobs: dict = field(default_factory=dict)
    background: str = NEUTRAL_CORPUS
    guided: dict = field(default_factory=dict)
    activation: dict = field(default_factory=dict)
    hso: dict = field(default_factory=dict)
    style_prompt: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)

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
        self.options(0)  # validates every option family
        if not 0.15 <= self.judge_fraction <= 0.5:
            raise ValueError(f"`judge_fraction` must lie in [0.15, 0.5], got {self.judge_fraction}")
        from steer.judges.panel import JUDGES

        bad = [j for j in self.judges if j not in JUDGES]
        if bad:
            raise ValueError(f"`judges` must be among {JUDGES}, got {bad}")
        if "classifier" in self.judges:
            from steer.judges.classifier import _sklearn

            _sklearn()
        tables = [c for c in self.corpora if is_table_file(c)]
        if tables and any(get_method(m).needs_background for m in self.methods):
            raise ValueError(f"contrastive methods need corpus text, but {tables} are saved tables")
        if tables and (self.baselines or self.judges):
            raise ValueError(f"baselines and judges need corpus text, but {tables} are saved tables; give "
                             "those corpora by name or text path, or pass no baselines and judges=[]")

    def options(self, sample: int = 0) -> dict:
        """The options of every family, as this sweep sets them (decoding's seed: ``seed + sample``)."""
        from steer.options import family

        out = {"corpus": CorpusOptions.from_dict({"order": self.order, "judge_fraction": self.judge_fraction,
                                                  "encoding": self.encoding}),
               "prior": PriorOptions.from_dict(self.prior), "decoding": self.decode(sample)}
        out.update({name: family(name).from_dict(getattr(self, key)) for key, name in FAMILY_FIELDS.items()})
        return out

    def decode(self, sample: int) -> DecodeConfig:
        return DecodeConfig.from_dict(dict(max_new_tokens=self.max_new_tokens, decoding=self.decoding,
                                           num_beams=self.num_beams, temperature=self.temperature,
                                           top_p=self.top_p, seed=self.seed + sample, loop_ban=self.loop_ban))

    def lora_config(self):
        return self.options()["lora"]

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
    from dataclasses import MISSING, fields

    out = {}
    for f in fields(SweepConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING and f.name != "prompts":
            out[f.name] = f.default_factory()
    return normalise(out)


# The SweepConfig fields that hold an option family's given values, and the family.
FAMILY_FIELDS = {"guided": "guided", "activation": "activation", "hso": "hso", "style_prompt": "prompt", "lora": "lora"}


def canonical_config(stored: dict) -> dict:
    """A sweep's config.json settings with every option family written out in full, so that an option
    given at its default compares equal to one left out (settings that do not parse stay as they are)."""
    from steer.options import family

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


def _mean(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def _read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file, or of its gzipped copy (``NAME.gz``, as run folders are committed)."""
    if not path.exists():
        packed = path.with_name(path.name + ".gz")
        if not packed.exists():
            return []
        import gzip

        text = gzip.decompress(packed.read_bytes()).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by an interruption: drop it and what follows
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _key(row: dict) -> tuple:
    return row["corpus"], row["method"], row["knob"]


def _read_rows(path: Path) -> list[dict]:
    """A run's cells or samples, normalised once as read: rows written before a sweep ran several
    methods name none (they are the reference method's, at knob lam)."""
    return [{"method": REFERENCE, "knob": r["lam"], **r} if "method" not in r or "knob" not in r else r
            for r in _read_jsonl(path)]


class _Runner:
    """Generates and scores one cell; holds what the cells of a corpus share."""

    def __init__(self, config: SweepConfig, model, tokenizer):
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.unsteered = {k: continue_prompts(model, tokenizer, config.prompts, (), config.decode(k))
                          for k in range(config.samples)}
        self.panel = None

    def unsteered_texts(self) -> list[str]:
        return [t for k in range(self.config.samples)
                for t in continuation_texts(self.tokenizer, *self.unsteered[k])]

    def cell(self, corpus, table, method, knob, setup):
        """Generate the cell's continuations with ``setup`` (a steer.methods.Setup) and score them."""
        cfg, tok = self.config, self.tokenizer
        prompt_ids, conts, js, jac, pre, samples = [], [], [], [], [], []
        gen_s = 0.0
        # Warm up (lazy device tables, cached unigram rows, first-call kernels)
        # so that the timed generation below measures the steady state.
        setup.continue_prompts(self.model, tok, cfg.prompts[:1], replace(cfg.decode(0), max_new_tokens=2))
        for k in range(cfg.samples):
            user_ids, base_conts = self.unsteered[k]
            procs = list(setup.processors)
            rec = None
            if procs:  # JS divergence of what the (first) processor does to the distribution
                rec = DivergenceRecorder(procs[0])
                procs[0] = rec
            t0 = time.perf_counter()
            _, c_ids = setup.continue_prompts(self.model, tok, cfg.prompts, cfg.decode(k), processors=procs)
            gen_s += time.perf_counter() - t0
            if rec is not None:
                div = rec.divergences()  # (rows, steps)
                if cfg.decoding != "beam":  # rows are samples: average over their real tokens
                    for i, c in enumerate(c_ids):
                        js.extend(div[i, : len(c)].tolist())
                else:  # rows are beams: average over all of them
                    js.extend(div.flatten().tolist())
            for a, b in zip(c_ids, base_conts, strict=True):
                jac.append(M.unigram_jaccard(a, b))
                pre.append(M.shared_prefix(a, b))
            prompt_ids += user_ids  # scored after the user's prompt, never the style prefix
            conts += c_ids
            texts = continuation_texts(tok, user_ids, c_ids)
            samples += [{"corpus": corpus, "method": method, "lam": setup.lam, "knob": knob, "sample": k,
                         "prompt_index": i, "prompt": cfg.prompts[i], "text": t} for i, t in enumerate(texts)]
        n_tok = sum(len(c) for c in conts)
        base = M.base_nll(self.model, prompt_ids, conts)
        values = {"base_nll": [b[0] for b in base], "base_tokens": [float(b[1]) for b in base]}
        texts = [s["text"] for s in samples]
        user_prompts = [s["prompt"] for s in samples]
        if self.panel is not None:
            values.update(self.panel.score(corpus, user_prompts, texts))
        for i, smp in enumerate(samples):
            smp.update({k: v[i] for k, v in values.items()})
        row = {
            "corpus": corpus, "method": method, "lam": setup.lam, "knob": knob, "n_samples": len(conts),
            **judge_columns(samples, self.panel.summary(user_prompts, texts) if self.panel else {}),
            "base_ppl": M.pooled_perplexity(values["base_nll"], values["base_tokens"]),
            "steer_table_ppl": M.style_perplexity(table, prompt_ids, conts, smoothing=cfg.metric_smoothing),
            "js_div": _mean(js) if js else float("nan") if not setup.processors else 0.0,
            **{f"overlap_{n}": M.ngram_overlap(table, conts, n) for n in (1, 2, 3)},
            "jaccard_vs_unsteered": _mean(jac), "prefix_vs_unsteered": _mean(pre),
            "mean_len": _mean([len(c) for c in conts]),
            "infer_ms_per_token": 1e3 * gen_s / n_tok if n_tok else float("nan"),
            **setup.costs,
        }
        return row, samples


def judge_columns(samples: list[dict], summary: dict) -> dict:
    """A cell's judge figures from its samples' per-sample values, with 95 % bootstrap intervals over prompts."""
    from steer.judges.stats import bootstrap_mean_ci

    nan = float("nan")
    out = {m: nan for m in JUDGE_METRICS}
    idx = [s["prompt_index"] for s in samples]
    if samples and "judge_hit" in samples[0]:
        out["judge_hit"], out["judge_hit_lo"], out["judge_hit_hi"] = bootstrap_mean_ci(
            [s["judge_hit"] for s in samples], idx)
        out["judge_p_target"] = _mean([s["judge_p_target"] for s in samples])
    if samples and "heldout_nll" in samples[0]:
        out["heldout_style_ppl"] = M.pooled_perplexity([s["heldout_nll"] for s in samples],
                                              [s["heldout_words"] for s in samples])
    if samples and "degenerate" in samples[0]:
        out["degenerate_rate"] = _mean([s["degenerate"] for s in samples])
    out.update(summary)
    return out


def run_sweep(config: SweepConfig, out_dir, model=None, tokenizer=None,
              progress: Callable[[str], None] | None = None,
              lora_progress: Callable[[int, float], None] | None = None) -> list[dict]:
    """Run (or resume) a sweep and write its results into ``out_dir``.

    Everything that does not need the model is checked first (the run folder's
    lock and config, every corpus and its steer/judge split), so a bad
    setting fails in seconds and leaves nothing behind; config.json is
    written only once the model has loaded. One process holds the folder at
    a time (:class:`steer.runs.RunLock`).

    Methods see only each corpus's steer split; the judges (``config.judges``)
    are built from the judge splits and score every cell alike.

    Writes config.json (settings, versions, the splits), judge.json (the
    judges and their own accuracy), samples.jsonl (every continuation with
    its per-sample judge values), cells.jsonl (one finished cell a line; a
    resumed run skips these), results.csv (one row per cell, intervals
    included), comparisons.csv (every comparison, its table named in ``kind``:
    ``matched``, the prior against each baseline at the baseline's base
    perplexity; with further methods ``matched_variants`` and ``matched_methods``,
    each knob method against every other at matched fluency; with baselines
    ``no_worse_fluency``; where every judge ran, ``constraints``, every steered
    cell against the default :class:`steer.matched.Constraints`, and with
    baselines ``holding``, each cell that holds them against each baseline,
    paired over prompts), and, with matplotlib, metrics_vs_lambda.png and
    pareto.png. :func:`read_comparisons` reads one kind back.

    Returns:
        The result rows, with relative changes vs the unsteered cell (prior, lam = 0)
        of the same corpus.
    """
    out = Path(out_dir)
    cfg_json = normalise(asdict(config))
    with RunLock(out):
        check_same_config(out, cfg_json, defaults=config_defaults(), canonical=canonical_config)
        sources = {name: _load_source(name, config) for name in config.corpora}
        splits = {name: src.split for name, src in sources.items() if isinstance(src, Corpus)}
        check_same_splits(out, splits)
        cells = _read_rows(out / "cells.jsonl")
        done = {_key(c) for c in cells}
        note = progress or (lambda msg: None)
        for c, m, knob in config.cells():
            if (c, m, knob) in done:
                note(f"{c} {m} knob={knob} (done earlier)")
        todo = [cell for cell in config.cells() if cell not in done]
        if todo:
            # Each extra corpus (classes, neutral, background) is read and split once per run.
            extra = functools.lru_cache(maxsize=None)(
                lambda name: load_corpus(name, judge_fraction=config.judge_fraction))
            if any(get_method(m).needs_background for m in config.methods):
                extra(config.background)  # fails before the model
            judged = {}
            if config.judges:
                judged = _judge_corpora(config, sources, extra)
            if model is None:
                from steer.models import load_model

                model, tokenizer = load_model(config.model)
            (out / "config.json").write_text(json.dumps(
                {"sweep": cfg_json, "versions": package_versions(), "splits": splits}, indent=2), encoding="utf-8")
            _run_cells(config, out, model, tokenizer, sources, judged, todo, cells, done, note, lora_progress,
                       extra)
        return _write_results(out, _with_relative(cells, config), config)


def report_sweep(out_dir, figures: bool = True) -> tuple[list[dict], int, int]:
    """Write the results files of a run folder from the cells finished so far, running nothing.

    For a long sweep that was stopped and will be resumed later (a sweep still
    running holds the folder's lock, so this refuses until it stops). The
    settings come from the folder's config.json.

    Returns:
        (rows, finished cells, all cells of the sweep).
    """
    out = Path(out_dir)
    path = out / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{str(out)!r} holds no sweep (no config.json)")
    stored = json.loads(path.read_text(encoding="utf-8")).get("sweep")
    if not isinstance(stored, dict):
        raise ValueError(f"{str(path)!r} is not a steer sweep config")
    known = {f.name for f in fields(SweepConfig)}
    config = SweepConfig(**{k: v for k, v in stored.items() if k in known})
    with RunLock(out):
        cells = _read_rows(out / "cells.jsonl")
        rows = _with_relative(cells, config)
        rows = _write_results(out, rows, config, figures=figures)
    return rows, len(cells), len(config.cells())


def check_same_splits(out: Path, splits: dict) -> None:
    """Refuse to resume when a corpus's text (so its steer/judge split) changed since the run began."""
    path = out / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8")).get("splits")
    if old is None:
        return
    changed = [n for n in splits if n in old and normalise(old[n]) != normalise(splits[n])]
    if changed:
        raise ValueError(f"the text of {changed} changed since {str(out)!r} began (its steer/judge split differs); "
                         "use another --out")


def _judge_corpora(config: SweepConfig, sources: dict, extra) -> dict:
    """Every corpus the judges need, loaded and split before the model: targets, classes, neutral."""
    from steer.catalog import style_names

    judged = {"targets": {name: src for name, src in sources.items() if isinstance(src, Corpus)}}
    if "classifier" in config.judges:
        judged["classes"] = {name: judged["targets"].get(name) or extra(name) for name in style_names()}
        judged["neutral"] = extra(config.neutral)
    from steer.judges.panel import check_judge_text

    # A continuation of T tokens has fewer than T words, so T bounds the chunk length.
    check_judge_text(judged["targets"], judged.get("classes"), config.max_new_tokens, config.judges)
    return judged


def _build_panel(config: SweepConfig, judged: dict, runner: _Runner):
    from steer.judges.panel import JudgePanel, word_lengths

    return JudgePanel(judged["targets"], judged.get("classes"), judged.get("neutral"),
                      lengths=word_lengths(runner.unsteered_texts()), kinds=config.judges,
                      classifier_options=config.classifier)


def _load_source(name: str, config: SweepConfig):
    """A corpus's text (a Corpus) or, for a table file, the loaded table; checked before the model loads."""
    if is_table_file(name):
        from ngram import NGramTable

        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"table file {name!r} not found")
        return NGramTable.load(path)
    return load_corpus(name, judge_fraction=config.judge_fraction, encoding=config.encoding)


def _run_cells(config, out, model, tokenizer, sources, judged, todo, cells, done, note, lora_progress,
               extra) -> None:
    samples = [s for s in _read_rows(out / "samples.jsonl") if _key(s) in done]
    _write_jsonl(out / "samples.jsonl", samples)
    _write_jsonl(out / "cells.jsonl", cells)
    runner = _Runner(config, model, tokenizer)
    if judged:
        runner.panel = _build_panel(config, judged, runner)
        (out / "judge.json").write_text(json.dumps(runner.panel.report(), indent=1), encoding="utf-8")
    workshop = Workshop(model, tokenizer, sources=sources, read=extra,
                        lora=lambda corpus, cfg: _lora_for(config, cfg, model, tokenizer, corpus, out, lora_progress))
    for corpus, method, knob in todo:
        steering = config.spec(corpus, method, knob).build(model, tokenizer, workshop)
        row, new = runner.cell(corpus, workshop.context(steering.spec).table(), method, knob, steering.setup)
        del steering
        samples += new
        _write_jsonl(out / "samples.jsonl", samples)
        cells.append(row)
        _write_jsonl(out / "cells.jsonl", cells)
        note(f"{corpus} {method} {get_method(method).knob or 'knob'}={knob}")


def _lora_for(config, lora_config, model, tokenizer, corpus, out: Path, progress):
    """The corpus's adapter, trained on its steer split (cached per model, text and settings).

    Its metadata (loss curves, steps, what ended training, wall time) is
    copied to ``out/adapters/<corpus>.json``.
    """
    from steer.baselines.lora import adapter_bytes, cached_lora

    pmodel, meta, path = cached_lora(model, tokenizer, corpus.steer, lora_config, corpus_name=corpus.name,
                                     model_name=config.model, progress=progress)
    (out / "adapters").mkdir(exist_ok=True)
    (out / "adapters" / f"{Path(corpus.name).name}.json").write_text(
        json.dumps({**meta, "adapter_path": str(path)}, indent=1), encoding="utf-8")
    return pmodel, meta, adapter_bytes(pmodel)


def _with_relative(cells: list[dict], config: SweepConfig) -> list[dict]:
    base = {c["corpus"]: c for c in cells if is_unsteered(c["method"], c["lam"])}
    # The relative change of a variant is against the same unsteered cell as the prior's.
    order = {cell: i for i, cell in enumerate(config.cells())}
    rows = []
    for c in sorted(cells, key=lambda c: order.get(_key(c), 1e9)):
        row = dict(c)
        for m in REL_METRICS:
            b = base.get(c["corpus"], {}).get(m, float("nan"))
            row[f"{m}_rel"] = M.relative_change(c[m], b)
        rows.append(row)
    return rows


def _with_intervals(rows: list[dict], samples: list[dict]) -> list[dict]:
    """Each row's judge figures from its samples' per-sample values, with 95 % bootstrap intervals over prompts.

    samples.jsonl is the single source of the judge figures: the point
    estimates are recomputed here too, so results always match the samples.
    """
    from steer.judges.stats import bootstrap_mean_ci, bootstrap_pooled_ppl_ci

    by_cell: dict[tuple, list[dict]] = {}
    for smp in samples:
        by_cell.setdefault(_key(smp), []).append(smp)
    for row in rows:
        mine = by_cell.get(_key(row), [])
        idx = [smp["prompt_index"] for smp in mine]
        for m in INTERVALS:
            row[f"{m}_lo"] = row[f"{m}_hi"] = float("nan")
        if not mine:
            continue
        row.update({k: v for k, v in judge_columns(mine, {}).items() if v == v})
        for m, key in [("judge_p_target", "judge_p_target"), ("degenerate_rate", "degenerate")]:
            if key in mine[0]:
                _, row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_mean_ci([smp[key] for smp in mine], idx)
        for m, nll, n in [("heldout_style_ppl", "heldout_nll", "heldout_words"),
                          ("base_ppl", "base_nll", "base_tokens")]:
            if nll in mine[0]:
                _, row[f"{m}_lo"], row[f"{m}_hi"] = bootstrap_pooled_ppl_ci(
                    [smp[nll] for smp in mine], [smp[n] for smp in mine], idx)
    return rows


def _write_results(out: Path, rows: list[dict], config: SweepConfig, figures: bool = True) -> list[dict]:
    from steer.matched import (
        CONSTRAINT_COLUMNS,
        FLUENCY_COLUMNS,
        HOLDING_COLUMNS,
        MATCHED_COLUMNS,
        METHOD_COLUMNS,
        VARIANT_COLUMNS,
        at_no_worse_fluency,
        constraint_table,
        holding_vs_baselines,
        matched_methods,
        matched_table,
        matched_variants,
    )

    samples = _read_rows(out / "samples.jsonl")
    rows = _with_intervals(rows, samples)
    tables = [("matched", MATCHED_COLUMNS, matched_table(rows, samples))]
    if config.methods:
        tables.append(("matched_variants", VARIANT_COLUMNS, matched_variants(rows, samples)))
        tables.append(("matched_methods", METHOD_COLUMNS, matched_methods(rows, samples)))
    if config.baselines:
        tables.append(("no_worse_fluency", FLUENCY_COLUMNS, at_no_worse_fluency(rows, samples)))
    if all(k in r for r in rows for k in ("judge_hit", "base_ppl", "distinct_2", "degenerate_rate")):
        # only with every judge the constraints need (the style classifier may have refused to judge)
        tables.append(("constraints", CONSTRAINT_COLUMNS, constraint_table(rows)))
        if config.baselines:
            tables.append(("holding", HOLDING_COLUMNS, holding_vs_baselines(rows, samples)))
    columns = ["kind", *dict.fromkeys(c for _, cols, _ in tables for c in cols)]
    _write_csv(out / COMPARISONS, columns, [{"kind": kind, **r} for kind, _, table in tables for r in table])
    _write_csv(out / "results.csv", COLUMNS, [{k: v for k, v in r.items() if k in COLUMNS} for r in rows])
    for name in SUPERSEDED:  # the files these two replace, from runs written before them
        (out / name).unlink(missing_ok=True)
    try:
        from steer.plots import plot_metrics_vs_lambda, plot_pareto
    except ImportError:
        return rows
    if figures:
        plot_metrics_vs_lambda(rows, out / "metrics_vs_lambda.png", title=plot_title(config))
        plot_pareto(rows, out / "pareto.png", title=plot_title(config))
    return rows


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def read_comparisons(out, kind: str) -> list[dict]:
    """The rows of one kind of comparison of a run folder (as text), from comparisons.csv or, for runs
    written before it, from that kind's own file (``KIND.csv``); [] where the run has none."""
    out = Path(out)
    if (out / COMPARISONS).exists():
        with open(out / COMPARISONS, encoding="utf-8") as f:
            return [{k: v for k, v in r.items() if k != "kind" and v != ""} for r in csv.DictReader(f)
                    if r["kind"] == kind]
    if (out / f"{kind}.csv").exists():
        with open(out / f"{kind}.csv", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return []


def plot_title(config: SweepConfig) -> str:
    """The figure title: model, decoding and how many continuations each cell holds."""
    decoding = {"greedy": "greedy decoding", "beam": f"beam search ({config.num_beams} beams)",
                "sample": f"sampling (T = {config.temperature:g}, top-p {config.top_p:g})"}[config.decoding]
    n = len(config.prompts) * config.samples
    return (f"{Path(config.model).name or config.model}, {decoding}, {len(config.prompts)} prompts x "
            f"{config.samples} sample{'s' if config.samples > 1 else ''} = {n} continuations per cell, "
            f"{config.max_new_tokens} new tokens")
