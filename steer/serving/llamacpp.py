"""steer's n-gram priors in llama.cpp, through llama-cpp-python's ``logits_processor``.

A :class:`SteerLlamaProcessor` is built from a steering spec (:class:`steer.spec.SteeringSpec`, the
JSON of ``steer generate --spec``) and a ``llama_cpp.Llama``; llama-cpp-python calls it once per
token with the sequence so far and the next token's logits::

    from llama_cpp import Llama, LogitsProcessorList
    from steer.serving.llamacpp import SteerLlamaProcessor

    llm = Llama("SmolLM2-135M-Instruct.Q4_1.gguf")
    steering = SteerLlamaProcessor.from_spec(
        {"method": "contrastive+plausible", "knob": 2, "corpus": "don_quixote", "background": "background"}, llm)
    llm.create_completion("The old man", max_tokens=40, temperature=0, logits_processor=LogitsProcessorList([steering]))

The methods a logits processor of the tables alone can apply are served (the registry's
``servable`` ones: the paper's prior and the n-gram variants); activation steering, HSO, prompting
and LoRA are refused by name, before anything is built. The corpus and background may be a named
corpus, a text file or a saved table (``.safetensors``), or a name in ``tables`` (the
``STEER_VLLM_TABLES`` mapping, so one request object steers vLLM and llama.cpp alike). The tables
live in the token space of the transformers tokenizer read from the same GGUF; a tokenizer that
splits text differently from the Llama's own is refused. The spec's decoding options are not
applied here: llama.cpp's sampling arguments (``temperature``, ``top_p``, ...) are.

Each call computes what the transformers processor computes for the same context: the same object is
called on the sequence's last N-1 tokens (the whole sequence where the guided option ``fresh`` needs
it). llama.cpp's logits differ slightly from transformers' (quantised weights), so the bonus is the
same for the same row, not the steered logits. The row is steered with numpy alone where the method
allows it (the processors' ``add_to_row``: the prior, and the plausible variants at a constant
strength): the same bonus from the same tables (:mod:`ngram.host`) without the fixed cost of a
batched step's torch ops, which right after a llama.cpp forward pass is most of a call. numpy
adds ``lam * b`` where torch fuses the multiply-add, so a steered logit may differ from the
transformers processor's by a rounding.

This module imports neither llama_cpp nor vLLM: the processor is a callable on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from steer.methods import servable_method
from steer.spec import SteeringSpec

# Texts both tokenizers must split alike before a table of one steers the other's logits.
PROBES = ("The old man walked to the sea, and said: \"It's 1,605 leagues!\"", "  naïve café\nsecond line\t(tab)")


def read_spec(spec) -> SteeringSpec:
    """A :class:`SteeringSpec` from a spec, its dict, or the path of its JSON file, checked for serving."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"spec file {str(spec)!r} not found")
        spec = SteeringSpec.load(path)
    elif isinstance(spec, Mapping):
        servable_method(spec.get("method"))  # refused by name before the options are read
        spec = SteeringSpec.from_dict(dict(spec))
    elif not isinstance(spec, SteeringSpec):
        raise TypeError(f"`spec` must be a SteeringSpec, a dict or a JSON file path, got {type(spec).__name__}")
    servable_method(spec.method)
    return spec


def gguf_tokenizer(model_path):
    """The transformers tokenizer stored in a GGUF file (no weights are read)."""
    from transformers import AutoTokenizer

    path = Path(model_path)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def check_same_tokens(llama, tokenizer) -> None:
    """Refuse a tokenizer that splits text differently from ``llama``'s own (a table of it would steer other tokens)."""
    for text in PROBES:
        theirs = list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        ours = tokenizer(text, add_special_tokens=False)["input_ids"]
        if theirs != ours:
            raise ValueError(f"the tokenizer does not match the Llama model's: {text!r} is {ours[:8]}... here and "
                             f"{theirs[:8]}... in llama.cpp; build the tables with the model's own tokenizer")


class SteerLlamaProcessor:
    """A llama-cpp-python logits processor applying one steering spec's n-gram processor to a sequence.

    Build it with :meth:`from_spec`. Called as ``processor(input_ids, scores)`` with the sequence's
    token ids and the next token's logits (numpy, one sequence; ``scores`` may be a strided view, as
    llama-cpp-python's sampler hands it); steers ``scores`` in place and returns it (llama-cpp-python
    writes what a processor returns back into the same row: a no-op for the row itself).

    Args:
        processor: a steer logits processor (``NGramStylePrior`` or ``GuidedStylePrior``).
        context: tokens of context it reads (N-1 of its highest-order table), or None for the whole
            sequence (the guided option ``fresh`` looks back further).
        spec: the spec it was built from (kept for reference).
        threads: torch threads for a call that runs torch ops (the caller's setting is restored
            after it); None leaves torch's setting. One row is too small to share: waking torch's
            worker threads between llama.cpp's forward passes cost more than it saved
            (``docs/serving.md``). A row steered with numpy alone is left as it is.
    """

    def __init__(self, processor, context: int | None, spec: SteeringSpec | None = None, threads: int | None = 1):
        if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
            raise ValueError(f"`context` must be an int >= 1 or None, got {context!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"`threads` must be an int >= 1 or None, got {threads!r}")
        self.processor, self.context, self.spec, self.threads = processor, context, spec, threads
        self._numpy_only = processor.rows_on_host  # no torch op per call: nothing to thread

    @classmethod
    def from_spec(cls, spec, llama=None, tokenizer=None, tables: Mapping[str, str] | None = None, workshop=None,
                  threads: int | None = 1):
        """The processor of ``spec`` (a SteeringSpec, its dict or a JSON file) for ``llama``.

        Args:
            llama: the ``llama_cpp.Llama`` it will steer: its tokenizer is checked against
                ``tokenizer`` and its vocabulary against the tables. Optional when ``tokenizer`` is given.
            tokenizer: the transformers tokenizer of the model; default, the one in ``llama``'s GGUF.
            tables: name -> saved table path; a spec's corpus or background that is a key here is that table.
            workshop: a :class:`steer.spec.Workshop` to share tables between several specs.
            threads: torch threads for each call (see the class).
        """
        spec = read_spec(spec)
        if tables is not None:
            if not isinstance(tables, Mapping):
                raise TypeError(f"`tables` must be a mapping name -> path, got {type(tables).__name__}")
            spec = _with_tables(spec, tables)
        if tokenizer is None:
            if llama is None:
                raise ValueError("give `llama` (the Llama model) or `tokenizer`")
            tokenizer = gguf_tokenizer(llama.model_path)
        if llama is not None:
            check_same_tokens(llama, tokenizer)
        if workshop is None:
            from steer.spec import Workshop

            workshop = Workshop(None, tokenizer)
        steering = spec.build(None, tokenizer, workshop)
        (processor,) = steering.processors
        vocab = steering.table().vocab_size
        if llama is not None and vocab > llama.n_vocab():
            raise ValueError(f"the table has {vocab} tokens, the Llama model's logits only {llama.n_vocab()}")
        guided = spec.options.get("guided")
        context = None if guided is not None and guided.fresh is not None else _context_of(processor)
        return cls(processor, context, spec, threads)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids)
        if self.context is not None:
            ids = ids[-self.context:]
        if self.threads is None or self._numpy_only:
            return self.processor.add_to_row(ids, scores)
        caller = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.processor.add_to_row(ids, scores)
        finally:
            torch.set_num_threads(caller)


def _with_tables(spec: SteeringSpec, tables: Mapping[str, str]) -> SteeringSpec:
    """``spec`` with a corpus or background that names an entry of ``tables`` replaced by that table's path."""
    data = spec.to_dict()
    for key in ("corpus", "background"):
        name = data.get(key)
        if name in tables:
            data[key] = str(tables[name])
    return SteeringSpec.from_dict(data)


def _context_of(processor) -> int:
    """N-1 of the highest-order table a steer processor reads."""
    tables = [getattr(processor, name, None) for name in ("table", "background")]
    return max(t.order - 1 for t in tables if t is not None)

