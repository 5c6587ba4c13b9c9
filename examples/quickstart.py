"""Steer a small pretrained model towards the style of Don Quixote, and compare with the unsteered text.

Run from the repository root (the shared models and corpora lie in ../shared/data):

    python examples/quickstart.py

Set STEER_MODEL to steer another model (a local folder or a hub id).
"""

import os

from transformers import LogitsProcessorList

import steer

model_path = os.environ.get("STEER_MODEL", "../shared/data/models/base-llama2tok")
model, tokenizer = steer.load_model(model_path)          # frozen, eval mode, left padding for batches
corpus = steer.load_corpus("don_quixote")                # by name (corpora/manifest.json) or a path

# Count n-grams of orders 1..3 of the corpus in the model's own token space.
table = steer.NGramTable.from_texts(corpus.train, tokenizer, order=3)
table.save("quixote.safetensors")                        # one safetensors file, bound to this tokenizer
table = steer.NGramTable.load("quixote.safetensors", tokenizer=tokenizer)

# The seed paper's injection: scores + lam * sum_k b_k log p_k(w | h).
prior = steer.NGramStylePrior(table, lam=0.2, tokenizer=tokenizer)

inputs = tokenizer(["The old man walked into the village and"], return_tensors="pt")
for name, processors in [("unsteered", []), ("steered, lam=0.2", [prior])]:
    out = model.generate(**inputs, max_new_tokens=30, do_sample=False,
                         logits_processor=LogitsProcessorList(processors), pad_token_id=tokenizer.pad_token_id)
    print(f"[{name}]", tokenizer.decode(out[0], skip_special_tokens=True))
