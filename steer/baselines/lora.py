"""LoRA adapters trained on a style corpus with PEFT (the optional extra ``steer[lora]``)."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from steer.fingerprint import model_fingerprint

META_FILE = "steer_lora.json"


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError("LoRA baselines need PEFT: pip install 'steer[lora]'") from None
    return peft


@dataclass
class LoraTrainConfig:
    """How an adapter is trained (written to the adapter's metadata).

    Attributes:
        rank, alpha, dropout: LoRA's r, lora_alpha and lora_dropout.
        target_modules: module names to adapt; None lets PEFT choose for known
            architectures (q_proj/v_proj for Llama, c_attn for GPT-2).
        steps, lr, batch_size: AdamW steps, learning rate, windows per step.
        window: tokens per training window (BOS + window-1 corpus tokens).
        seed: seeds window sampling and initialisation.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 8
    window: int = 128
    seed: int = 0

    def __post_init__(self):
        for name in ("rank", "steps", "batch_size", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {v!r}")
        if self.window < 2:
            raise ValueError(f"`window` must be >= 2, got {self.window}")
        for name in ("alpha", "lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"`{name}` must be a finite number > 0, got {v!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must lie in [0, 1), got {self.dropout}")


@dataclass
class LoraResult:
    """What training produced: the adapted model, its folder and the metadata written there."""

    model: object
    path: Path
    meta: dict = field(default_factory=dict)


def corpus_windows(tokenizer, docs: list[str], window: int) -> torch.Tensor:
    """Non-overlapping training windows: BOS + (window - 1) tokens of the concatenated corpus.

    Documents are joined with EOS so that the model sees where one ends.

    Returns:
        LongTensor [n_windows, window].
    """
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for enc in tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(enc)
        if eos is not None:
            ids.append(eos)
    body = window - 1
    n = len(ids) // body
    if n == 0:
        raise ValueError(
            f"corpus too small for one window: {len(ids)} tokens, a window needs {body}; "
            "use a larger corpus or a smaller `window`"
        )
    rows = torch.tensor(ids[: n * body]).reshape(n, body)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    return torch.cat([torch.full((n, 1), bos), rows], dim=1)


def train_lora(model, tokenizer, docs: list[str], config: LoraTrainConfig, out_dir,
               corpus_name: str = "", model_name: str = "",
               progress: Callable[[int, float], None] | None = None, copy_model: bool = True) -> LoraResult:
    """Train a LoRA adapter with the causal-LM loss on corpus windows and save it.

    Writes a standard PEFT adapter folder plus ``steer_lora.json`` (corpus, base
    model and its fingerprint, steps, loss curve, wall time, config).

    Args:
        model: the frozen base model; it is deep-copied first unless
            ``copy_model=False`` (PEFT injects layers into the model it wraps).
        progress: called as progress(step, loss) after every step.
    """
    peft = _peft()
    windows = corpus_windows(tokenizer, docs, config.window)
    fingerprint = model_fingerprint(model)
    base = copy.deepcopy(model) if copy_model else model
    torch.manual_seed(config.seed)
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=config.target_modules, task_type="CAUSAL_LM")
    pmodel = peft.get_peft_model(base, lora)
    pmodel.train()
    params = [p for p in pmodel.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    device = next(pmodel.parameters()).device
    losses = []
    t0 = time.perf_counter()
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, windows.shape[0], (config.batch_size,), generator=gen)
        batch = windows[idx].to(device)
        loss = pmodel(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    wall = time.perf_counter() - t0
    pmodel.eval()
    out = Path(out_dir)
    pmodel.save_pretrained(out)
    meta = {
        "corpus": corpus_name, "base_model": model_name, "base_fingerprint": fingerprint,
        "steps": config.steps, "loss_curve": losses, "wall_seconds": wall,
        "trainable_params": sum(p.numel() for p in params), "n_windows": int(windows.shape[0]),
        "config": asdict(config),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return LoraResult(model=pmodel, path=out, meta=meta)


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
