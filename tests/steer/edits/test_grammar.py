"""EditSpanGrammar never lets an invalid span list through: random-logit decoding, many times."""

from __future__ import annotations

import random

import pytest
import torch

from steer.edits import parse_spans
from steer.edits.grammar import INVALID, EditSpanGrammar, parse_state, token_surfaces


def _decode_randomly(tok, sources, steps=40, seed=0, prompt=(1, 5, 6)):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    grammar = EditSpanGrammar(tok, sources, prompt_length=len(prompt))
    ids = torch.tensor([list(prompt)] * len(sources))
    structural = torch.tensor([i for i, t in enumerate(grammar.cls.texts) if t.strip().isdigit() or t.strip() == ";"])
    for _ in range(steps):
        scores = torch.randn(len(sources), len(tok), generator=g) * 4
        if rng.random() < 0.3:
            scores[:, tok.eos_token_id] += 12
        if rng.random() < 0.3:  # sometimes favour the structural tokens (digits, ";")
            scores[:, structural] += 6
        out = grammar(ids, scores)
        assert not torch.isnan(out).any() and torch.isfinite(out).any(1).all()
        nxt = torch.multinomial(torch.softmax(out, -1), 1, generator=g)
        ids = torch.cat([ids, nxt], 1)
        if (ids[:, len(prompt):] == tok.eos_token_id).any(1).all():
            break
    return grammar, ids[:, len(prompt):].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["llama2_tokenizer", "gpt2_tokenizer"])
def test_random_decoding_yields_only_valid_span_lists(which, request):
    tok = request.getfixturevalue(which)
    rng = random.Random(1)
    finished = 0
    for trial in range(8):
        sources = [" ".join(rng.choice(["a", "cat", "sat", "on", "the", "mat"]) for _ in range(rng.randint(0, 12)))
                   for _ in range(8)]
        grammar, outs = _decode_randomly(tok, sources, seed=trial)
        for src, ids in zip(sources, outs, strict=True):
            n = len(src.split())
            text_ids = ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
            text = "".join(grammar.cls.texts[i] for i in text_ids)
            if tok.eos_token_id in ids:
                finished += 1
                spans = parse_spans(text, n_words=n)  # raises if invalid
                assert all(0 <= s.start <= s.end <= n for s in spans)
            else:
                assert parse_state(text, n)[0] != INVALID
    assert finished > 20


def test_beam_rows_map_to_their_source(llama2_tokenizer):
    tok = llama2_tokenizer
    grammar = EditSpanGrammar(tok, ["one two", "a b c d e f g h i j k l"], prompt_length=1)
    digit = {t: i for i, t in enumerate(grammar.cls.texts) if t in ("5", "9")}
    ids = torch.ones(4, 1, dtype=torch.long)  # 2 sources x 2 beams
    out = grammar(ids, torch.zeros(4, len(tok)))
    assert torch.isneginf(out[:2, digit["5"]]).all()  # source 0 has 2 words
    assert torch.isfinite(out[2:, digit["5"]]).all()


def test_surfaces_keep_leading_spaces(llama2_tokenizer, gpt2_tokenizer):
    for tok in (llama2_tokenizer, gpt2_tokenizer):
        s = token_surfaces(tok)
        ids = tok(" the cat", add_special_tokens=False)["input_ids"]
        assert "".join(s[i] for i in ids).strip() == "the cat"


def test_bad_arguments(llama2_tokenizer):
    with pytest.raises(ValueError, match="`sources`"):
        EditSpanGrammar(llama2_tokenizer, [], prompt_length=0)
    with pytest.raises(ValueError, match="`prompt_length`"):
        EditSpanGrammar(llama2_tokenizer, ["a"], prompt_length=-1)


@pytest.mark.parametrize("which", ["llama2_tokenizer", "gpt2_tokenizer"])
def test_incremental_states_give_the_same_masks_as_reading_the_text(which, request):
    """Beam-like decoding (rows reordered and duplicated within a source): every step's
    output equals that of a fresh grammar, which reads every row's text."""
    tok = request.getfixturevalue(which)
    rng = random.Random(3)
    g = torch.Generator().manual_seed(3)
    sources = ["the cat sat on the mat", "a b", "", "one two three four five six seven eight nine ten eleven"]
    beams, prompt = 3, [1, 5, 6]
    grammar = EditSpanGrammar(tok, sources, prompt_length=len(prompt))
    read = []
    grammar.states = lambda ids, f=grammar.states: read.append(1) or f(ids)
    structural = torch.tensor([i for i, t in enumerate(grammar.cls.texts) if t.strip().isdigit() or t.strip() == ";"])
    ids = torch.tensor([prompt] * (len(sources) * beams))
    for step in range(30):
        scores = torch.randn(ids.shape[0], len(tok), generator=g) * 3
        scores[:, structural] += 5 * (step % 3 != 2)
        scores[:, tok.eos_token_id] += 4 * (step > 15)
        got = grammar(ids, scores)
        want = EditSpanGrammar(tok, sources, prompt_length=len(prompt))(ids, scores)
        torch.testing.assert_close(got, want)
        nxt = torch.multinomial(torch.softmax(got, -1), 1, generator=g)
        # Beam reordering: each row continues some row of its own source.
        parents = torch.tensor([s * beams + rng.randrange(beams) for s in range(len(sources)) for _ in range(beams)])
        ids = torch.cat([ids[parents], nxt[parents]], 1)
    assert len(read) == 1  # only the first step read the texts
