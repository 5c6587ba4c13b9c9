"""Steer a real pretrained model towards the style of Don Quixote, and compare with the unsteered text.

Run from the repository root (the shared models and corpora lie in ../shared/data):

    python examples/quickstart.py

The model is SmolLM2-135M-Instruct as the GGUF file local-LLM users hold; the first run
de-quantises it once into steer's cache (about 20 s), later runs load it in seconds.
Set STEER_MODEL to steer another model (a local folder, a GGUF file or a hub id).
"""

import os

import torch
from transformers import LogitsProcessorList

import steer

model_path = os.environ.get("STEER_MODEL", "../shared/data/models/smollm2-135m-instruct")
model, tokenizer = steer.load_model(model_path)          # frozen, eval mode, left padding for batches
corpus = steer.load_corpus("don_quixote")                # by name (steer/catalog/manifest.json) or a path

# Count n-grams of orders 1..3 of the corpus in the model's own token space.
table = steer.NGramTable.from_texts(corpus.steer, tokenizer, order=3)
table.save("quixote.safetensors")                        # one safetensors file, bound to this tokenizer
table = steer.NGramTable.load("quixote.safetensors", tokenizer=tokenizer)

# The seed paper's injection: scores + lam * sum_k b_k log p_k(w | h).
prior = steer.NGramStylePrior(table, lam=0.2, tokenizer=tokenizer)
# The variant that steers a real model best in our study: the style table's log-probability minus that of
# ordinary books, added only where the model itself finds a token plausible (p >= 0.1 max p).
books = steer.table_for(steer.load_corpus("background"), tokenizer, order=3)
guided = steer.GuidedStylePrior(table, lam=2.0, background=books, plausibility=0.1, tokenizer=tokenizer)

# Prompts in the model's document format (SmolLM2: after <|endoftext|>, not its chat token <|im_start|>).
inputs = steer.encode_prompts(tokenizer, ["The old man walked into the village and"])
for name, processors in [("unsteered", []), ("steered, lam=0.2", [prior]),
                         ("contrastive+plausible, lam=2", [guided])]:
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=30, do_sample=True, top_p=0.95, top_k=0,
                         logits_processor=LogitsProcessorList(processors), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=steer.stop_ids(tokenizer))
    print(f"[{name}]", tokenizer.decode(out[0], skip_special_tokens=True))
