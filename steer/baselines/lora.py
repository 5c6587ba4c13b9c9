"""LoRA adapters trained on a style corpus with PEFT (the optional extra ``steer[lora]``)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from steer import checks
from steer.cache import cache_root
from steer.model_fingerprint import model_fingerprint
from steer.options import Options, option

META_FILE = "steer_lora.json"


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError("LoRA baselines need PEFT: pip install 'steer[lora]'") from None
    return peft


@dataclass(frozen=True)
class LoraTrainConfig(Options):
    """How an adapter is trained (written to the adapter's metadata): the ``lora`` option family.

    Training stops early once the loss on a held-out slice of the corpus's windows (the last
    ``eval_fraction`` of them, never trained on) has not improved for ``patience`` evaluations in a
    row; the best adapter is kept.
    """

    family: ClassVar[str] = "lora"
    rank: int = option(8, "LoRA rank r")
    alpha: float = option(16.0, "LoRA scaling alpha")
    dropout: float = option(0.0, "LoRA dropout")
    target_modules: tuple[str, ...] | None = option(
        None, "module names to adapt (none: PEFT's choice for known architectures, q_proj/v_proj for Llama)")
    steps: int = option(1000, "step budget (AdamW steps; stops earlier when the held-out loss stalls)")
    lr: float = option(1e-3, "learning rate")
    batch_size: int = option(8, "training windows per step")
    window: int = option(128, "tokens per training window (BOS + window-1 corpus tokens)")
    seed: int = option(0, "seed of window sampling and initialisation")
    eval_every: int = option(50, "steps between evaluations of the held-out loss (0: no held-out slice, train "
                                 "the whole budget)")
    patience: int = option(3, "evaluations without improvement before training stops")
    eval_fraction: float = option(0.05, "share of the windows held out for that loss")

    def __post_init__(self):
        for name in ("rank", "steps", "batch_size"):
            checks.integer(name, getattr(self, name), low=1)
        checks.integer("window", self.window, low=2)
        checks.integer("seed", self.seed)
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", checks.texts("target_modules", self.target_modules))
        for name in ("alpha", "lr"):
            object.__setattr__(self, name, checks.number(name, getattr(self, name), 0, low_open=True))
        object.__setattr__(self, "dropout", checks.number("dropout", self.dropout, 0, 1, high_open=True))
        for name in ("eval_every", "patience"):
            checks.integer(name, getattr(self, name), low=0)
        object.__setattr__(self, "eval_fraction",
                           checks.number("eval_fraction", self.eval_fraction, 0, 0.5, low_open=True, high_open=True))

    def key(self) -> str:
        """A short hash of the settings (adapters are cached under it)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class LoraResult:
    """What training produced: the adapted model, its folder and the metadata written there."""

    model: object
    path: Path
    meta: dict = field(default_factory=dict)


def corpus_windows(tokenizer, docs: list[str], window: int) -> torch.Tensor:
    """Non-overlapping training windows: the document start + (window - 1) tokens of the concatenated corpus.

    Documents are joined with the pretraining document separator (``<|endoftext|>``
    where the vocabulary has one, else EOS), so that the model sees where one
    ends; every window opens as a document does (:func:`steer.models.document_start_id`).

    Returns:
        LongTensor [n_windows, window].
    """
    from steer.models import document_separator_id, document_start_id

    ids: list[int] = []
    sep = document_separator_id(tokenizer)
    sep = tokenizer.eos_token_id if sep is None else sep
    for enc in tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(enc)
        if sep is not None:
            ids.append(sep)
    body = window - 1
    n = len(ids) // body
    if n == 0:
        raise ValueError(
            f"corpus too small for one window: {len(ids)} tokens, a window needs {body}; "
            "use a larger corpus or a smaller `window`"
        )
    rows = torch.tensor(ids[: n * body]).reshape(n, body)
    start = document_start_id(tokenizer)
    start = sep if start is None else start
    return torch.cat([torch.full((n, 1), start), rows], dim=1)


@torch.no_grad()
def _eval_loss(model, windows: torch.Tensor, batch_size: int, device) -> float:
    total = 0.0
    for b0 in range(0, windows.shape[0], batch_size):
        batch = windows[b0 : b0 + batch_size].to(device)
        total += float(model(input_ids=batch, labels=batch).loss) * batch.shape[0]
    return total / windows.shape[0]


def train_lora(model, tokenizer, docs: list[str], config: LoraTrainConfig, out_dir,
               corpus_name: str = "", model_name: str = "",
               progress: Callable[[int, float], None] | None = None, copy_model: bool = True) -> LoraResult:
    """Train a LoRA adapter with the causal-LM loss on corpus windows and save it.

    With ``config.eval_every > 0`` the last ``eval_fraction`` of the windows is
    held out; its loss is measured every ``eval_every`` steps and training
    stops when it has not improved ``patience`` times in a row (or when the
    step budget ends), keeping the adapter of the best evaluation. The
    metadata says which ended it (``stopped_by``: "early_stopping" or
    "step_budget").

    Writes a standard PEFT adapter folder plus ``steer_lora.json`` (corpus, base
    model and its fingerprint, steps, loss curves, wall time, config).

    Args:
        model: the frozen base model; it is deep-copied first unless
            ``copy_model=False`` (PEFT injects layers into the model it wraps).
        progress: called as progress(step, loss) after every step.
    """
    peft = _peft()
    windows = corpus_windows(tokenizer, docs, config.window)
    n_eval = int(round(config.eval_fraction * windows.shape[0])) if config.eval_every else 0
    if config.eval_every and (n_eval < 1 or windows.shape[0] - n_eval < 1):
        raise ValueError(f"corpus too small for a held-out slice: {windows.shape[0]} windows of {config.window} "
                         "tokens; use a larger corpus, a smaller `window`, or eval_every=0")
    train_w, eval_w = windows[: windows.shape[0] - n_eval], windows[windows.shape[0] - n_eval :]
    fingerprint = model_fingerprint(model)
    base = copy.deepcopy(model) if copy_model else model
    torch.manual_seed(config.seed)
    modules = None if config.target_modules is None else list(config.target_modules)
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=modules, task_type="CAUSAL_LM")
    pmodel = peft.get_peft_model(base, lora)
    pmodel.train()
    params = [p for p in pmodel.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    device = next(pmodel.parameters()).device
    losses, evals = [], []
    best, best_state, since_best, stopped_by = math.inf, None, 0, "step_budget"
    t0 = time.perf_counter()
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, train_w.shape[0], (config.batch_size,), generator=gen)
        batch = train_w[idx].to(device)
        loss = pmodel(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
        if n_eval and (step % config.eval_every == 0 or step == config.steps):
            pmodel.eval()
            value = _eval_loss(pmodel, eval_w, config.batch_size, device)
            pmodel.train()
            evals.append([step, value])
            if value < best:
                best, since_best = value, 0
                best_state = {n: p.detach().clone() for n, p in pmodel.named_parameters() if p.requires_grad}
            else:
                since_best += 1
                if since_best >= config.patience:
                    stopped_by = "early_stopping"
                    break
    wall = time.perf_counter() - t0
    if best_state is not None:  # keep the adapter of the best held-out loss
        with torch.no_grad():
            for n, p in pmodel.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    pmodel.eval()
    out = Path(out_dir)
    pmodel.save_pretrained(out)
    meta = {
        "corpus": corpus_name, "base_model": model_name, "base_fingerprint": fingerprint,
        "steps": len(losses), "step_budget": config.steps, "stopped_by": stopped_by,
        "best_step": min(evals, key=lambda e: e[1])[0] if evals else len(losses),
        "loss_curve": losses, "eval_curve": evals, "wall_seconds": wall,
        "trainable_params": sum(p.numel() for p in params), "n_windows": int(train_w.shape[0]),
        "n_eval_windows": n_eval, "config": asdict(config),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return LoraResult(model=pmodel, path=out, meta=meta)


def adapter_cache_dir() -> Path:
    """``$STEER_CACHE_DIR/adapters`` or ``~/.cache/steer/adapters``."""
    return cache_root() / "adapters"


def cached_lora(model, tokenizer, docs: list[str], config: LoraTrainConfig, corpus_name: str = "",
                model_name: str = "", progress: Callable[[int, float], None] | None = None, cache_dir=None):
    """The adapter for (base model, documents, settings): loaded from the cache, else trained and cached.

    The cache key is the base model's fingerprint, a hash of the documents and
    ``config.key()``, so every study that asks for the same adapter reuses it.

    Returns:
        (peft_model, meta, path).
    """
    from steer.corpora import docs_digest

    key = f"{model_fingerprint(model).split(':')[1][:12]}-{docs_digest(docs)[:12]}-{config.key()}"
    path = Path(cache_dir) if cache_dir is not None else adapter_cache_dir()
    path = path / key
    if (path / META_FILE).exists():
        pmodel, meta = load_lora(model, path)
        return pmodel, meta, path
    tmp = path.with_name(path.name + ".part")
    res = train_lora(model, tokenizer, docs, config, tmp, corpus_name=corpus_name, model_name=model_name,
                     progress=progress)
    if path.exists():  # pragma: no cover - another process finished the same adapter first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        pmodel, meta = load_lora(model, path)
        return pmodel, meta, path
    tmp.replace(path)
    return res.model, res.meta, path


def load_lora(model, adapter_dir, copy_model: bool = True):
    """The base model with a saved adapter applied, refusing an adapter trained for another model.

    Returns:
        (peft_model, meta).
    """
    peft = _peft()
    path = Path(adapter_dir)
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{str(path)!r} is not a steer LoRA adapter (no {META_FILE})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("base_fingerprint") != model_fingerprint(model):
        raise ValueError(
            f"adapter {str(path)!r} was trained for another base model ({meta.get('base_model')!r}); "
            "train one for this model with `steer train-lora`"
        )
    base = copy.deepcopy(model) if copy_model else model
    pmodel = peft.PeftModel.from_pretrained(base, path)
    return pmodel.eval(), meta


def adapter_bytes(peft_model) -> int:
    """Bytes of the adapter's own weights (the extra memory LoRA needs at inference)."""
    return sum(p.numel() * p.element_size() for n, p in peft_model.named_parameters() if "lora_" in n)
