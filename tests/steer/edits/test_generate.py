"""edit_generate end to end on a tiny model: every span output is valid and applied."""

from __future__ import annotations

import copy

import pytest

from steer.edits.finetune import encode_examples
from steer.edits.generate import edit_generate, read_answer
from steer.edits.prompts import as_chat, make_prompt, uses_chat
from steer.models import document_ids

# A minimal chat template: the tests need a tokenizer that has one.
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant:{% endif %}")


def _recording(model, calls):
    """``model`` whose ``generate`` keeps each call's inputs and outputs in ``calls``."""
    model = copy.copy(model)
    plain = model.generate

    def generate(**kw):
        out = plain(**kw)
        calls.append((kw["input_ids"], out))
        return out

    model.generate = generate
    return model


def test_spans_and_rewrite_paths(aidreams):
    model, tok = aidreams
    sources = ["the cat sat on the mat", "a dog", "one two three four five six"]
    res, secs = edit_generate(model, tok, sources, fmt="text", max_new_tokens=24)
    assert len(res) == 3 and secs > 0
    for src, r in zip(sources, res, strict=True):
        if r.valid:
            assert all(0 <= s.start <= s.end <= len(src.split()) for s in r.spans)
        else:
            assert r.target == src
    res_b, _ = edit_generate(model, tok, sources[:2], fmt="text", max_new_tokens=16, num_beams=3)
    assert len(res_b) == 2
    rew, _ = edit_generate(model, tok, sources, target="rewrite", max_new_tokens=8)
    assert all(r.spans is None for r in rew)


def test_bad_arguments(aidreams):
    model, tok = aidreams
    with pytest.raises(ValueError, match="`target`"):
        edit_generate(model, tok, ["a"], target="diff")
    with pytest.raises(ValueError, match="`fmt`"):
        edit_generate(model, tok, ["a"], fmt="diff")
    with pytest.raises(ValueError, match="`fmt` is the format of span answers"):
        edit_generate(model, tok, ["a"], target="rewrite", fmt="compact")
    with pytest.raises(ValueError, match="`sources`"):
        edit_generate(model, tok, "a b")
    with pytest.raises(ValueError, match="`task`"):
        make_prompt("a", task="translate")
    with pytest.raises(ValueError, match="`loop_ban`"):
        edit_generate(model, tok, ["a"], loop_ban=4)
    with pytest.raises(ValueError, match="`ngram`"):
        edit_generate(model, tok, ["a"], loop_ban=(0, 2))
    with pytest.raises(ValueError, match="`batch_size`"):
        edit_generate(model, tok, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="no chat template"):
        edit_generate(model, tok, ["a"], chat=True)
    with pytest.raises(TypeError, match="`chat`"):
        uses_chat(tok, "yes")
    with pytest.raises(TypeError, match="`drop_finished`"):
        edit_generate(model, tok, ["a"], drop_finished="yes")


OUTPUTS = {"compact": {"fmt": "compact"}, "rewrite": {"target": "rewrite"},
           "instruct": {"target": "rewrite", "instruct": True}}


@pytest.mark.parametrize("mode", ["compact", "rewrite"])
def test_dropping_finished_rows_gives_generates_answers(aidreams, mode):
    """Rows that leave the batch when their answer ends get the answers generate gives them (float64,
    batches of mixed lengths, the grammar and the loop ban on), with a call of the model per step."""
    from steer.edits.compact import add_position_tokens

    model, tok = copy.deepcopy(aidreams[0]).double(), copy.deepcopy(aidreams[1])
    add_position_tokens(tok, model, n_positions=16)
    sources = ["one two three four five six seven", "a dog", "the cat sat on the mat", "yes", "he go home now"]
    kw = {**OUTPUTS[mode], "max_new_tokens": 20, "batch_size": 3}
    slow, _ = edit_generate(model, tok, sources, drop_finished=False, **kw)
    fast, _ = edit_generate(model, tok, sources, **kw)
    assert [(r.raw, r.n_tokens, r.valid, r.target) for r in fast] == [(r.raw, r.n_tokens, r.valid, r.target)
                                                                      for r in slow]
    if mode == "compact":  # the grammar ends answers at several lengths: rows really left early
        assert len({r.n_tokens for r in slow}) > 1


@pytest.mark.parametrize("mode", ["compact", "rewrite", "instruct"])
def test_sorting_by_length_returns_each_source_its_own_answer(aidreams, mode):
    """Batched in prompt-length order, the results still come back in the input order: one source at
    a time (no padding, so nothing numerical differs) gives the same answer sorted or not."""
    from steer.edits.compact import add_position_tokens

    model, tok = copy.deepcopy(aidreams[0]), copy.deepcopy(aidreams[1])
    add_position_tokens(tok, model, n_positions=16)
    sources = ["one two three four five six seven", "a dog", "the cat sat on the mat", "yes"]
    kw = {**OUTPUTS[mode], "max_new_tokens": 12, "batch_size": 1, "drop_finished": False}
    plain, _ = edit_generate(model, tok, sources, sort_by_length=False, **kw)
    calls = []
    ordered, _ = edit_generate(_recording(model, calls), tok, sources, sort_by_length=True, **kw)
    assert [r.raw for r in ordered] == [r.raw for r in plain]
    widths = [ids.shape[1] for ids, _ in calls]
    assert widths == sorted(widths) and len(set(widths)) > 1  # the batches really went shortest first


def test_loop_ban_keeps_every_answer_free_of_a_repeated_ngram(aidreams):
    model, tok = aidreams
    sources = ["the the the the the the", "a b a b a b a b", "one two three"]
    for output in ({"target": "rewrite"}, {"fmt": "compact"}):
        if output.get("fmt") == "compact":
            from steer.edits.compact import add_position_tokens

            model, tok = copy.deepcopy(model), copy.deepcopy(tok)
            add_position_tokens(tok, model, n_positions=16)
        for ban in ((2, 2), (3, 2)):
            calls = []
            edit_generate(_recording(model, calls), tok, sources, **output, max_new_tokens=30, loop_ban=ban,
                          drop_finished=False)
            (ids, out), = calls
            for row in out[:, ids.shape[1]:].tolist():
                row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
                grams = [tuple(row[i : i + ban[0]]) for i in range(len(row) - ban[0] + 1)]
                assert len(grams) == len(set(grams)), (output, ban, row)
    calls = []
    edit_generate(_recording(aidreams[0], calls), aidreams[1], sources, target="rewrite", max_new_tokens=30,
                  loop_ban=None, drop_finished=False)
    (ids, out), = calls
    looped = [r for r in out[:, ids.shape[1]:].tolist() if len({tuple(r[i:i + 2]) for i in range(len(r) - 1)})
              < len(r) - 1]
    assert looped  # the guard has something to do on this model


def test_chat_prompts_are_the_same_ids_in_training_and_decoding(aidreams):
    """With a chat template, encode_examples and edit_generate put the same prompt ids before the answer."""
    model, tok = aidreams
    tok = copy.deepcopy(tok)
    tok.chat_template = TEMPLATE
    assert uses_chat(tok) and not uses_chat(tok, False)
    sources = ["he go home", "the cat sat"]
    examples = [{"prompt": make_prompt(s, "gec", "rewrite"), "completion": " x"} for s in sources]
    encoded = encode_examples(tok, examples)
    calls = []
    edit_generate(_recording(model, calls), tok, sources, target="rewrite", max_new_tokens=2, batch_size=1,
                  sort_by_length=False, drop_finished=False)
    for (prompt, _), (ids, _) in zip(encoded, calls, strict=True):
        assert ids[0].tolist() == prompt
        assert prompt[0] == tok.bos_token_id and "user: Correct the grammatical errors" in tok.decode(prompt)
    # Without the template (chat=False) both sides fall back to the plain document format.
    plain = encode_examples(tok, examples, chat=False)
    assert [p for p, _ in plain] == document_ids(tok, [e["prompt"] for e in examples])
    assert as_chat(tok, "hi").endswith("<s>assistant:")


def test_read_answer():
    assert read_answer('Corrected sentence: "He goes home."\nI fixed the verb.') == "He goes home."
    assert read_answer("The corrected sentence is:\n\nHe  goes home.") == "He goes home."
    assert read_answer("The simplified version: It rains.") == "It rains."
    assert read_answer("He said: no way.") == "He said: no way."  # a colon of the sentence itself stays
    assert read_answer("\n\n") == ""


def test_prompt_lookup_gives_greedy_answers_in_fewer_passes(gpt2_tokenizer):
    """Prompt-lookup decoding writes greedy decoding's answers, token for token, with the grammars and
    the loop ban on (float64: no ties), and a model that copies its source needs fewer forward passes."""
    from steer.edits.finetune import finetune
    from steer.edits.make_data import make_examples
    from tests.conftest import tiny_gpt2

    tok = copy.deepcopy(gpt2_tokenizer)
    tok.pad_token = tok.eos_token
    model = tiny_gpt2(vocab_size=len(tok))
    model.generation_config.eos_token_id = model.config.eos_token_id = tok.eos_token_id
    pairs = [("the cat sat on on the mat today", "the cat sat on the mat today"),
             ("he go to the big school every day", "he goes to the big school every day")]
    examples, _ = make_examples(pairs, "gec", tok, fmt="anchored")
    finetune(model, tok, examples, prompt_key="rewrite_prompt", target_key="rewrite", steps=80, batch_size=2,
             lr=1e-2, warmup=0)
    model.double()
    passes = []
    model.register_forward_hook(lambda *_: passes.append(1))
    sources = [s for s, _ in pairs] + ["a dog sat on the mat"]
    for kw in ({"target": "rewrite"}, {"fmt": "anchored"}, {"fmt": "text"}):
        got = {}
        for lookup in (None, 3):
            passes.clear()
            res, _ = edit_generate(model, tok, sources, task="gec", batch_size=1, max_new_tokens=16,
                                   prompt_lookup=lookup, **kw)
            got[lookup] = ([(r.raw, r.n_tokens, r.valid, r.target) for r in res], len(passes))
        assert got[3][0] == got[None][0], kw
        if kw == {"target": "rewrite"}:
            assert got[None][0][0][3] == pairs[0][1]  # it learned the rewrite: mostly a copy
            assert got[3][1] < got[None][1], (got[3][1], got[None][1])
    with pytest.raises(ValueError, match="batch_size=1"):
        edit_generate(model, tok, sources, prompt_lookup=3)
    with pytest.raises(ValueError, match="`prompt_lookup`"):
        edit_generate(model, tok, sources, batch_size=1, prompt_lookup=0)
