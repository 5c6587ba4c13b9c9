"""steer's priors inside vLLM: a v1 batch logits processor, steering the rows whose requests ask for it.

Start an engine with the processor and name the tables it may use (safetensors files written by
``NGramTable.save`` / ``steer build-table``, memory-mapped) in ``STEER_VLLM_TABLES``, a JSON object
``{"name": "path", ...}``::

    STEER_VLLM_TABLES='{"quixote": "quixote.safetensors", "books": "books.safetensors"}' \\
        vllm serve MODEL --logits-processors steer.serving.vllm:SteerLogitsProcessor

A request asks for steering through ``SamplingParams(extra_args={"steer": {...}})``, or over HTTP
with ``"vllm_xargs": {"steer": "<the same object as a JSON string>"}``. The object is a steering spec
(:class:`steer.spec.SteeringSpec`, the JSON of ``steer generate --spec``) whose ``corpus`` and
``background`` name the engine's tables::

    {"method": "prior", "knob": 0.1, "corpus": "quixote"}                          # the paper's prior
    {"method": "contrastive+plausible", "knob": 2, "corpus": "quixote", "background": "books"}
    {"method": "contrastive+kl", "knob": 0.04, "corpus": "quixote", "background": "books",
     "options": {"guided": {"kl_max_lam": 8}}}

The methods a logits processor of the tables alone can apply are served (the registry's
``servable`` ones: the paper's prior and the n-gram variants); the others (activation steering,
HSO, prompting, LoRA) are refused by name. The spec's ``decoding`` options are the engine's own
sampling parameters, so a request leaves them out. The earlier form ``{"table": ..., "lam": ...}``
(``eps`` for the KL budget, ``options`` of the one family the method reads) is read as the same spec.
Each row computes exactly what the transformers processor computes for the same context: the same
object is called on the row's last N-1 tokens. A bad request is refused by :meth:`validate_params`
(HTTP 400) before it reaches the batch.
"""

from __future__ import annotations

import json
import math
import os
import threading

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from ngram import NGramTable
from steer.methods import REFERENCE, REGISTRY, Context, get_method
from steer.spec import SPEC_KEYS, SteeringSpec
from steer.style import NGramStylePrior

ENV = "STEER_VLLM_TABLES"
KEY = "steer"
LEGACY_KEYS = {"table", "lam", "method", "background", "eps", "options"}
METHODS = tuple(name for name, m in REGISTRY.items() if m.servable)

_tables: dict[str, NGramTable] = {}
_lock = threading.Lock()


def table_paths() -> dict[str, str]:
    """The named tables of ``STEER_VLLM_TABLES`` (name -> path); {} when unset."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return {}
    try:
        paths = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{ENV} must be a JSON object {{name: path}}: {err}") from None
    if not isinstance(paths, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in paths.items()):
        raise ValueError(f"{ENV} must be a JSON object {{name: path}}, got {raw[:80]!r}")
    return paths


def load_table(name: str) -> NGramTable:
    """The table named ``name``, memory-mapped once per process."""
    with _lock:
        if name not in _tables:
            paths = table_paths()
            if name not in paths:
                raise ValueError(f"unknown steer table {name!r}: this engine has {sorted(paths)}")
            _tables[name] = NGramTable.load(paths[name], mmap=True)
        return _tables[name]


def _request(params: SamplingParams) -> dict | None:
    """The request's steer arguments, or None when it asks for none.

    An object, or the same as a JSON string (HTTP's ``vllm_xargs`` holds only flat values).
    """
    extra = getattr(params, "extra_args", None) or {}
    args = extra.get(KEY)
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as err:
            raise ValueError(f"extra_args[{KEY!r}] is not JSON: {err}") from None
    return args


def _from_legacy(args: dict) -> dict:
    """The spec of a request in the earlier form ``{"table", "lam" | "eps", "method", "background", "options"}``."""
    unknown = sorted(set(args) - LEGACY_KEYS)
    if unknown:
        raise ValueError(f"extra_args[{KEY!r}] has unknown keys {unknown}; known: {sorted(LEGACY_KEYS)}")
    method = get_method(_servable(args.get("method", REFERENCE)))
    if method.knob == "eps":
        if "eps" not in args:
            raise ValueError(f"method {method.name!r} needs 'eps' (its KL budget)")
        knob = args["eps"]
        if isinstance(knob, bool) or not isinstance(knob, (int, float)) or not math.isfinite(knob) or knob <= 0:
            raise ValueError(f"extra_args[{KEY!r}]['eps'] must be a finite number > 0, got {knob!r}")
    elif "eps" in args:
        raise ValueError(f"'eps' is the KL budget of the kl methods, not of {method.name!r}")
    else:
        knob = args.get("lam", 0.0)
        if isinstance(knob, bool) or not isinstance(knob, (int, float)) or not math.isfinite(knob) or knob < 0:
            raise ValueError(f"extra_args[{KEY!r}]['lam'] must be a finite number >= 0, got {knob!r}")
    if method.needs_background and "background" not in args:
        raise ValueError(f"method {method.name!r} subtracts a background table: give 'background'")
    options = args.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"extra_args[{KEY!r}]['options'] must be an object, got {options!r}")
    spec = {"method": method.name, "knob": knob, "corpus": args.get("table"),
            "options": {name: options for name in method.options}}
    if "background" in args:
        spec["background"] = args["background"]
    return spec


def _servable(name) -> str:
    if name not in REGISTRY or not REGISTRY[name].servable:
        why = ("it steers more than the logits (hooks, a cache, a prefix or an adapter)" if name in REGISTRY
               else "it is not a registered method")
        raise ValueError(f"extra_args[{KEY!r}]: method {name!r} cannot be served ({why}); this adapter serves "
                         f"{list(METHODS)}")
    return name


def request_spec(args) -> SteeringSpec:
    """The steering spec of a request's steer arguments (either form), checked; the tables are not loaded."""
    if not isinstance(args, dict):
        raise ValueError(f"extra_args[{KEY!r}] must be an object, got {type(args).__name__}")
    if "table" in args:
        args = _from_legacy(args)
    else:
        unknown = sorted(set(args) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"extra_args[{KEY!r}] has unknown keys {unknown}; known: {list(SPEC_KEYS)}")
        _servable(args.get("method"))
        options = args.get("options") or {}
        if isinstance(options, dict) and "decoding" in options:
            raise ValueError(f"extra_args[{KEY!r}]['options']['decoding']: decoding is set by the request's "
                             "sampling parameters, not the spec")
    if not isinstance(args.get("corpus"), str):
        raise ValueError(f"extra_args[{KEY!r}] needs 'corpus' (one of the engine's tables: {sorted(table_paths())})")
    try:
        spec = SteeringSpec.from_dict(args)
    except ValueError as err:
        raise ValueError(f"extra_args[{KEY!r}]: {err}") from None
    guided = spec.options.get("guided")
    if guided is not None and guided.fresh is not None:
        # The batch processor hands each row only its last N-1 tokens (_contexts), too few to find
        # the row's earlier n-grams: refused rather than silently weaker than under transformers.
        raise ValueError(f"extra_args[{KEY!r}]: the guided option 'fresh' needs each request's whole text, which "
                         "this adapter does not pass the prior; it is not available when serving")
    return spec


def build_processor(args: dict, tokenizer=None):
    """The transformers processor a request's steer arguments describe (validating every argument)."""
    spec = request_spec(args)
    table = load_table(spec.corpus)
    background = load_table(spec.background) if spec.background is not None else None
    ctx = Context(None, tokenizer, None, dict(spec.options), lambda: table, lambda: background, lora=None)
    try:
        (processor,) = get_method(spec.method).build(ctx, spec.knob).processors
    except (TypeError, ValueError) as err:
        raise ValueError(f"extra_args[{KEY!r}]: {err}") from None
    return processor


class SteerLogitsProcessor(LogitsProcessor):
    """steer's n-gram priors for the requests that ask for them (``extra_args={"steer": {...}}``).

    Rows with the same settings share one processor object; each step, every group's rows are
    gathered, steered in one batched call and scattered back. The rows' contexts are read from the
    requests' running token lists (vLLM hands them to logits processors only as Python lists).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = torch.device(device)
        model_config = vllm_config.model_config
        self.width = model_config.get_vocab_size()
        self.context = 1  # tokens of context a row needs: N-1 of the highest-order table
        paths = table_paths()
        if paths:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer)
            for name in paths:  # at engine start: a table of another token space stops it here
                table = load_table(name)
                table.check_tokenizer(tokenizer)
                if table.vocab_size > self.width:
                    raise ValueError(f"steer table {name!r} has {table.vocab_size} tokens, the engine's logits "
                                     f"only {self.width}")
                self.context = max(self.context, table.order - 1)
        self.rows: dict[int, tuple[str, list[int], list[int]]] = {}  # index -> (setting key, prompt tail, output)
        self.procs: dict[str, object] = {}  # setting key -> processor
        self.groups: list[tuple[object, torch.Tensor, list[int]]] = []

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        args = _request(sampling_params)
        if args is not None:
            build_processor(args)

    def is_argmax_invariant(self) -> bool:
        return False  # the bonus moves the argmax: greedy requests need it too

    def _key(self, args: dict) -> str:
        key = json.dumps(args, sort_keys=True)
        if key not in self.procs:
            # The tables were checked against the engine's tokenizer at start; fingerprinting the
            # tokenizer again for every new setting would cost ~0.1 s per request.
            self.procs[key] = build_processor(args)
        return key

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        # vLLM's order: removed, then added (which may take a removed row's index), then moved.
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            args = _request(params)
            key = None if args is None else self._key(args)
            if key is None or self.procs[key].lam == 0:
                self.rows.pop(index, None)  # unsteered (lam 0 is the identity: skip the work)
                continue
            tail = list(prompt_ids or [])[-self.context:]
            self.rows[index] = (key, tail, output_ids)
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if direction == MoveDirectionality.SWAP and row_b is not None:
                self.rows[a] = row_b
        # Settings no row uses any more are dropped; each group's row indices are built once per change.
        live = {key for key, _, _ in self.rows.values()}
        for key in [k for k in self.procs if k not in live]:
            del self.procs[key]
        groups: dict[str, list[int]] = {}
        for index, (key, _, _) in sorted(self.rows.items()):
            groups.setdefault(key, []).append(index)
        self.groups = [(self.procs[key], torch.tensor(idx, device=self.device), idx) for key, idx in groups.items()]

    def _contexts(self, indices: list[int]) -> torch.Tensor:
        """[rows, N-1]: each row's last N-1 tokens (prompt tail, then output), left-padded with -1."""
        k = self.context
        tails = []
        for i in indices:  # one slice per row: vLLM keeps the tokens as Python lists
            _, prompt_tail, out = self.rows[i]
            t = out[-k:] if len(out) >= k else (prompt_tail + out)[-k:]
            tails.append([-1] * (k - len(t)) + t)
        return torch.tensor(tails, dtype=torch.long, device=self.device)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if len(self.groups) == 1 and len(self.groups[0][2]) == logits.shape[0]:
            # Every row steered alike (the indices are distinct and below the batch size, so all of
            # them, in order): no gather or scatter, the logits are steered where they lie.
            proc, _, indices = self.groups[0]
            return _steer(proc, self._contexts(indices), logits)
        for proc, rows, indices in self.groups:
            steered = _steer(proc, self._contexts(indices), logits.index_select(0, rows))
            logits.index_copy_(0, rows, steered)
        return logits


def _steer(proc, contexts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``proc(contexts, scores)`` in ``scores``' dtype; the paper's prior is added in place.

    vLLM lets a processor write to the logits it is given. In place, the prior costs one fresh
    [B, V] tensor per step instead of two; on the CPU engine (glibc's allocator) every fresh tensor
    of that size is a round of page faults, which cost more than the add itself. ``add_`` runs the
    same kernel as :class:`~steer.style.NGramStylePrior`'s ``torch.add(scores, prior, alpha=lam)``,
    so the values are the same.
    """
    if type(proc) is NGramStylePrior and scores.dtype == torch.float32:
        return scores.add_(proc.prior(contexts, scores.shape[-1]), alpha=proc.lam)
    return proc(contexts, scores).to(scores.dtype)
