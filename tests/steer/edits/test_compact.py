"""Compact span positions: the exact round trip on every shared pair, position tokens, the grammar."""

from __future__ import annotations

import pytest
import torch

from steer.edits import apply_spans, extract_spans, normalize
from steer.edits.compact import (
    CompactSpanGrammar,
    add_position_tokens,
    compact_source,
    format_compact,
    parse_compact,
    position_ids,
)
from steer.edits.data import ALL_SETS, load_edit_set
from steer.edits.format import SpanFormatError


@pytest.fixture(scope="module")
def llama_positions():
    from transformers import AutoTokenizer

    from tests.conftest import shared_path

    tok = AutoTokenizer.from_pretrained(shared_path("tokenizers", "llama2", "hf"))
    add_position_tokens(tok)
    return tok


def test_format_and_parse():
    assert format_compact([(1, 2, "went"), (4, 5, "")]) == "<@1><@2>went<@4><@5>"
    assert format_compact([]) == ""
    assert parse_compact("", 3) == []
    assert parse_compact(" <@0><@0> Yesterday ,<@3><@3>the  ", 5) == [(0, 0, "Yesterday ,"), (3, 3, "the")]
    assert compact_source("He  go home") == "<@0>He<@1>go<@2>home<@3>"
    for bad, match in [("went<@1><@2>", "before the first"), ("<@1><@2>x<@3>", "3 positions"),
                       ("<@1>x<@2>", "between the positions"), ("<@2><@2>", "inserts nothing"),
                       ("<@2><@1>x", "out of range"), ("<@1><@2>a<@2><@3>b", "not after"),
                       ("<@1><@9>", "out of range")]:
        with pytest.raises(SpanFormatError, match=match):
            parse_compact(bad, 5)
    with pytest.raises(ValueError, match="'<@'"):
        format_compact([(0, 1, "a<@3>")])


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7])
def test_sparse_marks_keep_the_source_and_its_positions(llama_positions, m):
    """Marking every m-th position: removing the marks gives the source back, the marks are exactly the
    multiples of m and the end, each one token, and the source's words tokenise as they do unmarked."""
    import re

    src = "He  go to the old school yesterday , did n't he ?"
    words = src.split()
    text = compact_source(src, mark_every=m)
    assert " ".join(re.sub(r"<@\d+>", " ", text).split()) == " ".join(words)
    marks = [int(k) for k in re.findall(r"<@(\d+)>", text)]
    assert marks == sorted(set(list(range(0, len(words), m)) + [len(words)]))
    ids = llama_positions(text, add_special_tokens=False)["input_ids"]
    first = llama_positions.convert_tokens_to_ids("<@0>")
    assert [i - first for i in ids if first <= i < first + 256] == marks
    plain = llama_positions(" ".join(words), add_special_tokens=False)["input_ids"]
    assert [i for i in ids if not first <= i < first + 256] == plain
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`mark_every`"):
            compact_source(src, mark_every=bad)


def test_round_trip_on_every_shared_pair_in_text_and_through_the_tokenizer(shared_data, llama_positions):
    tok = llama_positions
    for name, split in ALL_SETS:
        es = load_edit_set(name, split)
        pairs = list(es.pairs())
        texts = [format_compact(extract_spans(s, t)) for s, t in pairs]
        decoded = tok.batch_decode(tok(texts, add_special_tokens=False)["input_ids"])
        for (src, ref), text, back in zip(pairs, texts, decoded, strict=True):
            n = len(src.split())
            assert apply_spans(src, parse_compact(text, n)) == normalize(ref), (name, src, ref)
            assert parse_compact(back, n) == parse_compact(text, n), (name, text, back)


def test_position_tokens_are_single_consecutive_tokens_and_embeddings_start_at_their_digits(aidreams_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(aidreams_path)
    tok = AutoTokenizer.from_pretrained(aidreams_path)
    v = len(tok)
    first = add_position_tokens(tok, model, n_positions=40)
    assert first == v and len(tok) == v + 40 and position_ids(tok) == first
    assert add_position_tokens(tok, model, n_positions=40) == first and len(tok) == v + 40  # idempotent
    ids = tok("<@0>He<@1>go<@39>", add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i >= first] == [first, first + 1, first + 39]
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] >= v + 40
    digits = [tok.convert_tokens_to_ids(t) for t in tok.convert_ids_to_tokens(
        tok("12", add_special_tokens=False)["input_ids"]) if any(c.isdigit() for c in t)]
    # <@12> starts near 2/3 "1" + 1/3 "2" (exactly so without noise); <@12> and <@21> differ, and
    # <@3> is not the digit "3".
    near = (2 * emb[digits[0]] + emb[digits[1]]) / 3
    spread = emb[:v].std(0)
    assert float(((emb[first + 12] - near) / spread).pow(2).mean().sqrt()) == pytest.approx(0.5, rel=0.2)
    assert not torch.allclose(emb[first + 12], emb[first + 21])
    three = tok.convert_tokens_to_ids([t for t in tok.convert_ids_to_tokens(tok("3", add_special_tokens=False)[
        "input_ids"]) if "3" in t])[0]
    assert not torch.allclose(emb[first + 3], emb[three])
    quiet = AutoModelForCausalLM.from_pretrained(aidreams_path)
    q_tok = AutoTokenizer.from_pretrained(aidreams_path)
    add_position_tokens(q_tok, quiet, n_positions=40, noise=0.0)
    q_emb = quiet.get_input_embeddings().weight.detach()
    assert torch.allclose(q_emb[first + 12], (2 * q_emb[digits[0]] + q_emb[digits[1]]) / 3)
    assert torch.allclose(q_emb[first + 3], q_emb[three])
    with pytest.raises(ValueError, match="`noise`"):
        add_position_tokens(q_tok, quiet, noise=-1.0)
    with pytest.raises(ValueError, match="no position tokens"):
        position_ids(AutoTokenizer.from_pretrained(aidreams_path))


def _teacher_forced(tok, pairs, beams: int = 1):
    """Feed every gold compact target (then EOS) to the grammar row by row, batched; return banned steps."""
    srcs = [s for s, _ in pairs]
    prompts = [tok(compact_source(s), add_special_tokens=False)["input_ids"] for s in srcs]
    targets = [tok(format_compact(extract_spans(s, t)), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
               for s, t in pairs]
    width = max(len(p) for p in prompts)
    grammar = CompactSpanGrammar(tok, srcs, width)
    rows = [[tok.pad_token_id or 0] * (width - len(p)) + p for p in prompts]
    rows = [r for r in rows for _ in range(beams)]
    gold = [t for t in targets for _ in range(beams)]
    banned = []
    for step in range(max(len(t) for t in gold)):
        scores = torch.zeros(len(rows), len(tok))
        out = grammar(torch.tensor(rows), scores)
        for i, t in enumerate(gold):
            nxt = t[step] if step < len(t) else tok.eos_token_id
            if step < len(t) and out[i, nxt] == float("-inf"):
                banned.append((i, step))
            rows[i] = rows[i] + [nxt]
    return banned


def test_grammar_allows_every_gold_target(shared_data, llama_positions):
    for name, split in [("jfleg", "test"), ("asset", "test"), ("mrpc", "test")]:
        pairs = list(load_edit_set(name, split).pairs())[:30]
        assert _teacher_forced(llama_positions, pairs) == []
    pairs = list(load_edit_set("turkcorpus", "tune").pairs())[:12]
    assert _teacher_forced(llama_positions, pairs, beams=3) == []  # beam rows map to row // beams


def test_grammar_keeps_random_decoding_valid(shared_data, llama_positions):
    tok = llama_positions
    srcs = [s for s, _ in list(load_edit_set("jfleg", "dev").pairs())[:16:2]]
    prompts = [tok(compact_source(s), add_special_tokens=False)["input_ids"] for s in srcs]
    width = max(len(p) for p in prompts)
    grammar = CompactSpanGrammar(tok, srcs, width)
    rows = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    gen = torch.Generator().manual_seed(0)
    first = position_ids(tok)
    for _ in range(40):
        scores = torch.randn(rows.shape[0], len(tok), generator=gen)
        scores[:, first:first + 256] += 4.0  # make positions and EOS likely, so spans close
        scores[:, tok.eos_token_id] += 6.0
        scores[0, 5] = float("-inf")
        out = grammar(rows, scores)
        assert out is not scores and out[0, 5] == float("-inf")  # new tensor; -inf kept
        assert torch.isfinite(out).any(1).all()  # every row can go on
        rows = torch.cat([rows, out.argmax(-1, keepdim=True)], 1)
    for src, row in zip(srcs, rows[:, width:].tolist(), strict=True):
        assert tok.eos_token_id in row
        ids = row[: row.index(tok.eos_token_id)]
        spans = parse_compact(tok.decode(ids), len(src.split()))
        apply_spans(src, spans)


def test_grammar_refuses_sources_it_cannot_address(llama_positions):
    with pytest.raises(ValueError, match="300 words"):
        CompactSpanGrammar(llama_positions, ["w " * 300], 4)


def test_make_examples_and_edit_generate_in_compact_form(aidreams_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steer.edits.generate import edit_generate
    from steer.edits.make_data import make_examples

    model = AutoModelForCausalLM.from_pretrained(aidreams_path).eval()
    tok = AutoTokenizer.from_pretrained(aidreams_path)
    add_position_tokens(tok, model, n_positions=32)
    pairs = [("He go home", "He goes home"), ("A b c", "A b c")]
    examples, report = make_examples(pairs, tokenizer=tok, fmt="compact")
    assert [e["completion"] for e in examples] == ["<@1><@2>goes", ""]
    assert examples[0]["prompt"].endswith("Source:<@0>He<@1>go<@2>home<@3>\nEdits:")
    assert report.span_tokens < report.rewrite_tokens
    sparse, _ = make_examples(pairs, tokenizer=tok, fmt="compact", mark_every=2)
    assert sparse[0]["prompt"].endswith("Source:<@0>He go<@2>home<@3>\nEdits:")
    assert [e["completion"] for e in sparse] == [e["completion"] for e in examples]
    results, _ = edit_generate(model, tok, [s for s, _ in pairs], fmt="compact", max_new_tokens=12)
    sparse_results, _ = edit_generate(model, tok, [s for s, _ in pairs], fmt="compact", max_new_tokens=12,
                                      mark_every=2)
    assert all(r.valid <= (r.spans is not None) for r in sparse_results)
    for (src, _), r in zip(pairs, results, strict=True):
        if r.valid:
            assert r.target == apply_spans(src, r.spans)
        else:
            assert r.target == normalize(src)
