"""Adapters of steer's priors to serving engines (``steer.serving.vllm``: a vLLM v1 logits processor)."""
