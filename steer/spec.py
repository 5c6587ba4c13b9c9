"""A steering spec: one serialisable description of a steering setting, and what it builds for ``generate``.

A :class:`SteeringSpec` names a registered method (:mod:`steer.methods`), its knob, the style
corpus (a name, a text path or a saved table), the background corpus where the method subtracts
one, and the options of every family the method reads (:mod:`steer.options`). The same JSON is
what ``steer generate --spec`` reads, what a sweep builds each cell from, and what a serving
request carries.

Example (SmolLM2, the most in-style method at the unsteered model's fluency on CNN):

    >>> from steer import SteeringSpec, load_model                                    # doctest: +SKIP
    >>> model, tokenizer = load_model("../shared/data/models/smollm2-135m-instruct")  # doctest: +SKIP
    >>> spec = SteeringSpec("activation+contrastive+plausible", corpus="cnn_highlights", knob=0.25,
    ...                     options={"decoding": {"decoding": "sample", "top_p": 0.95, "loop_ban": [3, 3]}})
    >>> steering = spec.build(model, tokenizer)                                       # doctest: +SKIP
    >>> steering.generate(["The news spread quickly through"])                        # doctest: +SKIP

``steering.processors`` and ``with steering:`` (activation hooks, installed and removed) serve a
hand-written ``model.generate`` call instead.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from steer import checks
from steer.methods import Context, Setup, get_method
from steer.options import Options, family

SPEC_KEYS = ("method", "knob", "corpus", "background", "options")
TABLE_SUFFIX = ".safetensors"
DEFAULT_BACKGROUND = "background"


def is_table_file(corpus: str) -> bool:
    """Whether a corpus entry names a saved table (``steer build-table``) rather than text."""
    return str(corpus).endswith(TABLE_SUFFIX)


def check_knob(method, knob) -> float:
    """The knob of ``method`` (a :class:`steer.methods.Method`): a finite number >= 0; 0 for a method without one."""
    if not method.knob:
        if knob not in (None, 0, 0.0):
            raise ValueError(f"method {method.name!r} has no knob; drop `knob` ({knob!r})")
        return 0.0
    if knob is None:
        example = method.knobs[len(method.knobs) // 2] if method.knobs else 0.1
        raise ValueError(f"method {method.name!r} needs `knob` (its {method.knob}; e.g. {example:g})")
    try:
        return checks.number("knob", knob, 0)
    except ValueError as err:
        raise ValueError(f"{err} (the `{method.knob}` of {method.name!r})") from None


@dataclass(frozen=True)
class SteeringSpec:
    """A method, its knob, the style corpus, the background where used, and the options of its families.

    Args:
        method: a registered method (:data:`steer.methods.REGISTRY`), e.g. ``"contrastive+plausible"``.
        corpus: a corpus name (``steer/catalog/manifest.json``), a text file or folder, or a ``.safetensors``
            table from ``steer build-table`` (methods that need text refuse a table).
        knob: the method's knob (lam, the KL budget eps, the activation scale, HSO steps); methods
            without a knob take 0.
        background: the corpus contrastive and activation methods measure against (default:
            ``"background"``, the base model's books); refused for a method that uses none.
        options: family name -> options (an :class:`steer.options.Options` or its dict); only the
            families the method reads (``Method.families()``), each completed with its defaults.

    ``to_dict()`` / ``from_dict()`` and ``save()`` / ``load()`` round-trip exactly.
    """

    method: str
    corpus: str
    knob: float | None = None
    background: str | None = None
    options: Mapping[str, Options] = field(default_factory=dict)

    def __post_init__(self):
        m = get_method(self.method)
        if not isinstance(self.corpus, str) or not self.corpus:
            raise ValueError(f"`corpus` must be a corpus name, a path or a table file, got {self.corpus!r}")
        object.__setattr__(self, "knob", check_knob(m, self.knob))
        if m.needs_background:
            background = DEFAULT_BACKGROUND if self.background is None else self.background
            if not isinstance(background, str) or not background:
                raise ValueError(f"`background` must be a corpus name or path, got {self.background!r}")
            object.__setattr__(self, "background", background)
        elif self.background is not None:
            raise ValueError(f"method {self.method!r} uses no background corpus; drop `background`")
        if m.needs_text and is_table_file(self.corpus):
            raise ValueError(f"method {self.method!r} needs the corpus's text, but {self.corpus!r} is a saved table")
        if not isinstance(self.options, Mapping):
            raise ValueError(f"`options` must map option families to their options, got {self.options!r}")
        unused = sorted(set(self.options) - set(m.families()))
        if unused:
            raise ValueError(f"method {self.method!r} reads the option families {list(m.families())}, not "
                             f"{unused}")
        object.__setattr__(self, "options", {name: family(name).from_dict(self.options.get(name))
                                             for name in m.families()})

    def to_dict(self) -> dict:
        """The spec as JSON-ready data (every option of its families written out)."""
        out = {"method": self.method, "knob": self.knob, "corpus": self.corpus}
        if self.background is not None:
            out["background"] = self.background
        out["options"] = {name: opts.to_dict() for name, opts in self.options.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SteeringSpec:
        """The spec of ``data`` (:meth:`to_dict`'s form; ``options`` and its families may be partial)."""
        if not isinstance(data, dict):
            raise ValueError(f"a steering spec must be an object, got {data!r}")
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"a steering spec has unknown keys {unknown}; known: {list(SPEC_KEYS)}")
        missing = [k for k in ("method", "corpus") if k not in data]
        if missing:
            raise ValueError(f"a steering spec needs {missing}")
        if not isinstance(data["method"], str):
            raise ValueError(f"`method` must be a string, got {data['method']!r}")
        return cls(data["method"], data["corpus"], data.get("knob"), data.get("background"),
                   data.get("options") or {})

    def save(self, path) -> None:
        """Write the spec as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path) -> SteeringSpec:
        """Read a spec written by :meth:`save` (or by hand), refusing a file that is not one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"spec file {str(path)!r} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"spec file {str(path)!r} is not JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"spec file {str(path)!r}: {err}") from None

    def get(self, name: str) -> Options:
        """The options of family ``name``."""
        if name not in self.options:
            raise ValueError(f"method {self.method!r} reads no {name!r} options; it reads {list(self.options)}")
        return self.options[name]

    def with_knob(self, knob: float) -> SteeringSpec:
        """The same setting at another knob value."""
        return SteeringSpec(self.method, self.corpus, knob, self.background, self.options)

    def build(self, model, tokenizer, workshop: Workshop | None = None) -> Steering:
        """What ``generate`` needs to apply this setting to ``model`` (tables, vectors and adapters cached).

        ``workshop`` shares what several specs on one model reuse (corpora read once, tables, the
        style vector); by default a new one.
        """
        workshop = workshop or Workshop(model, tokenizer)
        ctx = workshop.context(self)
        return Steering(self, get_method(self.method).build(ctx, self.knob), model, tokenizer, ctx.table)


class Steering:
    """A built spec: logits processors, a context manager for hooks, and ``generate`` for prompts.

    ``with steering:`` installs what the method needs around generation (activation hooks) and
    removes it on exit; ``steering.processors`` go into ``model.generate(logits_processor=...)``.
    :meth:`generate` does both, with the spec's decoding options, as a sweep generates a cell.
    """

    def __init__(self, spec: SteeringSpec, setup: Setup, model, tokenizer, table=None):
        self.spec, self.setup, self.model, self.tokenizer = spec, setup, model, tokenizer
        self.table = table  # () -> the corpus's style table (built or read from the cache on first call)
        self._context = None

    @property
    def processors(self) -> list:
        """The method's logits processors (the spec's loop ban, if any, is added by :meth:`generate`)."""
        return list(self.setup.processors)

    @property
    def prefix(self) -> str:
        """Text put before every prompt (prompting's instruction and exemplars; "" for most methods)."""
        return self.setup.prefix

    def __enter__(self) -> Steering:
        self._context = (self.setup.context or contextlib.nullcontext)()
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(*exc)

    def generate_ids(self, prompts: list[str], decode=None) -> tuple[list[list[int]], list[list[int]]]:
        """(prompt ids, continuation ids) of ``prompts`` under this setting; the prompt ids hold the prefix."""
        return self.setup.continue_prompts(self.model, self.tokenizer, list(prompts), decode or self.spec.get(
            "decoding"))

    def generate(self, prompts: list[str], decode=None) -> list[str]:
        """Each prompt's continuation (the text after it, leading space included) under this setting.

        ``decode``: a :class:`steer.generation.DecodeConfig` instead of the spec's decoding options.
        """
        from steer.generation import continuation_texts
        from steer.models import encode_prompts

        _, conts = self.generate_ids(prompts, decode)
        # Texts are cut after the user's prompt, never the method's prefix (as a sweep records them).
        enc = encode_prompts(self.tokenizer, list(prompts))
        user_ids = [row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"],
                                                                    strict=True)]
        return continuation_texts(self.tokenizer, user_ids, conts)


class Workshop:
    """What specs built on one model share: corpora read once, tables built once, per-corpus memos.

    Args:
        model, tokenizer: the frozen model the specs steer.
        sources: corpus entry -> what it was read as (a :class:`steer.corpora.Corpus` or a saved
            :class:`ngram.NGramTable`), for corpora already read (a sweep reads them before the model).
        read: (name) -> Corpus, how a further corpus (the background) is read; default
            :func:`steer.corpora.load_corpus` with the spec's corpus options.
        lora: (corpus, LoraTrainConfig) -> (model, meta, nbytes), how an adapter is had; default
            :func:`steer.baselines.lora.cached_lora` (trained once per model, text and settings).
    """

    def __init__(self, model, tokenizer, sources: dict | None = None, read=None, lora=None):
        self.model, self.tokenizer = model, tokenizer
        self.sources = dict(sources or {})
        self._read, self._lora = read, lora
        self._extras: dict = {}
        self._checked: set = set()  # saved tables already checked against the tokenizer
        self._tables: dict = {}
        self._memos: dict = {}
        self._adapters: dict = {}

    def source(self, name: str, corpus_options):
        """The corpus entry ``name`` as read (a Corpus) or loaded (a saved table, checked against the tokenizer)."""
        if name not in self.sources:
            self.sources[name] = load_source(name, corpus_options.judge_fraction, corpus_options.encoding)
        from ngram import NGramTable

        source = self.sources[name]
        if isinstance(source, NGramTable) and name not in self._checked:
            source.check_tokenizer(self.tokenizer)
            self._checked.add(name)
        return source

    def extra(self, name: str, corpus_options):
        """A further corpus (the background), read once, as the sweep reads its extra corpora."""
        if self._read is not None:
            return self._read(name)
        if name not in self._extras:
            from steer.corpora import load_corpus

            self._extras[name] = load_corpus(name, judge_fraction=corpus_options.judge_fraction)
        return self._extras[name]

    def table(self, corpus, order: int):
        """The table of a Corpus's steer split (cached on disk by :func:`steer.table_cache.table_for`)."""
        from steer.table_cache import table_for

        key = (id(corpus), order)
        if key not in self._tables:
            self._tables[key] = (corpus, table_for(corpus, self.tokenizer, order))
        return self._tables[key][1]

    def context(self, spec: SteeringSpec) -> Context:
        """The :class:`steer.methods.Context` a method builds ``spec`` from."""
        from ngram import NGramTable

        copts = spec.get("corpus")
        source = self.source(spec.corpus, copts)
        if isinstance(source, NGramTable):
            if source.order != copts.order:
                raise ValueError(f"table {spec.corpus!r} has order {source.order}, the spec asks for "
                                 f"{copts.order}; set the corpus option order to {source.order}")
            corpus, table = None, (lambda: source)
        else:
            corpus, table = source, (lambda: self.table(source, copts.order))
        background = spec.background or DEFAULT_BACKGROUND

        def lora():
            return self.adapter(corpus, spec.options.get("lora"))

        def background_table():
            if is_table_file(background):  # a saved table (as a served spec names it)
                return self.source(background, copts)
            return self.table(self.extra(background, copts), copts.order)

        memo = self._memos.setdefault((spec.corpus, copts.judge_fraction, copts.encoding), {})
        return Context(self.model, self.tokenizer, corpus, dict(spec.options), table, background_table, lora,
                       background_corpus=lambda: self.extra(background, copts), memo=memo)

    def adapter(self, corpus, config):
        """The LoRA adapter of ``corpus`` under ``config`` (model, meta, bytes), had once per workshop."""
        key = (id(corpus), config)
        if key not in self._adapters:
            if self._lora is not None:
                self._adapters[key] = self._lora(corpus, config)
            else:
                from steer.baselines.lora import adapter_bytes, cached_lora

                pmodel, meta, _ = cached_lora(self.model, self.tokenizer, corpus.steer, config,
                                              corpus_name=corpus.name)
                self._adapters[key] = (pmodel, meta, adapter_bytes(pmodel))
        return self._adapters[key]


def load_source(name: str, judge_fraction: float, encoding: str = "utf-8"):
    """A corpus entry as methods use it: a saved table (``.safetensors``, loaded) or text (read and split
    into its steer and judge parts by :func:`steer.corpora.load_corpus`)."""
    if is_table_file(name):
        from ngram import NGramTable

        if not Path(name).exists():
            raise FileNotFoundError(f"table file {name!r} not found")
        return NGramTable.load(name)
    from steer.corpora import load_corpus

    return load_corpus(name, judge_fraction=judge_fraction, encoding=encoding)
