#!/usr/bin/env bash
# vLLM's Model Runner V2 with steer's processor, on a GPU: the engine tests, then the throughput.
#
# Model Runner V2 needs Triton, so vLLM's CPU build never runs it; on a GPU, vLLM 0.32 picks it by
# default. Run from the repository root on a machine with a CUDA build of vLLM 0.32 installed beside
# steer (`pip install vllm==0.32.0 -e ".[dev,gguf]"`) and ../shared/data beside the checkout. The
# engine tests then run on MRV2 (STEER_VLLM_RUNNER=v2 makes the first of them check that they do),
# and the benchmark's lines carry "runner": "v2". Output goes to $OUT (or the current folder).
set -uo pipefail
out="${OUT:-.}"
if ! python -c "import torch, vllm; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "needs a CUDA GPU and a CUDA build of vLLM 0.32 (this machine has neither or not both)" | tee "$out/vllm_mrv2.log"
  exit 2
fi
nvidia-smi -L | tee "$out/vllm_mrv2.log"
STEER_VLLM_RUNNER=v2 python -m pytest -m vllm tests/serving -x -q 2>&1 | tee -a "$out/vllm_mrv2.log"
python benchmarks/vllm_overhead.py --batches 16,64 --repeats 5 2>&1 | tee -a "$out/vllm_mrv2.log"
