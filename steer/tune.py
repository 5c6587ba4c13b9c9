"""`steer tune`: the method and strength for a model and corpus, chosen on development prompts, validated on others.

The prompts are split in two, interleaved: the development half chooses, the test half reports,
and no prompt is in both. The development half is split again (halves A and B) for a successive
halving:

1. **Search (A).** The unsteered cell, then each method's knob grid in increasing strength. A
   method stops climbing at the first knob whose distinct-2 or degenerate rate is *shown* broken
   (stronger knobs only lose more diversity; perplexity is not monotone in the knob, so a
   perplexity break does not stop the climb); at the first break of any fluency constraint, one
   more knob between the last unbroken knob and that one (their geometric mean) is tried.
2. **Confirm (B).** The ``finalists`` best cells of A (by the rule below) run again on B; each is
   judged on all the development prompts (A and B).
3. **Choose.** A constraint *holds* when its point estimate is within the limit (the degenerate
   limit is at least one continuation: one more degenerate text than the unsteered model's is
   1/n of the rate), is *broken* when its 95 % paired interval over prompts lies wholly beyond the
   limit, and is *unclear* otherwise. A setting is a candidate when nothing is broken and its hit
   gain holds; candidates rank by fewest unclear constraints, then highest hit rate. So one
   continuation never decides: at 64 prompts one more degenerate continuation than the unsteered
   model (0.02 against 0.00) holds. Where there is no candidate the tuner takes the best
   trade-off (the highest hit among the settings whose fluency is not shown broken, else the one
   with the fewest broken constraints) and names the constraints that bind.
4. **Validate** the chosen setting on the test prompts beside the unsteered model and prompting:
   it *holds* when every constraint holds there (point estimates, with their intervals reported).

Everything is written to the output folder as it finishes (``tune.json``, ``cells.jsonl``,
``samples.jsonl.gz`` with every text), so a stopped run resumes; ``spec.json``, ``validation.json``
and ``report.md`` at the end.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from steer import checks
from steer.matched import Constraints
from steer.methods import REFERENCE, get_method, listed_names
from steer.runs import RunLock, config_diff, normalise, read_jsonl, write_jsonl
from steer.sweep.config import NEUTRAL_CORPUS

# What the tuner tries unless told: the seed paper's prior, the best variant, the activation vector and both.
DEFAULT_METHODS = (REFERENCE, "contrastive+plausible", "activation", "activation+contrastive+plausible")
# The seed paper's prior has no default knobs (a sweep's --lambdas): its search grid.
PRIOR_GRID = (0.05, 0.1, 0.2, 0.5, 1.0)
FLUENCY = ("ppl", "distinct2", "degenerate")
# The fluency constraints a stronger knob only breaks further, so a method stops climbing at their
# first break. Perplexity is not one: under the plausibility-bounded bonus it is 1.24x at lambda 1 but
# 1.00x at 2 and 4 (SmolLM2, CNN), so its break is refined but the climb goes on.
MONOTONE = {"distinct2", "degenerate"}
MIN_PROMPTS = 16  # on each side of the split


@dataclass(frozen=True)
class TuneConfig:
    """A tuning run's settings.

    Attributes:
        model: the model to steer (a folder, GGUF file, packaged model or hub id).
        corpus: the style corpus (a name or a path; its judge split must be large enough to judge).
        background: the ordinary text the contrastive and activation methods measure against.
        methods: registered methods to search (knob grids: each method's defaults; the prior's PRIOR_GRID).
        prompts: the prompts split into development and test halves (default: the 127 built-in ones).
        decoding, top_p, loop_ban, max_new_tokens, seed: decoding, every cell alike.
        budget_minutes: the search stops starting cells when it would not leave the validation its time.
        finalists: how many cells of the search run again on the second development half.
        constraints: what a setting must hold against the unsteered model.
        fluency_judge: a model of another family scoring cross_ppl (reported; ``constraints.fluency``
            says which perplexity is bounded).
    """

    model: str
    corpus: str
    background: str = NEUTRAL_CORPUS
    methods: tuple[str, ...] = DEFAULT_METHODS
    prompts: tuple[str, ...] | None = None
    decoding: str = "sample"
    top_p: float = 0.95
    loop_ban: tuple[int, int] | None = (3, 3)
    max_new_tokens: int = 32
    seed: int = 0
    budget_minutes: float = 20.0
    finalists: int = 3
    constraints: Constraints = field(default_factory=Constraints)
    fluency_judge: str | None = None

    def __post_init__(self):
        checks.text("model", self.model)
        checks.text("corpus", self.corpus)
        methods = checks.texts("methods", self.methods)
        bad = [m for m in methods if m != REFERENCE and m not in listed_names()]
        if bad or len(set(methods)) != len(methods):
            raise ValueError(f"`methods` must name steering methods once each ({REFERENCE!r} or "
                             f"{', '.join(listed_names())}), got {list(methods)}")
        object.__setattr__(self, "methods", methods)
        checks.choice("decoding", self.decoding, ("sample", "greedy"))
        checks.number("budget_minutes", self.budget_minutes, low=0, low_open=True)
        checks.integer("finalists", self.finalists, low=1)
        if isinstance(self.constraints, dict):
            object.__setattr__(self, "constraints", Constraints(**self.constraints))
        if self.prompts is not None:
            object.__setattr__(self, "prompts", checks.texts("prompts", self.prompts))
        dev, test = self.split()
        if len(test) < MIN_PROMPTS:
            raise ValueError(f"`prompts` must hold at least {2 * MIN_PROMPTS} distinct prompts (half to choose, "
                             f"half to report on), got {len(dev) + len(test)}")

    def split(self) -> tuple[list[str], list[str]]:
        """(development, test) prompts: alternate distinct prompts, so no prompt is on both sides."""
        from steer.sweep import builtin_prompts

        prompts = list(dict.fromkeys(self.prompts or builtin_prompts()))
        return prompts[0::2], prompts[1::2]

    def sweep(self, prompts: list[str], methods=()):
        """The SweepConfig whose cells the tuner runs on ``prompts`` (its specs, decoding and judges)."""
        from steer.sweep import SweepConfig

        return SweepConfig(model=self.model, corpora=[self.corpus], lambdas=[0.0], prompts=prompts,
                           max_new_tokens=self.max_new_tokens, seed=self.seed, decoding=self.decoding,
                           top_p=self.top_p, loop_ban=list(self.loop_ban) if self.loop_ban else None,
                           methods=[m for m in methods if m != REFERENCE], background=self.background,
                           fluency_judge=self.fluency_judge)

    def grid(self, method: str) -> list[float]:
        knobs = PRIOR_GRID if method == REFERENCE else get_method(method).knobs
        return sorted(float(k) for k in knobs)


# ---------------------------------------------------------------- the decision rule
def _per_prompt(samples: list[dict], key: str) -> np.ndarray:
    from steer.judges.stats import per_prompt_means

    return per_prompt_means([s[key] for s in samples], [s["prompt_index"] for s in samples])


def _pooled_by_prompt(samples: list[dict], nll: str, count: str) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([s["prompt_index"] for s in samples])
    size = idx.max() + 1
    return (np.bincount(idx, [s[nll] for s in samples], size), np.bincount(idx, [s[count] for s in samples], size))


def _bigrams(samples: list[dict]) -> list[list[tuple]]:
    """Each prompt's continuation word bigrams (the diversity judge's distinct-2 units)."""
    from steer.judges.heldout import split_context

    out: dict[int, list] = {}
    for s in samples:
        words = split_context(s["prompt"], s["text"])[1]
        out.setdefault(s["prompt_index"], []).extend(zip(words, words[1:], strict=False))
    return [out.get(i, []) for i in range(max(out) + 1)]


def _distinct2_ratio(cell: list[dict], base: list[dict], n_resamples: int = 1000, seed: int = 0):
    """(ratio of distinct-2, low, high): prompts resampled in pairs."""
    a, b = _bigrams(cell), _bigrams(base)

    def ratio(idx):
        ga = [g for i in idx for g in a[i]]
        gb = [g for i in idx for g in b[i]]
        if not ga or not gb:
            return math.nan
        return (len(set(ga)) / len(ga)) / (len(set(gb)) / len(gb))

    rng = np.random.default_rng(seed)
    boots = np.array([ratio(rng.integers(0, len(a), len(a))) for _ in range(n_resamples)])
    boots = boots[~np.isnan(boots)]
    point = ratio(range(len(a)))
    if boots.size == 0:
        return point, math.nan, math.nan
    return point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def verdicts(cell: list[dict], base: list[dict], limits: Constraints) -> dict:
    """Each constraint's value, 95 % paired interval over prompts and status against the unsteered ``base``.

    ``cell`` and ``base`` are the samples (as samples.jsonl holds them) of the same prompts. Status:
    "holds" (the point estimate within the limit), "broken" (the whole interval beyond it) or
    "unclear".
    """
    from steer.judges.stats import paired_diff_ci, paired_ppl_ratio_ci

    def status(value, lo, hi, ok, beyond):
        return "holds" if ok(value) else "broken" if (beyond(lo) and beyond(hi)) else "unclear"

    gain, lo, hi = paired_diff_ci(_per_prompt(cell, "judge_hit"), _per_prompt(base, "judge_hit"))
    out = {"hit": {"value": gain, "lo": lo, "hi": hi, "limit": limits.min_hit_gain,
                   "status": status(gain, lo, hi, lambda v: v >= limits.min_hit_gain - 1e-12,
                                    lambda v: v < limits.min_hit_gain)}}
    nll, cnt = ("base_nll", "base_tokens") if limits.fluency == "base_ppl" else ("cross_nll", "cross_tokens")
    ratio, lo, hi = paired_ppl_ratio_ci(*_pooled_by_prompt(cell, nll, cnt), *_pooled_by_prompt(base, nll, cnt))
    top = limits.max_ppl_ratio
    out["ppl"] = {"value": ratio, "lo": lo, "hi": hi, "limit": top,
                  "status": status(ratio, lo, hi, lambda v: v <= top, lambda v: v > top)}
    ratio, lo, hi = _distinct2_ratio(cell, base)
    out["distinct2"] = {"value": ratio, "lo": lo, "hi": hi, "limit": limits.min_distinct2_ratio,
                        "status": status(ratio, lo, hi, lambda v: v >= limits.min_distinct2_ratio,
                                         lambda v: v < limits.min_distinct2_ratio)}
    extra, lo, hi = paired_diff_ci(_per_prompt(cell, "degenerate"), _per_prompt(base, "degenerate"))
    # At least one continuation: one more degenerate text than the unsteered model's is 1/n of the rate.
    limit = max(limits.max_extra_degenerate, 1 / len(cell))
    out["degenerate"] = {"value": extra, "lo": lo, "hi": hi, "limit": limit,
                         "status": status(extra, lo, hi, lambda v: v <= limit + 1e-12, lambda v: v > limit + 1e-12)}
    return out


def qualifies(v: dict) -> bool:
    """No constraint shown broken and the hit gain reached (a candidate on the development prompts)."""
    return v["hit"]["status"] == "holds" and all(v[c]["status"] != "broken" for c in FLUENCY)


def holds(v: dict) -> bool:
    """Every constraint's point estimate within its limit (the verdict on the test prompts)."""
    return all(x["status"] == "holds" for x in v.values())


def rank_key(cell: dict) -> tuple:
    """Best first: qualifying, fluency not shown broken, fewest broken then fewest unclear constraints, highest hit."""
    v = cell["verdicts"]
    broken = sum(v[c]["status"] == "broken" for c in v)
    unclear = sum(v[c]["status"] == "unclear" for c in v)
    return (not qualifies(v), any(v[c]["status"] == "broken" for c in FLUENCY), broken, unclear, -cell["judge_hit"])


def binding(v: dict) -> str | None:
    """The constraints a setting misses, broken ones first (None when every point estimate holds)."""
    if holds(v):
        return None
    broken = [c for c in ("hit", *FLUENCY) if v[c]["status"] == "broken"]
    return "+".join(broken or [c for c in ("hit", *FLUENCY) if v[c]["status"] != "holds"])


def search_binds(searched: list[dict]) -> str | None:
    """What kept the search from a setting that holds: None when one qualified; else the fluency
    constraint most often shown broken by the settings that reached the hit gain, or "hit" when none did."""
    if any(qualifies(c["verdicts"]) for c in searched):
        return None
    styled = [c["verdicts"] for c in searched if c["verdicts"]["hit"]["status"] == "holds"]
    counts = {f: sum(v[f]["status"] == "broken" for v in styled) for f in FLUENCY}
    return max(counts, key=counts.get) if styled and max(counts.values()) > 0 else "hit"


# ---------------------------------------------------------------- the run
@dataclass
class TuneResult:
    """What :func:`tune` chose and how it did on the test prompts."""

    spec: object  # steer.spec.SteeringSpec
    validation: dict
    cells: list[dict]
    out: Path


class _Cells:
    """The finished cells of a run folder (cells.jsonl) and their samples (samples.jsonl.gz), kept as they finish."""

    def __init__(self, out: Path):
        self.out = out
        self.rows = read_jsonl(out / "cells.jsonl")
        self.samples = read_jsonl(out / "samples.jsonl.gz")
        self.done = {(r["stage"], r["method"], r["knob"]): r for r in self.rows}

    def add(self, row: dict, samples: list[dict]) -> None:
        self.rows.append(row)
        self.samples += samples
        self.done[(row["stage"], row["method"], row["knob"])] = row
        write_jsonl(self.out / "cells.jsonl", self.rows)
        write_jsonl(self.out / "samples.jsonl.gz", self.samples)

    def of(self, stage: str, method: str, knob: float) -> list[dict]:
        return [s for s in self.samples if (s["stage"], s["method"], s["knob"]) == (stage, method, knob)]

    def seconds(self) -> float:
        return sum(r["seconds"] for r in self.rows)


class _Stage:
    """One prompt set (development half A or B, or the test prompts) with its runner and judges, built on first use."""

    def __init__(self, name: str, config: TuneConfig, prompts: list[str], offset: int, shared: dict):
        self.name, self.config, self.prompts, self.offset, self.shared = name, config, prompts, offset, shared
        self.sweep = config.sweep(prompts, config.methods)  # every cell's spec, decoding and judges
        self._runner = None

    def runner(self):
        if self._runner is None:
            from steer.sweep.run import CellRunner, build_panel, fluency_judge, judge_corpora

            sh, sweep = self.shared, self.sweep
            self._runner = CellRunner(sweep, sh["model"], sh["tokenizer"])
            if "judged" not in sh:
                sh["judged"] = judge_corpora(sweep, sh["sources"], sh["extra"])
            if "panel" not in sh:  # one panel for every stage: the same judges score every cell
                sh["panel"] = build_panel(sweep, sh["judged"], self._runner)
                refusal = sh["panel"].classifier_refusal
                if refusal is not None:  # the hit rate is the style classifier's: without it there is nothing to tune
                    from steer.judges import JudgeError

                    raise JudgeError(f"the style classifier cannot judge {self.config.corpus!r}: "
                                     f"{refusal['refused']}; {refusal['how_to_get_it']}")
            self._runner.panel = sh["panel"]
            if self.config.fluency_judge is not None:
                if "fluency" not in sh:
                    sh["fluency"] = fluency_judge(self.config.fluency_judge, sh["model"])
                self._runner.fluency = sh["fluency"]
        return self._runner


def tune(config: TuneConfig, out_dir, model=None, tokenizer=None, progress: Callable[[str], None] | None = None,
         grid=None) -> TuneResult:
    """Search ``config.methods`` x knobs on the development prompts, validate the choice on the test prompts.

    See the module's description for the procedure and the decision rule. Resumes a stopped run in
    ``out_dir`` (a folder holding another run's settings is refused). Writes ``spec.json`` (the
    chosen setting, for ``steer generate --spec``, the sweep and the serving adapters),
    ``validation.json``, ``report.md``, ``cells.jsonl`` and ``samples.jsonl.gz`` (every text).

    ``grid``: a sweep's run folder (the full grid of the same model, decoding and corpus) that
    ``regret`` is measured against (:func:`with_regret`); without it ``regret`` is None.
    """
    from steer.corpora import load_corpus
    from steer.spec import Workshop, load_source

    out = Path(out_dir)
    note = progress or (lambda msg: None)
    started = time.perf_counter()
    dev, test = config.split()
    stored = normalise({"tune": asdict(config)})
    with RunLock(out):
        path = out / "tune.json"
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            diff = config_diff(old, stored)
            if diff:
                raise ValueError(f"{str(out)!r} holds another tuning run (its {', '.join(diff)} differ); use "
                                 "another --out")
        sweep = config.sweep(dev, config.methods)
        sources = {config.corpus: load_source(config.corpus, sweep.judge_fraction, sweep.encoding)}
        extra_cache: dict = {}

        def extra(name):
            if name not in extra_cache:
                extra_cache[name] = load_corpus(name, judge_fraction=sweep.judge_fraction)
            return extra_cache[name]

        from steer.sweep.run import judge_corpora

        judged = judge_corpora(sweep, sources, extra)  # refuses, before the model, a corpus too small to judge
        if model is None:
            from steer.models import load_model

            model, tokenizer = load_model(config.model)
        path.write_text(json.dumps(stored, indent=1) + "\n", encoding="utf-8")
        shared = {"model": model, "tokenizer": tokenizer, "sources": sources, "extra": extra, "judged": judged,
                  "workshop": Workshop(model, tokenizer, sources=sources, read=extra)}
        cells = _Cells(out)
        half = len(dev) // 2
        stages = {"A": _Stage("A", config, dev[:half], 0, shared), "B": _Stage("B", config, dev[half:], half, shared),
                  "test": _Stage("test", config, test, 0, shared)}
        earlier = cells.seconds()

        def run(stage: str, method: str, knob: float) -> dict:
            key = (stage, method, knob)
            if key in cells.done:
                return cells.done[key]
            st = stages[stage]
            runner = st.runner()
            t0 = time.perf_counter()
            spec = st.sweep.spec(config.corpus, method, knob)
            steering = spec.build(model, tokenizer, shared["workshop"])
            row, samples = runner.cell(config.corpus, steering.table, method, knob, steering.setup)
            seconds = time.perf_counter() - t0
            for s in samples:
                s.update(stage=stage, prompt_index=s["prompt_index"] + st.offset)
            row = {**{k: v for k, v in row.items() if isinstance(v, (int, float, str)) or v is None},
                   "stage": stage, "seconds": round(seconds, 1)}
            cells.add(row, samples)
            note(f"{stage} {method} {get_method(method).knob or 'knob'}={knob:g}: hit {row['judge_hit']:.2f}, "
                 f"base ppl {row['base_ppl']:.1f} ({seconds:.0f} s)")
            return row

        def over_budget(cells_to_come: float) -> bool:
            """Whether ``cells_to_come`` more cells (at the mean cell's time) would overrun the budget."""
            per_cell = cells.seconds() / max(len(cells.rows), 1)
            spent = earlier + time.perf_counter() - started
            return spent + per_cell * cells_to_come > 60 * config.budget_minutes

        reserve = 3 * len(test) / max(half, 1)  # the validation's three cells, in search-cell units
        judged_cells = _search(config, run, cells, over_budget, reserve, note)
        finalists = sorted(judged_cells, key=rank_key)[: config.finalists]
        for c in finalists:
            run("B", REFERENCE, 0.0)
            run("B", c["method"], c["knob"])
        combined = []
        base = cells.of("A", REFERENCE, 0.0) + cells.of("B", REFERENCE, 0.0)
        for c in finalists:
            samples = cells.of("A", c["method"], c["knob"]) + cells.of("B", c["method"], c["knob"])
            if not cells.of("B", c["method"], c["knob"]):
                continue
            hit = float(np.mean([s["judge_hit"] for s in samples]))
            combined.append({**c, "stage": "A+B", "judge_hit": hit,
                             "verdicts": verdicts(samples, base, config.constraints)})
        chosen = sorted(combined or finalists, key=rank_key)[0]
        why = binding(chosen["verdicts"]) or "every constraint holds"
        note(f"chosen: {chosen['method']} {chosen['knob']:g} ({why})")
        validation = _validate(config, run, cells, chosen, started, earlier)
        validation["search_binds"] = search_binds(judged_cells + combined)
        if grid is not None:
            from steer.sweep import read_cells

            validation = with_regret(validation, read_cells(grid), config.corpus, config.constraints)
            validation["grid"] = str(grid)
        spec = stages["test"].sweep.spec(config.corpus, chosen["method"], chosen["knob"])
        spec.save(out / "spec.json")
        (out / "validation.json").write_text(json.dumps(validation, indent=1) + "\n", encoding="utf-8")
        (out / "report.md").write_text(_report(config, judged_cells, combined, chosen, validation, dev, test),
                                       encoding="utf-8")
        return TuneResult(spec, validation, cells.rows, out)


def _search(config: TuneConfig, run, cells: _Cells, over_budget, reserve: float, note) -> list[dict]:
    """Stage A: each method's knobs in increasing strength until its fluency is shown broken, then one knob
    between; returns every searched cell with its verdicts."""
    run("A", REFERENCE, 0.0)
    base_samples = cells.of("A", REFERENCE, 0.0)
    judged = []

    def judge(method, knob):
        row = run("A", method, knob)
        v = verdicts(cells.of("A", method, knob), base_samples, config.constraints)
        judged.append({"method": method, "knob": knob, "judge_hit": row["judge_hit"], "verdicts": v})
        return v

    for method in config.methods:
        grid, last_ok, refined = config.grid(method), None, False
        for knob in grid:
            if over_budget(1 + reserve + config.finalists):
                note(f"budget: {method} stops before knob {knob:g}")
                break
            v = judge(method, knob)
            broken = [c for c in FLUENCY if v[c]["status"] == "broken"]
            if broken and not refined:
                # One more knob: between the last unbroken one and this, or (the grid's first knob
                # already broken) a quarter of it.
                below = round(math.sqrt(last_ok * knob), 6) if last_ok is not None else knob / 4
                if not over_budget(1 + reserve + config.finalists):
                    judge(method, below)
                refined = True
            if set(broken) & MONOTONE:
                break  # stronger knobs only lose more diversity
            if not broken:
                last_ok = knob
    return judged


def _validate(config: TuneConfig, run, cells: _Cells, chosen: dict, started: float, earlier: float) -> dict:
    """The chosen setting on the test prompts, beside the unsteered model and prompting."""
    from steer.judges.stats import paired_diff_ci, paired_ppl_ratio_ci

    base_row = run("test", REFERENCE, 0.0)
    row = run("test", chosen["method"], chosen["knob"])
    prompt_row = run("test", "prompt", 0.0)
    base = cells.of("test", REFERENCE, 0.0)
    mine = cells.of("test", chosen["method"], chosen["knob"])
    prompted = cells.of("test", "prompt", 0.0)
    v = verdicts(mine, base, config.constraints)
    diff, lo, hi = paired_diff_ci(_per_prompt(mine, "judge_hit"), _per_prompt(prompted, "judge_hit"))
    prompt_ratio = paired_ppl_ratio_ci(*_pooled_by_prompt(prompted, "base_nll", "base_tokens"),
                                       *_pooled_by_prompt(base, "base_nll", "base_tokens"))
    cross = (row["cross_ppl"] / base_row["cross_ppl"]) if config.fluency_judge else None
    return {
        "method": chosen["method"], "knob": chosen["knob"], "holds": holds(v), "binding": binding(v),
        "hit": row["judge_hit"], "hit_unsteered": base_row["judge_hit"],
        "base_ppl_ratio": row["base_ppl"] / base_row["base_ppl"], "cross_ppl_ratio": cross,
        "distinct_2_ratio": v["distinct2"]["value"], "degenerate_rate": row["degenerate_rate"],
        "degenerate_rate_unsteered": base_row["degenerate_rate"],
        "vs_prompt": {"diff": diff, "interval": [lo, hi], "prompt_hit": prompt_row["judge_hit"],
                      "prompt_base_ppl_ratio": prompt_ratio[0],
                      "matched_fluency": row["base_ppl"] <= prompt_row["base_ppl"]},
        "regret": None, "minutes": round((earlier + time.perf_counter() - started) / 60, 2),
        "constraints": v, "test_prompts": len({s["prompt_index"] for s in base}),
        "rule": "holds: every constraint's point estimate within its limit (the degenerate limit at least one "
                "continuation); a constraint is broken when its 95 % paired interval over prompts lies wholly beyond "
                "the limit, unclear otherwise",
    }


HEADER = "| method | knob | hit gain | ppl ratio | distinct-2 ratio | extra degenerate |"


def _report(config: TuneConfig, searched: list[dict], combined: list[dict], chosen: dict, validation: dict,
            dev: list[str], test: list[str]) -> str:
    def fmt(v: dict) -> str:
        return " | ".join(f"{v[c]['value']:.3g} [{v[c]['lo']:.3g}, {v[c]['hi']:.3g}] {v[c]['status']}"
                          for c in ("hit", *FLUENCY))

    lines = [f"# steer tune: {config.model} on {config.corpus}", "",
             f"Development prompts: {len(dev)} (halves of {len(dev) // 2} and {len(dev) - len(dev) // 2}); test "
             f"prompts: {len(test)}, none of them a development prompt. Decoding: {config.decoding}, "
             f"{config.max_new_tokens} new tokens, loop ban {config.loop_ban}. Constraints: hit >= unsteered + "
             f"{config.constraints.min_hit_gain:g}, {config.constraints.fluency} <= "
             f"{config.constraints.max_ppl_ratio:g}x, distinct-2 >= {config.constraints.min_distinct2_ratio:g}x, "
             f"degenerate <= unsteered + {config.constraints.max_extra_degenerate:g}.", "",
             "Rule: a constraint *holds* when its point estimate is within the limit (the degenerate limit at least "
             "one continuation, so one continuation never decides), is *broken* when its 95 % paired interval over "
             "prompts lies wholly beyond the limit, *unclear* otherwise. Candidates: nothing broken and the hit gain "
             "held; ranked by fewest unclear constraints, then hit. The validation holds when every constraint holds.",
             "", "## Searched (first development half)", "", HEADER, "|---|---|---|---|---|---|"]
    lines += [f"| {c['method']} | {c['knob']:g} | {fmt(c['verdicts'])} |" for c in searched]
    lines += ["", "## Finalists (all development prompts)", "", HEADER, "|---|---|---|---|---|---|"]
    lines += [f"| {c['method']} | {c['knob']:g} | {fmt(c['verdicts'])} |" for c in combined]
    why = validation["search_binds"]
    lines += ["", "## Chosen", "",
              f"`{chosen['method']}` at {get_method(chosen['method']).knob or 'knob'} {chosen['knob']:g}: "
              + ("the best candidate (nothing broken, hit gain reached): fewest unclear constraints, then highest "
                 "hit rate." if qualifies(chosen["verdicts"]) else
                 f"no candidate; the best trade-off (the highest hit whose fluency is not shown broken). What "
                 f"binds: **{why}**" + (" (no setting reached the hit gain)." if why == "hit" else
                                        " (the settings that reached the hit gain broke it most often).")),
              "", "## Validation (test prompts)", "",
              f"- holds: **{validation['holds']}**" + (f" (binding: {validation['binding']})"
                                                        if validation["binding"] else ""),
              f"- hit {validation['hit']:.3f} (unsteered {validation['hit_unsteered']:.3f})",
              f"- base perplexity {validation['base_ppl_ratio']:.3f}x"
              + (f", cross perplexity {validation['cross_ppl_ratio']:.3f}x" if validation["cross_ppl_ratio"] else ""),
              f"- distinct-2 {validation['distinct_2_ratio']:.3f}x, degenerate {validation['degenerate_rate']:.3f} "
              f"(unsteered {validation['degenerate_rate_unsteered']:.3f})",
              f"- against prompting: hit difference {validation['vs_prompt']['diff']:+.3f} "
              f"[{validation['vs_prompt']['interval'][0]:+.3f}, {validation['vs_prompt']['interval'][1]:+.3f}] "
              f"(prompting: hit {validation['vs_prompt']['prompt_hit']:.3f} at "
              f"{validation['vs_prompt']['prompt_base_ppl_ratio']:.3f}x base perplexity)",
              "- regret: no full grid given" if "grid" not in validation else
              f"- regret against the full grid (`{validation['grid']}`): "
              + ("no cell holds there" if validation["regret"] is None else
                 f"{validation['regret']:+.3f} (its best holding cell: hit {validation['grid_best_hit']:.3f})"),
              f"- {validation['minutes']} minutes in all", ""]
    return "\n".join(lines)


def with_regret(validation: dict, grid_rows: list[dict], corpus: str, limits: Constraints | None = None) -> dict:
    """``validation`` with ``regret``: the hit of the full grid's best holding cell for ``corpus`` (rows of a
    sweep's results.csv, by :func:`steer.matched.constraint_table`) minus the tuned setting's held-out hit;
    None where no grid cell holds."""
    from steer.matched import constraint_table

    holding = [r for r in constraint_table(grid_rows, limits or Constraints()) if r["corpus"] == corpus and r["holds"]]
    best = max((r["judge_hit"] for r in holding), default=None)
    return {**validation, "regret": None if best is None else best - validation["hit"], "grid_best_hit": best}
