"""The prefix attribute model: P(final output not degenerate | prompt, prefix, next token).

A small head on the frozen model's own last hidden state h_t (the state that
predicts token t+1) and the candidate token's input embedding e(w):

    logit(h, w) = v . relu(W_h h + W_e e(w) + b) + c

W_h h is computed once per row and W_e e(w) once per candidate, so scoring m
candidates of B rows costs one [B, m, H] add: no extra forward pass of the LM.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from ngram import read_checked, write_atomic
from steer.model_fingerprint import model_fingerprint

FORMAT = "steer-prefix-head"
VERSION = "1"


class PrefixHead(nn.Module):
    """One-hidden-layer MLP over [last hidden state; candidate token embedding].

    Args:
        d_model: the LM's hidden size.
        d_emb: its input-embedding size.
        hidden: width of the head's hidden layer.
    """

    def __init__(self, d_model: int, d_emb: int, hidden: int = 64):
        super().__init__()
        for name, v in (("d_model", d_model), ("d_emb", d_emb), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {v!r}")
        self.w_h = nn.Linear(d_model, hidden)
        self.w_e = nn.Linear(d_emb, hidden, bias=False)
        self.out = nn.Linear(hidden, 1)
        self.meta: dict = {}

    def logits(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Logit of "not degenerate" for each row's candidates.

        Args:
            h: float [B, d_model], the last hidden state of each row.
            emb: float [B, m, d_emb], the candidates' input embeddings.

        Returns:
            float32 [B, m].
        """
        return self.logits_from_features(h, self.token_features(emb))

    def token_features(self, emb: torch.Tensor) -> torch.Tensor:
        """W_e e(w) of embeddings [..., d_emb] -> float32 [..., hidden].

        Linear with no bias, so a decoder can compute it once for the whole
        vocabulary and gather candidates' rows instead of projecting them.
        """
        return self.w_e(emb.float())

    def logits_from_features(self, h: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """:meth:`logits` from the candidates' :meth:`token_features` [B, m, hidden]."""
        a = self.w_h(h.float())[:, None, :] + features  # (B, m, hidden)
        return self.out(torch.relu(a))[..., 0]

    def log_prob_ok(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """log P(not degenerate | h, w), float32 [B, m] (log-sigmoid of :meth:`logits`)."""
        return nn.functional.logsigmoid(self.logits(h, emb))

    # ------------------------------------------------------------ files
    def save(self, path, model, extra: dict | None = None) -> None:
        """Write the head as safetensors, bound to ``model`` (fingerprint and vocab size)."""
        meta = {
            "format": FORMAT, "format_version": VERSION,
            "d_model": str(self.w_h.in_features), "d_emb": str(self.w_e.in_features),
            "hidden": str(self.w_h.out_features),
            "base_fingerprint": model_fingerprint(model),
            "vocab_size": str(model.get_input_embeddings().weight.shape[0]),
            "extra": json.dumps(extra or {}),
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_atomic(tensors, path, meta)

    @classmethod
    def load(cls, path, model) -> PrefixHead:
        """Read a head saved by :meth:`save`, refusing one built for another model or vocabulary."""
        path = os.fspath(path)
        meta, tensors = read_checked(path, "train one with `steer train-attr`")
        if meta.get("format") != FORMAT or meta.get("format_version") != VERSION:
            raise ValueError(f"{path!r} is not a steer attribute model (format {meta.get('format')!r})")
        vocab = model.get_input_embeddings().weight.shape[0]
        if int(meta["vocab_size"]) != vocab:
            raise ValueError(f"attribute model {path!r} was built for vocab size {meta['vocab_size']}, "
                             f"this model has {vocab}; retrain it with `steer train-attr`")
        if meta["base_fingerprint"] != model_fingerprint(model):
            raise ValueError(f"attribute model {path!r} was trained on another base model; "
                             "retrain it for this model with `steer train-attr`")
        head = cls(int(meta["d_model"]), int(meta["d_emb"]), int(meta["hidden"]))
        head.load_state_dict(tensors)
        head.meta = json.loads(meta.get("extra", "{}"))
        return head.eval().requires_grad_(False)
