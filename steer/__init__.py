"""steer: decoding-time steering of frozen Hugging Face causal LMs.

The public API, importable from the top level (loaded on first use, so that
``import steer`` stays cheap)::

    import steer
    model, tokenizer = steer.load_model("../shared/data/models/base-llama2tok")
    corpus = steer.load_corpus("don_quixote")
    table = steer.NGramTable.from_texts(corpus.steer, tokenizer, order=3)
    prior = steer.NGramStylePrior(table, lam=0.1, tokenizer=tokenizer)
    spec = steer.SteeringSpec("contrastive+plausible", corpus="don_quixote", knob=2.0)
    texts = spec.build(model, tokenizer).generate(["The old man walked"])
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

# name -> module that defines it
_EXPORTS = {
    # the engine and the prior
    "NGramTable": "ngram",
    # a steering setting, applied in a few lines
    "SteeringSpec": "steer.spec",
    "Steering": "steer.spec",
    "GuidedOptions": "steer.options",
    "ActivationOptions": "steer.options",
    "HSOOptions": "steer.options",
    "PriorOptions": "steer.options",
    "CorpusOptions": "steer.options",
    "NGramStylePrior": "steer.style",
    "GuidedStylePrior": "steer.priors",
    "table_for": "steer.table_cache",
    # loading
    "load_model": "steer.models",
    "load_tokenizer": "steer.models",
    "encode_prompts": "steer.models",
    "stop_ids": "steer.models",
    "load_corpus": "steer.corpora",
    "Corpus": "steer.corpora",
    "split_steer_judge": "steer.corpora",
    "continue_prompts": "steer.generation",
    "DecodeConfig": "steer.generation",
    # metrics
    "base_perplexity": "steer.metrics",
    "style_perplexity": "steer.metrics",
    "js_divergence": "steer.metrics",
    "ngram_overlap": "steer.metrics",
    "distinct_n": "steer.metrics",
    "relative_change": "steer.metrics",
    # held-out judges
    "JudgePanel": "steer.judges.panel",
    "HeldoutStylePPL": "steer.judges.heldout",
    "StyleClassifier": "steer.judges.classifier",
    "DiversityJudge": "steer.judges.diversity",
    "bootstrap_mean_ci": "steer.judges.stats",
    "paired_diff_ci": "steer.judges.stats",
    # the study
    "SweepConfig": "steer.sweep",
    "run_sweep": "steer.sweep",
    "register_method": "steer.methods",
    "matched_table": "steer.matched",
    # baselines
    "StylePrompt": "steer.baselines.prompt",
    "LoraTrainConfig": "steer.baselines.lora",
    "train_lora": "steer.baselines.lora",
    "load_lora": "steer.baselines.lora",
    # activation steering
    "StyleVector": "steer.activation",
    "ActivationSteering": "steer.activation",
    "style_vector_for": "steer.activation",
    # conditional beam search
    "Degeneracy": "steer.degeneracy",
    "PrefixHead": "steer.conditional.head",
    "HiddenStateTap": "steer.conditional.beam",
    "ConditionalBeam": "steer.conditional.beam",
    "NoNgramLoop": "steer.repetition",
    "HardConstraints": "steer.conditional.constraints",
    "hard_constraints": "steer.conditional.constraints",
    "train_attribute_model": "steer.conditional.train",
    # edit-span decoding
    "extract_spans": "steer.edits.spans",
    "apply_spans": "steer.edits.spans",
    "format_spans": "steer.edits.format",
    "parse_spans": "steer.edits.format",
    "EditSpanGrammar": "steer.edits.grammar",
    "edit_generate": "steer.edits.generate",
}

__all__ = ["__version__", *_EXPORTS]


_RENAMED = {"register_method": "register", "style_vector_for": "vector_for"}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'steer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
