"""ARPA out and in: a table's Kneser-Ney written and read back gives the same rows; bad files are refused by line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ngram import NGramTable
from ngram.arpa import LN10, ArpaFormatError, ArpaModel


def _table(order: int, vocab: int = 30, seed: int = 0, docs: int = 6) -> NGramTable:
    rng = np.random.default_rng(seed)
    # Skewed ids, so some contexts have many followers and some tokens never occur.
    return NGramTable.from_token_ids([rng.zipf(1.3, 200).clip(max=vocab - 3).tolist() for _ in range(docs)],
                                     vocab, order)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("discount", [0.75, 0.4])
def test_write_then_read_gives_the_tables_rows(tmp_path, order, discount):
    table = _table(order)
    path = tmp_path / "t.arpa"
    table.to_arpa(path, discount=discount)
    model = NGramTable.from_arpa(path, vocab_size=table.vocab_size)
    g = torch.Generator().manual_seed(order)
    contexts = torch.cat([torch.randint(0, 30, (40, 6), generator=g),  # mostly unseen contexts
                          torch.tensor(np.random.default_rng(order).zipf(1.3, (40, 6)).clip(max=27))])  # seen ones
    want = table.logprobs(contexts, smoothing="kneser_ney", discount=discount)
    got = model.logprobs(contexts)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(len(contexts)), rtol=0, atol=1e-5)  # distributions
    short = torch.tensor([[3], [-1]])  # shorter than N-1, and padding
    want = table.logprobs(short, smoothing="kneser_ney", discount=discount, validate=False)
    torch.testing.assert_close(model.logprobs(short), want, rtol=0, atol=2e-6)


def test_the_file_is_arpa_with_token_ids_as_words(tmp_path):
    table = _table(3)
    table.to_arpa(tmp_path / "t.arpa")
    text = (tmp_path / "t.arpa").read_text().splitlines()
    assert text[0] == "\\data\\" and text[-1] == "\\end\\"
    assert text[1] == f"ngram 1={table.vocab_size + 3}"  # every id, and <s>, </s>, <unk>
    assert "\\3-grams:" in text
    # A 2-gram line: log10 p, two ids, the backoff weight of the 2-gram as a context.
    line = next(t for t in text[text.index("\\2-grams:") + 1:] if len(t.split()) == 4)
    logp, a, b, bow = line.split()
    assert float(logp) < 0 and a.isdigit() and b.isdigit() and float(bow) <= 0


def test_a_model_from_another_toolkit_is_read_by_backoff(tmp_path):
    """A hand-written backoff model (not Kneser-Ney): p(w|h) = bow(h) p(w) for an unseen w."""
    path = tmp_path / "m.arpa"
    path.write_text("\\data\\\nngram 1=3\nngram 2=1\n\n\\1-grams:\n-0.5\t0\t-0.3\n-0.5\t1\n-0.5\t2\n\n"
                    "\\2-grams:\n-0.1\t0 1\n\n\\end\\\n")
    model = ArpaModel.read(path)
    row = model.logprobs(torch.tensor([[0], [2]]))
    assert model.vocab_size == 3
    assert row[0, 1].item() == pytest.approx(-0.1 * LN10)  # seen
    assert row[0, 2].item() == pytest.approx((-0.3 - 0.5) * LN10)  # backed off
    assert row[1].tolist() == pytest.approx([-0.5 * LN10] * 3)  # context 2 has no entries and no backoff


@pytest.mark.parametrize("text, match", [
    ("hello\n", "no \\\\data\\\\ section"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5\t0\n", "no \\\\end\\\\"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5\n\\end\\\n", "line 5: a 1-gram line needs"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nx\t0\n\\end\\\n", "line 5: expected numbers"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n0.5\t0\n\\end\\\n", "line 5: log10 p must be"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5\tcat\n\\end\\\n", "line 5: expected numbers and token ids"),
    ("\\data\\\nngram 1=1\nngram 3=1\n\n\\1-grams:\n-0.5\t0\n\\3-grams:\n-1\t0 0 0\n\\end\\\n", "orders"),
    ("\\data\\\nngram one\n", "line 2: bad count line"),
    ("\\data\\\nngram 1=1\n\n\\2-grams:\n", "line 4: section 2-grams is not in"),
])
def test_bad_files_are_refused_with_line_and_reason(tmp_path, text, match):
    path = tmp_path / "bad.arpa"
    path.write_text(text)
    with pytest.raises(ArpaFormatError, match=match):
        ArpaModel.read(path)


def test_ids_outside_the_vocabulary_and_missing_files(tmp_path):
    table = _table(2)
    table.to_arpa(tmp_path / "t.arpa")
    with pytest.raises(ArpaFormatError, match="outside the vocabulary"):
        ArpaModel.read(tmp_path / "t.arpa", vocab_size=10)
    with pytest.raises(FileNotFoundError):
        ArpaModel.read(tmp_path / "none.arpa")
    with pytest.raises(ValueError, match="discount"):
        table.to_arpa(tmp_path / "x.arpa", discount=1.5)


def test_kenlm_scores_the_written_file_as_steer_does(tmp_path):
    """KenLM's own scores (log10) on the written file equal steer's (ln) to 1e-5."""
    kenlm = pytest.importorskip("kenlm")  # the `peers` extra
    table = _table(4, vocab=40, seed=3)
    table.to_arpa(tmp_path / "t.arpa")
    lm = kenlm.Model(str(tmp_path / "t.arpa"))
    rng = np.random.default_rng(4)
    contexts = rng.zipf(1.3, (30, 3)).clip(max=37)
    want = table.logprobs(torch.tensor(contexts), smoothing="kneser_ney")  # (30, V) ln
    for row, context in enumerate(contexts.tolist()):
        state = kenlm.State()
        lm.NullContextWrite(state)  # no <s>: the table's contexts start anywhere
        for token in context:
            nxt = kenlm.State()
            lm.BaseScore(state, str(token), nxt)
            state = nxt
        got = [lm.BaseScore(state, str(w), kenlm.State()) * LN10 for w in range(table.vocab_size)]
        np.testing.assert_allclose(got, want[row].numpy(), rtol=0, atol=1e-5)
