"""Corpora: manifest resolution, Gutenberg cleaning, document splitting, hold-out."""

from __future__ import annotations

import pytest

from steer.catalog import manifest, style_names
from steer.corpora import (
    check_disjoint,
    clean_gutenberg,
    load_corpus,
    resolve_corpus,
    split_documents,
    split_steer_judge,
)

PG = """The Project Gutenberg eBook of Something
Header text.
*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING ***
p074e.jpg (49K)

Full Size

It was a
bright cold day.

[Illustration: a dog]
Second paragraph.
*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING ***
Licence text.
"""


def test_clean_gutenberg_and_split():
    docs = split_documents(clean_gutenberg(PG), "paragraphs")
    assert docs == ["It was a bright cold day.", "Second paragraph."]
    assert split_documents("a\nb\n\nc", "lines") == ["a", "b", "c"]
    assert split_documents("one line\nanother", "auto") == ["one line", "another"]
    with pytest.raises(ValueError, match="`fmt`"):
        split_documents("x", "words")


def test_split_is_disjoint_deterministic_and_in_contiguous_blocks():
    docs = [f"paragraph {i} " + "word " * (i % 7) for i in range(1000)]
    steer, judge, info = split_steer_judge(docs, 0.2)
    assert split_steer_judge(list(docs), 0.2) == (steer, judge, info)  # deterministic
    assert not set(steer) & set(judge) and sorted(steer + judge) == sorted(docs)
    assert 0.15 <= info["judge_char_fraction"] <= 0.25 and info["n_blocks"] == 20
    assert info["judge_blocks"] == [2, 7, 12, 17]  # spread through the corpus
    # Contiguous: the judge split is 4 runs of consecutive paragraphs, not an interleaving.
    idx = [docs.index(d) for d in judge]
    runs = 1 + sum(b != a + 1 for a, b in zip(idx, idx[1:], strict=False))
    assert runs == 4 and min(idx) > 0 and max(idx) < len(docs) - 1
    assert split_steer_judge(["a", "b"], 0.0) == (["a", "b"], [], split_steer_judge(["a", "b"], 0.0)[2])
    with pytest.raises(ValueError, match="`judge_fraction`"):
        split_steer_judge(["a"], 1.0)


def test_repeated_documents_never_land_in_both_splits():
    docs = ["Amen."] * 50 + [f"verse {i}" for i in range(200)] + ["Amen."] * 50
    steer, judge, info = split_steer_judge(docs, 0.2)
    assert "Amen." in steer and "Amen." not in judge
    check_disjoint(judge, steer)
    with pytest.raises(ValueError, match="overlaps the steer split"):
        check_disjoint(judge + ["Amen."], steer)


def test_shared_corpora_hold_out_at_least_15_percent(shared_data):
    for name in ["don_quixote", "cnn_highlights", "kjv_new_testament"]:
        corpus = load_corpus(name)
        assert corpus.split["judge_char_fraction"] >= 0.15, name
        assert not set(corpus.steer) & set(corpus.judge)


def test_manifest_entries_are_complete_and_resolve(shared_data):
    entries = manifest()
    assert style_names() == ["don_quixote", "cnn_highlights", "arxiv_abstracts", "sherlock_holmes",
                             "tinyshakespeare", "kjv_new_testament"]
    for name in [*style_names(), "background"]:
        e = entries[name]
        assert {"source", "licence", "url", "file", "format", "fetch"} <= set(e)
        assert resolve_corpus(name).exists()


def test_named_corpus_loads_clean(shared_data):
    corpus = load_corpus("don_quixote")
    assert len(corpus.steer) > 1000 and corpus.judge
    assert not any(".jpg" in d or d == "Full Size" for d in corpus.steer)


def test_path_and_folder_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("third doc\n", encoding="utf-8")
    assert load_corpus(tmp_path / "a.txt", judge_fraction=0).steer == ["first doc", "second doc"]
    assert len(load_corpus(tmp_path, judge_fraction=0).steer) == 3


@pytest.mark.parametrize("fraction", [0.0, 0.2])
def test_steer_split_by_file_reads_exactly_the_steer_split(shared_data, fraction):
    from steer.corpora import steer_split_by_file

    for name in ("background", "kjv_new_testament"):
        readers = steer_split_by_file(name, judge_fraction=fraction)
        assert [d for read in readers for d in read()] == load_corpus(name, judge_fraction=fraction).steer


def test_bad_corpora(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus"):
        resolve_corpus("no_such_corpus")
    with pytest.raises(FileNotFoundError, match="STEER_CORPORA_DIR"):
        resolve_corpus("don_quixote", data_dir=tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        load_corpus(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="looks binary"):
        load_corpus(tmp_path / "bin.txt")


def test_non_utf8_corpus_is_refused_and_read_with_its_encoding(tmp_path):
    path = tmp_path / "cp1252.txt"
    path.write_bytes("Don Quixote\u2019s \u201chorse\u201d".encode("cp1252"))
    with pytest.raises(ValueError, match=r"not utf-8 text .*`encoding=`.*--encoding"):
        load_corpus(path)
    assert load_corpus(path, judge_fraction=0, encoding="cp1252").steer == ["Don Quixote\u2019s \u201chorse\u201d"]
    with pytest.raises(ValueError, match="`encoding`"):
        load_corpus(path, encoding="no-such-codec")


def test_folder_reports_files_read_and_skipped(tmp_path):
    # Regression: a corpus folder silently ignored everything that was not .txt.
    (tmp_path / "a.txt").write_text("first doc\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second doc\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# not read\n", encoding="utf-8")
    (tmp_path / "data.csv").write_text("x,y\n", encoding="utf-8")
    corpus = load_corpus(tmp_path, judge_fraction=0)
    assert [f.name for f in corpus.files] == ["a.txt", "b.txt"]
    assert sorted(f.name for f in corpus.skipped) == ["data.csv", "notes.md"]
    only_md = tmp_path / "md"
    only_md.mkdir()
    (only_md / "x.md").write_text("text", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \.txt files \(found x\.md\)"):
        load_corpus(only_md)
