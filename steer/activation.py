"""Activation steering: a style vector added to the residual stream at chosen layers while the model generates.

The vector of layer l is the mean difference of the residual stream (the output of decoder layer l) between
in-style text and neutral text (ActAdd, Turner et al. 2023; "Style Vectors", Konen et al. 2024). Steering adds
``scale * v_l`` to that output at every position, prompt and generated tokens alike, through forward hooks
that are removed afterwards; the weights are never touched, so every logits processor still applies.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ngram import read_checked, write_atomic
from steer import checks
from steer.cache import cache_root
from steer.model_fingerprint import model_fingerprint
from steer.models import document_start_id

FORMAT = "steer-style-vector"
VERSION = "1"
POSITIONS = ("mean", "last")


def decoder_layers(model) -> nn.ModuleList:
    """The model's decoder layers, in order (the residual stream runs through their outputs).

    Found as the first ``nn.ModuleList`` holding ``config.num_hidden_layers``
    modules (``model.model.layers`` for Llama, ``transformer.h`` for GPT-2).
    """
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise TypeError(f"no list of {n} decoder layers found in {type(model).__name__}; activation steering needs "
                    "a decoder-only transformer whose layers are an nn.ModuleList")


# The depth (as a fraction of the layers) of the one layer steered when none is given: the layer
# chosen on SmolLM2-135M's development prompts (docs/activation_steering.md).
DEFAULT_DEPTH = 0.72


def default_layers(model) -> list[int]:
    """``[round(DEFAULT_DEPTH * (L - 1))]`` for a model of L decoder layers."""
    return [round(DEFAULT_DEPTH * (len(decoder_layers(model)) - 1))]


def _output_tensor(output):
    """A decoder layer's hidden states (layers return a tensor, or a tuple whose first item it is)."""
    return output[0] if isinstance(output, tuple) else output


def _with_output(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def text_chunks(tokenizer, texts: list[str], chunk_tokens: int = 64, max_chunks: int = 128) -> torch.Tensor:
    """Windows of ``chunk_tokens`` tokens cut from the texts, each opened as a document is ([n, 1 + chunk]).

    The texts are tokenised and joined, cut into consecutive windows, and at
    most ``max_chunks`` of them are kept, evenly spaced over the whole text
    (deterministic). Each window gets :func:`steer.models.document_start_id`
    first where the model has one, as the prompts do.
    """
    if not isinstance(chunk_tokens, int) or isinstance(chunk_tokens, bool) or chunk_tokens < 2:
        raise ValueError(f"`chunk_tokens` must be an int >= 2, got {chunk_tokens!r}")
    if not isinstance(max_chunks, int) or isinstance(max_chunks, bool) or max_chunks < 1:
        raise ValueError(f"`max_chunks` must be an int >= 1, got {max_chunks!r}")
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    n = len(ids) // chunk_tokens
    if n == 0:
        raise ValueError(f"the texts hold {len(ids)} tokens, fewer than one chunk of {chunk_tokens}")
    windows = torch.tensor(ids[: n * chunk_tokens]).view(n, chunk_tokens)
    keep = torch.linspace(0, n - 1, min(n, max_chunks)).round().long().unique()
    windows = windows[keep]
    start = document_start_id(tokenizer)
    if start is not None:
        windows = torch.cat([torch.full((len(windows), 1), start), windows], dim=1)
    return windows


@torch.no_grad()
def residual_means(model, chunks: torch.Tensor, position: str = "mean", batch_size: int = 16):
    """Mean residual-stream activation of every decoder layer over ``chunks`` ([n, T] token ids).

    ``position="mean"`` averages over every token of every chunk but the first
    (the document start); ``"last"`` takes each chunk's last token only.

    Returns:
        (means [L, H], norms [L]): the mean activation and the mean Euclidean
        norm of the activations averaged, per layer, in float32.
    """
    if position not in POSITIONS:
        raise ValueError(f"`position` must be one of {POSITIONS}, got {position!r}")
    layers = decoder_layers(model)
    sums, norms, count = None, None, 0
    captured: list[torch.Tensor] = []

    def keep(module, args, output):
        h = _output_tensor(output).float()  # (b, T, H)
        captured.append(h[:, 1:] if position == "mean" else h[:, -1:])

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        device = next(model.parameters()).device
        for i in range(0, len(chunks), batch_size):
            batch = chunks[i: i + batch_size].to(device)
            captured.clear()
            model(input_ids=batch, use_cache=False)
            h = torch.stack(captured).flatten(1, 2)  # (L, b * positions, H)
            s, nrm = h.sum(1), h.norm(dim=-1).sum(1)
            sums, norms = (s, nrm) if sums is None else (sums + s, norms + nrm)
            count += h.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return (sums / count).cpu(), (norms / count).cpu()


@dataclass
class StyleVector:
    """One steering vector per decoder layer: mean(in-style activations) - mean(neutral activations).

    Attributes:
        vectors: [L, H] float32, one row per decoder layer.
        norms: [L] the mean norm of the neutral text's activations at each layer
            (the unit of a normalised vector).
        position: "mean" (averaged over tokens) or "last" (each chunk's last token).
        fingerprint: the model's fingerprint (:func:`steer.model_fingerprint.model_fingerprint`).
        meta: how it was made (chunks, tokens), kept in the file.
    """

    vectors: torch.Tensor
    norms: torch.Tensor
    position: str = "mean"
    fingerprint: str = ""
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_texts(cls, model, tokenizer, style_texts: list[str], neutral_texts: list[str], position: str = "mean",
                   chunk_tokens: int = 64, max_chunks: int = 128, batch_size: int = 16) -> StyleVector:
        """The mean difference of residual activations between in-style and neutral text, at every layer.

        Example:
            >>> vec = StyleVector.from_texts(model, tok, corpus.steer, background.steer)  # doctest: +SKIP
            >>> with ActivationSteering(model, vec, layers=[15], scale=0.5):           # doctest: +SKIP
            ...     out = model.generate(**inputs)
        """
        t0 = time.perf_counter()
        style = text_chunks(tokenizer, style_texts, chunk_tokens, max_chunks)
        neutral = text_chunks(tokenizer, neutral_texts, chunk_tokens, max_chunks)
        s_mean, _ = residual_means(model, style, position, batch_size)
        n_mean, n_norm = residual_means(model, neutral, position, batch_size)
        meta = {"style_chunks": len(style), "neutral_chunks": len(neutral), "chunk_tokens": chunk_tokens,
                "seconds": time.perf_counter() - t0}
        return cls(s_mean - n_mean, n_norm, position, model_fingerprint(model), meta)

    @property
    def num_layers(self) -> int:
        return self.vectors.shape[0]

    def direction(self, layer: int, normalise: bool = True) -> torch.Tensor:
        """Layer ``layer``'s vector [H]: as measured, or (``normalise``) rescaled to the neutral text's mean norm.

        Normalised, ``scale`` = 0.1 adds a vector a tenth as long as a typical
        residual activation at that layer, whatever the layer.
        """
        v = self.vectors[layer]
        if not normalise:
            return v
        return v * (self.norms[layer] / v.norm().clamp_min(1e-12))

    def check_model(self, model, fingerprint: str | None = None) -> None:
        """Refuse a model of another width, depth or fingerprint than the one the vector was measured on.

        ``fingerprint``: the model's, where the caller has it already (hashing the embeddings is the cost).
        """
        layers, width = len(decoder_layers(model)), model.config.hidden_size
        if tuple(self.vectors.shape) != (layers, width):
            raise ValueError(f"the style vector has shape {tuple(self.vectors.shape)}, the model has {layers} "
                             f"layers of width {width}")
        if self.fingerprint and self.fingerprint != (fingerprint or model_fingerprint(model)):
            raise ValueError("the style vector was measured on another model (fingerprint differs); "
                             "measure it again on this model with StyleVector.from_texts")

    def save(self, path) -> None:
        """Write the vector as safetensors, bound to the model's fingerprint."""
        meta = {"format": FORMAT, "format_version": VERSION, "position": self.position,
                "fingerprint": self.fingerprint, "meta": json.dumps(self.meta)}
        write_atomic({"vectors": self.vectors.float().contiguous(), "norms": self.norms.float().contiguous()},
                     path, meta)

    @classmethod
    def load(cls, path, model=None) -> StyleVector:
        """Read a vector saved by :meth:`save`; with ``model``, refuse it unless it was measured on that model."""
        path = os.fspath(path)
        meta, tensors = read_checked(path, "measure one with StyleVector.from_texts and save it")
        if meta.get("format") != FORMAT or meta.get("format_version") != VERSION:
            raise ValueError(f"{path!r} is not a steer style vector (format {meta.get('format')!r})")
        vectors, norms = tensors.get("vectors"), tensors.get("norms")
        if (vectors is None or norms is None or vectors.dim() != 2 or tuple(norms.shape) != (vectors.shape[0],)
                or not torch.isfinite(vectors).all() or not torch.isfinite(norms).all()):
            raise ValueError(f"{path!r} is damaged: it needs finite `vectors` [L, H] and `norms` [L]")
        out = cls(vectors, norms, meta.get("position", "mean"), meta.get("fingerprint", ""),
                  json.loads(meta.get("meta", "{}")))
        if model is not None:
            out.check_model(model)
        return out


def _check_scale(scale) -> float:
    return checks.number("scale", scale)


class ActivationSteering:
    """Adds ``scale * v_l`` to the output of each decoder layer l in ``layers`` while active.

    A context manager: hooks are registered on entry and removed on exit, so
    generation after the block is the unsteered model's, token for token.
    ``scale = 0`` registers nothing (exactly the identity). The addition is out
    of place and covers every position of every row (left padding included,
    which the attention mask hides anyway).

    Args:
        model: the frozen model.
        vector: a :class:`StyleVector` measured on this model, or a [H] tensor
            (one direction added at every layer given).
        layers: decoder-layer indices (0-based; negative ones count from the end).
        scale: the multiplier (finite; negative steers away from the style).
        normalise: use :meth:`StyleVector.direction` normalised (ignored for a tensor).

    Example:
        >>> with ActivationSteering(model, vec, layers=[15], scale=0.5):  # doctest: +SKIP
        ...     out = model.generate(**inputs, logits_processor=[prior])
    """

    def __init__(self, model, vector, layers, scale: float, normalise: bool = True):
        self.model = model
        self.layers = decoder_layers(model)
        n, width = len(self.layers), model.config.hidden_size
        if isinstance(layers, int) or not layers:
            raise ValueError(f"`layers` must be a non-empty list of layer indices, got {layers!r}")
        picked = []
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
                raise ValueError(f"`layers` must hold ints in [-{n}, {n}) for this {n}-layer model, got {layer!r}")
            picked.append(layer % n)
        if len(set(picked)) != len(picked):
            raise ValueError(f"`layers` names a layer twice: {layers!r}")
        if not isinstance(normalise, bool):
            raise ValueError(f"`normalise` must be True or False, got {normalise!r}")
        self.scale = _check_scale(scale)
        if isinstance(vector, StyleVector):
            vector.check_model(model)
            directions = {i: vector.direction(i, normalise) for i in picked}
        elif isinstance(vector, torch.Tensor):
            if tuple(vector.shape) != (width,):
                raise ValueError(f"`vector` must have shape ({width},) for this model, got {tuple(vector.shape)}")
            directions = {i: vector for i in picked}
        else:
            raise TypeError(f"`vector` must be a StyleVector or a tensor, got {type(vector).__name__}")
        if not all(torch.isfinite(d).all() for d in directions.values()):
            raise ValueError("`vector` holds non-finite values")
        param = next(model.parameters())
        # Scaled once here, in the model's dtype and device, so a step adds one prepared tensor per layer.
        self.deltas = {i: (self.scale * d.float()).to(param.device, param.dtype) for i, d in directions.items()}
        self._handles: list = []

    def _hook(self, delta: torch.Tensor):
        def add(module, args, output):
            return _with_output(output, _output_tensor(output) + delta)  # (B, T, H) + (H,)

        return add

    def __enter__(self) -> ActivationSteering:
        if self._handles:
            raise RuntimeError("this ActivationSteering is already active")
        if self.scale != 0.0:
            self._handles = [self.layers[i].register_forward_hook(self._hook(d)) for i, d in self.deltas.items()]
        return self

    def remove(self) -> None:
        """Remove the hooks (what leaving the ``with`` block does)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __exit__(self, *exc) -> None:
        self.remove()


def vector_for(model, tokenizer, corpus, background, position: str = "mean", chunk_tokens: int = 64,
               max_chunks: int = 128, cache_dir=None) -> StyleVector:
    """The style vector of ``corpus``'s steer split against ``background``'s (both steer.corpora.Corpus),
    measured once and cached as safetensors under ``$STEER_CACHE_DIR/vectors``.

    The cache key is the model's fingerprint, both steer splits' hashes and the
    measuring settings; a damaged cache file is measured again.
    """
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "vectors"
    fp = model_fingerprint(model)
    key = f"{fp.split(':')[1][:16]}-{corpus.steer_digest[:16]}-{background.steer_digest[:16]}"
    path = cache / f"{key}-{position}-c{chunk_tokens}-m{max_chunks}.safetensors"
    if path.exists():
        try:
            vector = StyleVector.load(path)
            vector.check_model(model, fp)
            return vector
        except ValueError:
            path.unlink()
    vector = StyleVector.from_texts(model, tokenizer, corpus.steer, background.steer, position=position,
                                    chunk_tokens=chunk_tokens, max_chunks=max_chunks)
    cache.mkdir(parents=True, exist_ok=True)
    vector.save(path)
    return vector
