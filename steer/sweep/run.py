"""Running a sweep: every cell generated from its spec and judged, resumable, one process per run folder."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from steer import metrics as M
from steer.corpora import Corpus, load_corpus
from steer.generation import continuation_texts, continue_prompts
from steer.methods import get_method
from steer.monitor import DivergenceRecorder
from steer.runs import RunLock, check_same_config, normalise, write_jsonl
from steer.spec import Workshop, load_source
from steer.sweep.config import SweepConfig, canonical_config, config_defaults, package_versions
from steer.sweep.report import _key, _mean, _read_rows, _with_relative, _write_results, judge_columns


class CellRunner:
    """Generates and scores one cell; holds what the cells of a corpus share.

    ``panel`` (a :class:`steer.judges.panel.JudgePanel`, :func:`build_panel`) and ``fluency`` (a
    :class:`steer.judges.fluency.CrossModelFluency`) judge every cell when set. The unsteered
    continuations (what the table metrics and the panel's chunk lengths compare with) are
    generated on first use.
    """

    def __init__(self, config: SweepConfig, model, tokenizer):
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.panel = None
        self.fluency = None

    @functools.cached_property
    def unsteered(self) -> dict:
        """Sample k -> (prompt ids, continuation ids) of the unsteered model."""
        cfg = self.config
        return {k: continue_prompts(self.model, self.tokenizer, cfg.prompts, (), cfg.decode(k))
                for k in range(cfg.samples)}

    def unsteered_texts(self) -> list[str]:
        return [t for k in range(self.config.samples)
                for t in continuation_texts(self.tokenizer, *self.unsteered[k])]

    def cell(self, corpus, table, method, knob, setup):
        """Generate the cell's continuations with ``setup`` (a steer.methods.Setup) and score them
        (``table``: a callable giving the corpus's style table, for the table metrics)."""
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
        if self.fluency is not None:
            cross = self.fluency.nll(user_prompts, texts)
            values.update({"cross_nll": [c[0] for c in cross], "cross_tokens": [float(c[1]) for c in cross]})
        for i, smp in enumerate(samples):
            smp.update({k: v[i] for k, v in values.items()})
        row = {
            "corpus": corpus, "method": method, "lam": setup.lam, "knob": knob, "n_samples": len(conts),
            **judge_columns(samples, self.panel.summary(user_prompts, texts) if self.panel else {}),
            "base_ppl": M.pooled_perplexity(values["base_nll"], values["base_tokens"]),
            "cross_ppl": (M.pooled_perplexity(values["cross_nll"], values["cross_tokens"]) if "cross_nll" in values
                          else float("nan")),
            "js_div": _mean(js) if js else float("nan") if not setup.processors else 0.0,
            "mean_len": _mean([len(c) for c in conts]),
            "infer_ms_per_token": 1e3 * gen_s / n_tok if n_tok else float("nan"),
            **setup.costs,
            **self._table_metrics(table, prompt_ids, conts, jac, pre),
        }
        return row, samples

    def _table_metrics(self, table, prompt_ids, conts, jac, pre) -> dict:
        """The columns that score text with the steering table itself, or against the unsteered text
        (they favour the prior by construction): computed only with ``config.table_metrics``."""
        names = ["steer_table_ppl", "overlap_1", "overlap_2", "overlap_3", "jaccard_vs_unsteered",
                 "prefix_vs_unsteered"]
        if not self.config.table_metrics:
            return dict.fromkeys(names, float("nan"))
        table = table()  # built (or read from the cache) only when these columns are asked for
        return {"steer_table_ppl": M.style_perplexity(table, prompt_ids, conts, smoothing=self.config.metric_smoothing),
                **{f"overlap_{n}": M.ngram_overlap(table, conts, n) for n in (1, 2, 3)},
                "jaccard_vs_unsteered": _mean(jac), "prefix_vs_unsteered": _mean(pre)}


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
        sources = {name: load_source(name, config.judge_fraction, config.encoding) for name in config.corpora}
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
                judged = judge_corpora(config, sources, extra)
            if model is None:
                from steer.models import load_model

                model, tokenizer = load_model(config.model)
            (out / "config.json").write_text(json.dumps(
                {"sweep": cfg_json, "versions": package_versions(), "splits": splits}, indent=2), encoding="utf-8")
            _run_cells(_Run(config, out, model, tokenizer, sources, extra, judged, note, lora_progress), todo, cells,
                       done)
        return _write_results(out, _with_relative(cells, config), config)


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


def judge_corpora(config: SweepConfig, sources: dict, extra) -> dict:
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


def build_panel(config: SweepConfig, judged: dict, runner: CellRunner):
    """The judges of ``config`` built from the corpora :func:`judge_corpora` read (the classifier's chunks
    as long as the runner's unsteered continuations)."""
    from steer.judges.panel import JudgePanel, word_lengths

    return JudgePanel(judged["targets"], judged.get("classes"), judged.get("neutral"),
                      lengths=word_lengths(runner.unsteered_texts()), kinds=config.judges,
                      classifier_options=config.classifier)


@dataclass
class _Run:
    """What the cells of one run share: its settings and folder, the model, the corpora read and judged."""

    config: SweepConfig
    out: Path
    model: object
    tokenizer: object
    sources: dict  # corpus entry -> Corpus or saved table
    extra: Callable  # name -> a further corpus (background, classes), read once
    judged: dict  # the judges' corpora (empty: no judges)
    note: Callable[[str], None]
    lora_progress: Callable | None


def _run_cells(run: _Run, todo: list, cells: list[dict], done: set) -> None:
    """Generate and judge every cell of ``todo``, appending each to cells.jsonl and samples.jsonl as it ends."""
    cfg, out, model, tok = run.config, run.out, run.model, run.tokenizer
    samples = [s for s in _read_rows(out / "samples.jsonl") if _key(s) in done]
    write_jsonl(out / "samples.jsonl", samples)
    write_jsonl(out / "cells.jsonl", cells)
    runner = CellRunner(cfg, model, tok)
    if cfg.fluency_judge is not None:
        runner.fluency = fluency_judge(cfg.fluency_judge, model)
    if run.judged:
        runner.panel = build_panel(cfg, run.judged, runner)
        (out / "judge.json").write_text(json.dumps(runner.panel.report(), indent=1), encoding="utf-8")
    workshop = Workshop(model, tok, sources=run.sources, read=run.extra,
                        lora=lambda corpus, lora: _lora_for(cfg, lora, model, tok, corpus, out, run.lora_progress))
    for corpus, method, knob in todo:
        steering = cfg.spec(corpus, method, knob).build(model, tok, workshop)
        row, new = runner.cell(corpus, steering.table, method, knob, steering.setup)
        del steering
        samples += new
        write_jsonl(out / "samples.jsonl", samples)
        cells.append(row)
        write_jsonl(out / "cells.jsonl", cells)
        run.note(f"{corpus} {method} {get_method(method).knob or 'knob'}={knob}")


def fluency_judge(source: str, model):
    """The cross-model fluency judge, refused when it is the steered model under another name."""
    from steer.judges.fluency import CrossModelFluency
    from steer.model_fingerprint import model_fingerprint

    judge = CrossModelFluency.load(source)
    if model_fingerprint(judge.model) == model_fingerprint(model):
        raise ValueError(f"`fluency_judge` {source!r} is the steered model itself: a method must not be judged by "
                         "a model it uses; name a model of another family")
    return judge


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
