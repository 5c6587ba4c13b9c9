"""What vLLM's Model Runner V2 does around a logits processor, by hand, for the adapter tests.

MRV2 needs Triton, which vLLM's CPU build lacks, so its engine cannot start here. :class:`Runner`
takes the runner's place: it builds MRV2's own ``RequestState`` (its buffers on the host: the CPU
build reports pinned-memory UVA that it cannot allocate), adds, recycles and reorders request slots
as the runner does, writes committed tokens where the runner's post-sampling kernel writes them,
and hands the processor the ``LogitsContext`` the sampler builds, with or without draft rows.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")  # collected for doctests in every environment

import vllm.v1.worker.gpu.buffer_utils as buffers  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, build_custom_logits_processors  # noqa: E402
from vllm.v1.worker.gpu.states import RequestState  # noqa: E402

PROCESSOR = "steer.serving.vllm:SteerLogitsProcessor"


class Runner:
    """A few requests' slots, committed tokens and sampler calls, as MRV2 keeps and makes them."""

    def __init__(self, config, width: int, drafts: int = 0, slots: int = 6):
        with mock.patch.object(buffers, "is_uva_available", lambda: False):
            self.states = RequestState(slots, 128, 128, drafts, width, torch.device("cpu"),
                                       use_dense_all_token_ids=True)
        (self.proc,) = build_custom_logits_processors(config, self.states, False, [PROCESSOR])
        self.width = width
        self.tokens: dict[str, list[int]] = {}
        self.params: dict[str, dict | None] = {}

    def add(self, req_id: str, prompt: list[int], steer: dict | None) -> bool:
        """Admit a request (its prompt committed); whether the processor steers it."""
        self.states.add_request(req_id, len(prompt), prompt, 0, 64)
        for staged in (self.states.all_token_ids, self.states.total_len, self.states.num_computed_tokens):
            staged.clear_staged_writes()  # written below, as the runner's kernel would
        self.tokens[req_id], self.params[req_id] = [], steer
        self.commit(req_id, prompt)
        extra = {"steer": steer} if steer is not None else None
        return self.proc.add_request(self.states.req_id_to_index[req_id], vllm.SamplingParams(extra_args=extra))

    def remove(self, req_id: str) -> None:
        self.states.remove_request(req_id)
        del self.tokens[req_id], self.params[req_id]

    def commit(self, req_id: str, new: list[int]) -> None:
        """The tokens the runner's post-sampling kernel appends to ``all_token_ids`` and ``total_len``."""
        slot = self.states.req_id_to_index[req_id]
        seq = self.tokens[req_id] + list(new)
        self.tokens[req_id] = seq
        self.states.all_token_ids.gpu[slot, :len(seq)] = torch.tensor(seq, dtype=torch.int32)
        self.states.total_len.gpu[slot] = len(seq)

    def step(self, order: list[str], drafts: dict[str, list[int]] | None = None, logits: torch.Tensor | None = None,
             seed: int = 0):
        """(logits before, logits after, (request, tokens seen) per row): one sampler call for ``order``."""
        drafts = drafts or {}
        slots = [self.states.req_id_to_index[r] for r in order]
        mapping, local, inputs, seen = [], [], [], []
        for r, slot in zip(order, slots, strict=True):
            seq, d = self.tokens[r], drafts.get(r, [])
            for p in range(len(d) + 1):  # local position 0 is the last committed token, then the drafts
                mapping.append(slot)
                local.append(p)
                inputs.append(seq[-1] if p == 0 else d[p - 1])
                seen.append((r, seq + d[:p]))
        ctx = LogitsContext(
            expanded_idx_mapping=torch.tensor(mapping, dtype=torch.int32),
            idx_mapping=torch.tensor(slots, dtype=torch.int32),
            idx_mapping_np=np.array(slots, dtype=np.int32),
            expanded_local_pos=torch.tensor(local, dtype=torch.int32),
            input_ids=torch.tensor(inputs, dtype=torch.int32),
            pos=torch.tensor([len(s) - 1 for _, s in seen], dtype=torch.int64),
            seq_lens_upper_bound_np=np.array([len(self.tokens[r]) + len(drafts.get(r, [])) for r in order]))
        if logits is None:
            logits = torch.randn(len(mapping), self.width, generator=torch.Generator().manual_seed(seed))
        self.proc.apply_staged_writes()
        return logits.clone(), self.proc.apply(logits.clone(), ctx), seen
