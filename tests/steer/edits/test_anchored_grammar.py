"""AnchoredGrammar: every gold answer is allowed, every decoded answer places, beams and bans are handled."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from steer.edits.anchored import format_anchored, parse_anchored
from steer.edits.anchored_grammar import AnchoredGrammar
from steer.edits.data import load_edit_set
from steer.edits.finetune import finetune
from steer.edits.generate import edit_generate
from steer.edits.make_data import make_examples
from steer.edits.spans import apply_spans, extract_spans
from tests.conftest import tiny_gpt2


def _teacher_forced(tok, pairs, beams: int = 1, shuffle: bool = False):
    """Feed every gold anchored answer (then EOS) to the grammar, batched; return the banned (row, step)s.

    ``shuffle``: permute the rows of each source's beam group every step, as beam search reorders them.
    """
    srcs = [s for s, _ in pairs]
    gold = [tok(format_anchored(s, extract_spans(s, t)), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for s, t in pairs]
    width = 3
    grammar = AnchoredGrammar(tok, srcs, width)
    rows = [[0] * width for _ in srcs for _ in range(beams)]
    owner = [i for i in range(len(srcs)) for _ in range(beams)]
    rng = random.Random(0)
    banned = []
    for step in range(max(len(t) for t in gold) + 2):
        if shuffle:
            for g in range(len(srcs)):  # reorder within each source's beams (rows keep their texts)
                idx = list(range(g * beams, (g + 1) * beams))
                perm = idx[:]
                rng.shuffle(perm)
                rows[g * beams:(g + 1) * beams] = [rows[p] for p in perm]
        out = grammar(torch.tensor(rows), torch.zeros(len(rows), len(tok)))
        for i in range(len(rows)):
            t = gold[owner[i]]
            nxt = t[step] if step < len(t) else tok.eos_token_id
            if step < len(t) and out[i, nxt] == float("-inf"):
                banned.append((i, step))
            rows[i] = rows[i] + [nxt]
    return banned


@pytest.mark.parametrize("name, split", [("jfleg", "test"), ("asset", "test"), ("turkcorpus", "tune"),
                                         ("mrpc", "test")])
def test_grammar_allows_every_gold_answer(name, split, shared_data, gpt2_tokenizer):
    pairs = list(load_edit_set(name, split, root=shared_data / "edits").pairs())[:40]
    assert _teacher_forced(gpt2_tokenizer, pairs) == []


def test_grammar_follows_reordered_beams(shared_data, gpt2_tokenizer):
    pairs = list(load_edit_set("jfleg", "test", root=shared_data / "edits").pairs())[:8]
    assert _teacher_forced(gpt2_tokenizer, pairs, beams=3, shuffle=True) == []


def test_hand_sized_language(gpt2_tokenizer):
    tok = gpt2_tokenizer
    src = "the cat saw the dog"
    grammar = AnchoredGrammar(tok, [src], 0)

    def allowed(text):
        ids = tok(text, add_special_tokens=False)["input_ids"] if text else []
        out = AnchoredGrammar(tok, [src], 0)(torch.tensor([ids], dtype=torch.long), torch.zeros(1, len(tok)))
        return {tok.decode([i]) for i in torch.isfinite(out[0]).nonzero()[:, 0].tolist()}

    assert allowed("") == {" the", " cat", " saw", " dog", " ->", tok.eos_token}
    assert allowed(" the") == {" cat", " dog", " ->", " ..."}
    # After " saw -> x", the cursor is past "saw": only "the dog" remains to be quoted.
    assert allowed(" saw -> x\n") == {" the", " dog", " ->", tok.eos_token}
    assert allowed(" the ...") == {" cat", " saw", " the", " dog"}
    assert allowed(" the ... dog") == {" ->"}  # no second ellipsis, nothing after the source's end
    assert " went" in allowed(" cat ->") and "went" not in allowed(" cat ->")  # new words open with a space
    assert {"\n", tok.eos_token} <= allowed(" cat -> a") and " ->" not in allowed(" cat -> a")
    assert grammar is not None


def test_random_decoding_always_places(shared_data, gpt2_tokenizer):
    tok = gpt2_tokenizer
    srcs = [s for s, _ in list(load_edit_set("jfleg", "dev", root=shared_data / "edits").pairs())[:24:2]]
    width = 2
    grammar = AnchoredGrammar(tok, srcs, width)
    rows = torch.zeros(len(srcs), width, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    markers = tok(" ->\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    for step in range(60):
        scores = torch.randn(len(srcs), len(tok), generator=gen)
        scores[:, markers] += 3.0  # make lines and ends likely, so answers finish
        scores[:, tok.eos_token_id] += step / 10
        scores[0, 5] = float("-inf")
        out = grammar(rows, scores)
        assert out is not scores and out[0, 5] == float("-inf")  # a new tensor; -inf kept
        assert torch.isfinite(out).any(1).all()
        rows = torch.cat([rows, out.argmax(-1, keepdim=True)], 1)
    finished = 0
    for src, row in zip(srcs, rows[:, width:].tolist(), strict=True):
        if tok.eos_token_id in row:
            finished += 1
            text = tok.decode(row[: row.index(tok.eos_token_id)])
            apply_spans(src, parse_anchored(text, src))  # no line skipped: every one places
    assert finished >= len(srcs) // 2


def test_a_ban_on_every_allowed_token_leaves_a_choice_inside_the_grammar(gpt2_tokenizer):
    tok = gpt2_tokenizer
    grammar = AnchoredGrammar(tok, ["the cat"], 0)
    scores = torch.zeros(1, len(tok))
    for text in (" the", " cat", " ->"):
        scores[0, tok(text)["input_ids"][0]] = float("-inf")
    scores[0, tok.eos_token_id] = float("-inf")
    out = grammar(torch.zeros(1, 0, dtype=torch.long), scores)
    chosen = tok.decode([int(out.argmax())])
    assert chosen in {" the", " cat", " ->", tok.eos_token}


def test_arguments_and_tokenizers_are_checked(gpt2_tokenizer, llama2_tokenizer):
    with pytest.raises(ValueError, match="sources"):
        AnchoredGrammar(gpt2_tokenizer, [], 0)
    with pytest.raises(ValueError, match="prompt_length"):
        AnchoredGrammar(gpt2_tokenizer, ["a b"], -1)
    with pytest.raises(TypeError, match="sources"):
        AnchoredGrammar(gpt2_tokenizer, [3], 0)
    with pytest.raises(ValueError, match="byte-level BPE"):
        AnchoredGrammar(llama2_tokenizer, ["He go to school"], 0)


def test_finetuned_model_decodes_its_edit_under_the_grammar(gpt2_tokenizer, aidreams):
    """edit_generate uses the grammar by default where the tokenizer allows it, and refuses on request where not."""
    tok = copy.deepcopy(gpt2_tokenizer)
    tok.pad_token = tok.eos_token
    model = tiny_gpt2(vocab_size=len(tok))
    model.generation_config.eos_token_id = model.config.eos_token_id = tok.eos_token_id
    pairs = [("the cat sat on on the mat", "the cat sat on the mat")]
    examples, _ = make_examples(pairs, "gec", tok, fmt="anchored")
    losses = finetune(model, tok, examples, steps=60, batch_size=2, lr=1e-2, warmup=0).losses
    assert losses[-1] < 0.5, losses[-5:]
    sources = [pairs[0][0], "a cat sat on the mat", "on on on"]
    res, _ = edit_generate(model, tok, sources, task="gec", fmt="anchored", max_new_tokens=12)
    assert res[0].valid and res[0].target == pairs[0][1], res[0].raw
    for src, r in zip(sources, res, strict=True):  # an answer that ends places, whatever it quotes
        if r.valid:
            assert r.target == apply_spans(src, parse_anchored(r.raw, src))
    with pytest.raises(ValueError, match="grammar=False"):
        edit_generate(*aidreams, sources, fmt="anchored", max_new_tokens=4, grammar=True)
    with pytest.raises(TypeError, match="grammar"):
        edit_generate(model, tok, sources, fmt="anchored", grammar="yes")
