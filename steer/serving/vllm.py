"""steer's priors inside vLLM, on either model runner, steering the rows whose requests ask for it.

Start an engine with the processor and name the tables it may use (safetensors files written by
``NGramTable.save`` / ``steer build-table``, memory-mapped) in ``STEER_VLLM_TABLES``, a JSON object
``{"name": "path", ...}``::

    STEER_VLLM_TABLES='{"quixote": "quixote.safetensors", "books": "books.safetensors"}' \\
        vllm serve MODEL --logits-processors steer.serving.vllm:SteerLogitsProcessor

``SteerLogitsProcessor`` works under both of vLLM's model runners: it becomes
:class:`SteerLogitsProcessorV1` under the V1 runner (the batch interface of ``vllm.v1.sample``; the
CPU build's only runner) and :class:`SteerLogitsProcessorV2` under Model Runner V2 (the GPU default
since vLLM 0.25), whichever runner constructs it; either may be named directly instead. Under
speculative decoding MRV2 steers each draft row with the drafts before it; the V1 runner never
shows custom processors its draft rows, so there the engine is refused at start.

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

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState

from ngram import NGramTable
from steer.methods import REFERENCE, Context, get_method, servable_method
from steer.spec import SPEC_KEYS, SteeringSpec

ENV = "STEER_VLLM_TABLES"
KEY = "steer"
LEGACY_KEYS = {"table", "lam", "method", "background", "eps", "options"}

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
    try:
        return servable_method(name).name
    except ValueError as err:
        raise ValueError(f"extra_args[{KEY!r}]: {err}") from None


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


class _Settings:
    """The steering settings of the live requests: one processor per distinct setting, built once.

    A setting is keyed by its request object's canonical JSON; rows asking for the same setting
    share the processor, so each step steers them in one batched call.
    """

    def __init__(self):
        self.procs: dict[str, object] = {}  # setting key -> processor

    def key(self, params: SamplingParams) -> str | None:
        """The request's setting key (its processor built on first use), or None when it is not steered."""
        args = _request(params)
        if args is None:
            return None
        key = json.dumps(args, sort_keys=True)
        if key not in self.procs:
            # The tables were checked against the engine's tokenizer at start; fingerprinting the
            # tokenizer again for every new setting would cost ~0.1 s per request.
            self.procs[key] = build_processor(args)
        if self.procs[key].lam == 0:
            return None  # lam 0 is the identity: skip the work
        return key

    def keep(self, live) -> None:
        """Drop the processors of settings no live request uses."""
        for key in set(self.procs) - set(live):
            del self.procs[key]


def _engine_context(vllm_config) -> int:
    """Tokens of context a row needs (N-1 of the highest-order table), checking every named table at start.

    A table of another token space, or wider than the engine's logits, stops the engine here.
    """
    model_config = vllm_config.model_config
    width = model_config.get_vocab_size()
    context = 1
    paths = table_paths()
    if paths:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer)
        for name in paths:
            table = load_table(name)
            table.check_tokenizer(tokenizer)
            if table.vocab_size > width:
                raise ValueError(f"steer table {name!r} has {table.vocab_size} tokens, the engine's logits "
                                 f"only {width}")
            context = max(context, table.order - 1)
    return context


class SteerLogitsProcessorV1(LogitsProcessor):
    """steer's n-gram priors on vLLM's V1 model runner (the ``vllm.v1.sample`` batch interface).

    Rows with the same settings share one processor object; each step, every group's rows are
    gathered, steered in one batched call and scattered back. The rows' contexts are read from the
    requests' running token lists (vLLM hands them to logits processors only as Python lists).

    The V1 runner does not call custom processors on the rows it verifies under speculative
    decoding, so an engine with a speculative config is refused at start (the V2 runner steers them).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError("steer's processor on vLLM's V1 model runner cannot steer speculative decoding: the "
                             "runner verifies draft tokens without custom logits processors. Use Model Runner V2 "
                             "(VLLM_USE_V2_MODEL_RUNNER=1, needs Triton) or drop the speculative config.")
        self.device = torch.device(device)
        self.context = _engine_context(vllm_config)
        self.settings = _Settings()
        self.rows: dict[int, tuple[str, list[int], list[int]]] = {}  # index -> (setting key, prompt tail, output)
        self.groups: list[tuple[object, torch.Tensor, list[int]]] = []

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        _validate(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # the bonus moves the argmax: greedy requests need it too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        # vLLM's order: removed, then added (which may take a removed row's index), then moved.
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            key = self.settings.key(params)
            if key is None:
                self.rows.pop(index, None)
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
        self.settings.keep(key for key, _, _ in self.rows.values())
        groups: dict[str, list[int]] = {}
        for index, (key, _, _) in sorted(self.rows.items()):
            groups.setdefault(key, []).append(index)
        self.groups = [(self.settings.procs[key], torch.tensor(idx, device=self.device), idx)
                       for key, idx in groups.items()]

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


class SteerLogitsProcessorV2(V2LogitsProcessor):
    """steer's n-gram priors on vLLM's Model Runner V2 (``vllm.v1.worker.gpu.sample.logits_processor``).

    Under this interface a logits row is not a request: rows are reordered every step, and under
    speculative decoding a request owns one row per token it verifies. State is kept per request
    *slot* (``add_request`` overwrites a recycled slot's setting), and each row's context is read on
    the device from the runner's own token history, so a step costs no host sync:

    - a row sees its request's committed tokens (``all_token_ids[slot, :total_len]``) followed by
      the draft tokens of the rows before it in the same request (``input_ids`` at local positions
      1..p; position 0 is the last committed token), as vLLM's bad-words stage reads them;
    - without draft rows (one row per request, row i at batch position i), each setting's rows
      are known on the host from ``idx_mapping_np`` and steered in one gathered call; with them, each
      setting is applied to every row and kept where the row's slot asks for it.
    """

    def __init__(self, vllm_config, req_states):
        self.device = torch.device(req_states.device)
        self.req_states = req_states
        self.context = _engine_context(vllm_config)
        self.settings = _Settings()
        self.slot_key: list[str | None] = [None] * req_states.max_num_reqs
        self.slot_setting = np.full(req_states.max_num_reqs, -1, dtype=np.int64)  # slot -> setting id, -1 none
        self.setting_ids: dict[str, int] = {}
        self.procs: dict[int, object] = {}
        self._slot_setting_dev: torch.Tensor | None = None  # the device copy, refreshed after changes

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        _validate(sampling_params)

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        key = self.settings.key(sampling_params)
        self.slot_key[req_idx] = key
        if key is not None and key not in self.setting_ids:
            self.setting_ids[key] = max(self.setting_ids.values(), default=-1) + 1
        self.slot_setting[req_idx] = -1 if key is None else self.setting_ids[key]
        # Slots are recycled without a removal call: settings no slot holds any more are dropped here.
        live = {k for k in self.slot_key if k is not None}
        self.settings.keep(live)
        self.setting_ids = {k: i for k, i in self.setting_ids.items() if k in live}
        self.procs = {i: self.settings.procs[k] for k, i in self.setting_ids.items()}  # setting id -> processor
        self._slot_setting_dev = None
        return key is not None

    def apply_staged_writes(self) -> None:
        if self._slot_setting_dev is None:
            self._slot_setting_dev = torch.from_numpy(self.slot_setting).to(self.device)

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        slots = ctx.idx_mapping_np
        setting = np.where(slots >= 0, self.slot_setting[np.maximum(slots, 0)], -1)
        live = np.unique(setting[setting >= 0])
        if live.size == 0:
            return logits
        rows = logits.shape[0]
        if rows == len(slots):  # one row per request, in batch order
            for s in live.tolist():
                picked = np.flatnonzero(setting == s)
                if picked.size == rows:
                    logits = _steer(self.procs[s], self._contexts(ctx), logits)
                    continue
                index = torch.from_numpy(picked).to(self.device, non_blocking=True)
                steered = _steer(self.procs[s], self._contexts(ctx, index), logits.index_select(0, index))
                logits.index_copy_(0, index, steered)
            return logits
        if self._slot_setting_dev is None:
            self.apply_staged_writes()
        mapping = ctx.expanded_idx_mapping.long()
        row_setting = torch.where(mapping >= 0, self._slot_setting_dev[mapping.clamp(min=0)], -1)
        contexts = self._contexts(ctx)
        for s in live.tolist():
            steered = _steer(self.procs[s], contexts, logits.clone())
            logits = torch.where((row_setting == s).unsqueeze(1), steered, logits)
        return logits

    def _contexts(self, ctx, index: torch.Tensor | None = None) -> torch.Tensor:
        """[rows, N-1]: the last N-1 tokens each row sees (committed, then this step's drafts), left-padded with -1."""
        rows = torch.arange(ctx.input_ids.shape[0], device=self.device) if index is None else index
        slot = ctx.expanded_idx_mapping[rows].long().clamp(min=0)
        local = ctx.expanded_local_pos[rows].long()
        committed = self.req_states.total_len.gpu[slot].long().unsqueeze(1)  # [R, 1]
        # Positions L-k .. L-1 of the row's visible sequence, L = committed + local position.
        k = self.context
        pos = committed + local.unsqueeze(1) - k + torch.arange(k, device=self.device)  # [R, k]
        history = self.req_states.all_token_ids.gpu
        from_history = history[slot.unsqueeze(1), pos.clamp(0, history.shape[1] - 1)]
        # A draft at position committed + j (j >= 0) is the input of local position j + 1, i.e.
        # row (row - local) + j + 1 of the same request.
        draft_row = (rows - local).unsqueeze(1) + 1 + (pos - committed)
        from_drafts = ctx.input_ids[draft_row.clamp(0, ctx.input_ids.shape[0] - 1)]
        tokens = torch.where(pos >= committed, from_drafts.long(), from_history.long())
        return torch.where(pos >= 0, tokens, -1)


class SteerLogitsProcessor(SteerLogitsProcessorV1, V2LogitsProcessor):
    """The processor to name at engine start: it becomes the V1 or the V2 one, as the running runner builds it.

    Both runners' loaders accept it (it subclasses both interfaces); the V1 runner constructs
    processors as ``cls(vllm_config, device, is_pin_memory)`` and Model Runner V2 as
    ``cls(vllm_config, req_states)``, so the arguments say which runner is asking.
    """

    def __new__(cls, vllm_config, *args, **kwargs):
        if args and isinstance(args[0], LogitsProcRequestState):
            return SteerLogitsProcessorV2(vllm_config, *args)
        return SteerLogitsProcessorV1(vllm_config, *args, **kwargs)


def _validate(params: SamplingParams) -> None:
    """Refuse a request with bad steer arguments (vLLM turns the ValueError into HTTP 400)."""
    args = _request(params)
    if args is not None:
        build_processor(args)


def _steer(proc, contexts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``proc(contexts, scores)`` in ``scores``' dtype, written into float32 ``scores`` in place.

    vLLM lets a processor write to the logits it is given. In place, the prior costs one fresh
    [B, V] tensor per step instead of two, and the plausible variant none (it writes its support
    only); on the CPU engine (glibc's allocator) every fresh tensor of that size is a round of page
    faults, which cost more than the arithmetic. The values are those of the processor's call
    (``add_to`` of :class:`~steer.style.NGramStylePrior` and :class:`~steer.priors.GuidedStylePrior`).
    """
    if scores.dtype == torch.float32:
        return proc.add_to(contexts, scores)
    return proc(contexts, scores).to(scores.dtype)
