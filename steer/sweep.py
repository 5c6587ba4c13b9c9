"""The style study: model x corpora x lambdas -> metrics, samples, tables and a plot. No argv here."""

from __future__ import annotations

import csv
import json
import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steer import metrics as M
from steer.corpora import load_corpus
from steer.generation import DecodeConfig, continue_prompts
from steer.monitor import DivergenceRecorder
from steer.style import NGramStylePrior, check_lam
from steer.tables import table_for

PROMPTS_PATH = Path(__file__).with_name("data") / "prompts.txt"
METRICS = ["style_ppl", "base_ppl", "js_div", "overlap_1", "overlap_2", "overlap_3",
           "distinct_1", "distinct_2", "jaccard_vs_unsteered", "prefix_vs_unsteered", "mean_len"]
COLUMNS = ["corpus", "lam", "n_samples", *METRICS, *[f"{m}_rel" for m in METRICS]]


def builtin_prompts() -> list[str]:
    """The neutral prompt set shipped with steer (one prompt a line)."""
    return [line.strip() for line in PROMPTS_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


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

    Attributes:
        model: model folder or hub id.
        corpora: corpus names or paths.
        lambdas: prior weights; 0 (the unsteered baseline) is always added.
        prompts: prompt texts (default: the built-in neutral set).
        samples: continuations per prompt (seeds seed, seed+1, ...).
        order: n-gram order N of the style tables.
        prior: options of the injected prior (see NGramTable.logprobs). The
            default is the seed paper's form, a weighted sum of per-order
            add-alpha log-probabilities; its weights are ours (the paper's are
            not given).
        metric_smoothing: estimate used for style perplexity (Kneser-Ney).
        holdout: fraction of each corpus's documents kept out of the tables.
    """

    model: str
    corpora: list[str]
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    prompts: list[str] = field(default_factory=builtin_prompts)
    max_new_tokens: int = 40
    samples: int = 1
    seed: int = 0
    decoding: str = "greedy"
    num_beams: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    order: int = 3
    prior: dict = field(default_factory=lambda: {
        "smoothing": "add_alpha", "mode": "logsum", "weights": [0.2, 0.3, 0.5], "alpha": 0.01})
    metric_smoothing: str = "kneser_ney"
    holdout: float = 0.05

    def __post_init__(self):
        if not self.corpora:
            raise ValueError("`corpora` must name at least one corpus")
        if not self.prompts:
            raise ValueError("`prompts` must hold at least one prompt")
        lams = sorted({check_lam(x) for x in self.lambdas} | {0.0})
        self.lambdas = lams
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"`samples` must be an int >= 1, got {self.samples!r}")
        self.decode(0)  # validates the decoding settings

    def decode(self, sample: int) -> DecodeConfig:
        return DecodeConfig(max_new_tokens=self.max_new_tokens, decoding=self.decoding,
                            num_beams=self.num_beams, temperature=self.temperature,
                            top_p=self.top_p, seed=self.seed + sample)


def package_versions() -> dict:
    import numpy
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__}


def _mean(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by an interruption: drop it and what follows
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def run_sweep(config: SweepConfig, out_dir, model=None, tokenizer=None,
              progress: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or resume) a sweep and write its results into ``out_dir``.

    Writes config.json, samples.jsonl, cells.jsonl (one finished cell a line;
    a resumed run skips these), results.csv, results.json and, when matplotlib
    is installed, metrics_vs_lambda.png.

    Returns:
        The result rows (one per corpus x lam), with relative changes vs lam = 0.
    """
    from steer.models import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_json = asdict(config)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        if old.get("sweep") != cfg_json:
            raise ValueError(f"{str(out)!r} holds a different sweep; use another --out or delete it")
    cfg_path.write_text(json.dumps({"sweep": cfg_json, "versions": package_versions()}, indent=2))

    cells = _read_jsonl(out / "cells.jsonl")
    done = {(c["corpus"], c["lam"]) for c in cells}
    samples = [s for s in _read_jsonl(out / "samples.jsonl") if (s["corpus"], s["lam"]) in done]
    _write_jsonl(out / "samples.jsonl", samples)
    _write_jsonl(out / "cells.jsonl", cells)
    todo = [(c, lam) for c in config.corpora for lam in config.lambdas if (c, lam) not in done]
    note = progress or (lambda msg: None)
    for c, lam in sorted(done):
        note(f"{c} lam={lam} (done earlier)")

    if todo:
        if model is None:
            model, tokenizer = load_model(config.model)
        unsteered = {}
        for k in range(config.samples):
            unsteered[k] = continue_prompts(model, tokenizer, config.prompts, (), config.decode(k))
    for corpus_name in config.corpora:
        lams = [lam for lam in config.lambdas if (corpus_name, lam) not in done]
        if not lams:
            continue
        corpus = load_corpus(corpus_name, holdout=config.holdout)
        table = table_for(corpus, tokenizer, config.order)
        for lam in lams:
            prompt_ids, conts, js, jac, pre = [], [], [], [], []
            for k in range(config.samples):
                base_prompts, base_conts = unsteered[k]
                rec = DivergenceRecorder(NGramStylePrior(table, lam, tokenizer, **config.prior))
                p_ids, c_ids = continue_prompts(model, tokenizer, config.prompts, [rec], config.decode(k))
                div = rec.divergences()  # (rows, steps)
                if config.decoding != "beam":  # rows are samples: average over their real tokens
                    for i, c in enumerate(c_ids):
                        js.extend(div[i, : len(c)].tolist())
                else:  # rows are beams: average over all of them
                    js.extend(div.flatten().tolist())
                for a, b in zip(c_ids, base_conts, strict=True):
                    jac.append(M.unigram_jaccard(a, b))
                    pre.append(M.shared_prefix(a, b))
                prompt_ids += p_ids
                conts += c_ids
                for i, c in enumerate(c_ids):
                    samples.append({"corpus": corpus_name, "lam": lam, "sample": k,
                                    "prompt": config.prompts[i],
                                    "text": tokenizer.decode(c, skip_special_tokens=True)})
            row = {
                "corpus": corpus_name, "lam": lam, "n_samples": len(conts),
                "style_ppl": M.style_perplexity(table, prompt_ids, conts, smoothing=config.metric_smoothing),
                "base_ppl": M.base_perplexity(model, prompt_ids, conts),
                "js_div": _mean(js) if js else 0.0,
                **{f"overlap_{n}": M.ngram_overlap(table, conts, n) for n in (1, 2, 3)},
                "distinct_1": M.distinct_n(conts, 1), "distinct_2": M.distinct_n(conts, 2),
                "jaccard_vs_unsteered": _mean(jac), "prefix_vs_unsteered": _mean(pre),
                "mean_len": _mean([len(c) for c in conts]),
            }
            _write_jsonl(out / "samples.jsonl", samples)
            cells.append(row)
            _write_jsonl(out / "cells.jsonl", cells)
            note(f"{corpus_name} lam={lam}")

    rows = _with_relative(cells, config)
    _write_results(out, rows)
    return rows


def _with_relative(cells: list[dict], config: SweepConfig) -> list[dict]:
    base = {c["corpus"]: c for c in cells if c["lam"] == 0.0}
    order = {(c, lam): i for i, (c, lam) in enumerate(
        (c, lam) for c in config.corpora for lam in config.lambdas)}
    rows = []
    for c in sorted(cells, key=lambda c: order.get((c["corpus"], c["lam"]), 1e9)):
        row = dict(c)
        for m in METRICS:
            b = base.get(c["corpus"], {}).get(m, float("nan"))
            row[f"{m}_rel"] = M.relative_change(c[m], b)
        rows.append(row)
    return rows


def _write_results(out: Path, rows: list[dict]) -> None:
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items() if k in COLUMNS})
    (out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    try:
        from steer.plots import plot_metrics_vs_lambda
    except ImportError:
        return
    plot_metrics_vs_lambda(rows, out / "metrics_vs_lambda.png")
