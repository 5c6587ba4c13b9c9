"""A base model's fingerprint, to bind trained artefacts (adapters, heads) to the model they fit."""

from __future__ import annotations

import hashlib
import json


def model_fingerprint(model) -> str:
    """sha256 over the model's architecture config and its input-embedding weights.

    Two checkpoints of one architecture differ in their embeddings, so an
    artefact trained on one is refused on the other.
    """
    cfg = model.config.to_dict()
    keep = {k: v for k, v in cfg.items() if k not in ("_name_or_path", "transformers_version", "dtype",
                                                      "torch_dtype", "architectures", "use_cache")}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    emb = model.get_input_embeddings().weight.detach().float().cpu().contiguous()
    h.update(emb.numpy().tobytes())
    return "sha256:" + h.hexdigest()
