"""Resolve a corpus name or path to cleaned documents, split into a steer part and a judge part.

The *steer* split is all that steering methods see (tables, LoRA training,
prompt exemplars); the *judge* split is kept for the held-out judges. The
split is by document, in contiguous blocks spread through the corpus, and
deterministic.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from steer import checks
from steer.catalog import manifest

_PG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_PG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
# Placeholders left where an illustrated e-book had images, e.g.
# "p074e.jpg (49K)", "Full Size", "[Illustration: ...]".
_IMAGE_LINE = re.compile(
    r"^\s*(\S+\.(jpe?g|png|gif)\s*(\(\d+K\))?|Full Size|\[Illustration[^\]]*\])\s*$", re.I | re.M
)


@dataclass
class Corpus:
    """A style corpus split into documents.

    Attributes:
        name: manifest name, or the path it was read from.
        path: the file or folder read.
        steer: the steer split: the documents methods may use (tables, LoRA, exemplars).
        judge: the judge split: documents no method sees, for the held-out judges.
        digest: sha256 of the text read.
        files: the files read, in order.
        skipped: files of a corpus folder that were not read (not ``.txt``).
        split: how the documents were split (see :func:`split_steer_judge`), for config.json.
    """

    name: str
    path: Path
    steer: list[str]
    judge: list[str]
    digest: str
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    split: dict = field(default_factory=dict)

    @property
    def steer_digest(self) -> str:
        """sha256 of the steer split's documents (tables and adapters are cached under it)."""
        return docs_digest(self.steer)


def corpus_label(entry: str) -> str:
    """How tables, figures and reports name a corpus entry: a name as it is, a path by its file name.

    Example:
        >>> corpus_label("don_quixote"), corpus_label("/data/books/my_style.txt")
        ('don_quixote', 'my_style.txt')
    """
    return Path(str(entry)).name or str(entry)


def default_data_dirs() -> list[Path]:
    """Where named corpora are looked for, in order.

    ``$STEER_CORPORA_DIR``, then ``~/.cache/steer/corpora`` (where fetched
    corpora go), then ``shared/data/corpora`` beside the source checkout.
    """
    dirs = []
    if os.environ.get("STEER_CORPORA_DIR"):
        dirs.append(Path(os.environ["STEER_CORPORA_DIR"]))
    dirs.append(Path.home() / ".cache" / "steer" / "corpora")
    dirs.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "corpora")
    return dirs


def resolve_corpus(name_or_path: str | os.PathLike, data_dir=None, fetch: bool = False) -> Path:
    """The file or folder of a corpus.

    An existing path is used as it is; otherwise the name must be in the
    manifest and its file is looked up in ``data_dir`` or :func:`default_data_dirs`;
    with ``fetch=True`` a missing named corpus is downloaded into the cache.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    entries = manifest()
    name = str(name_or_path)
    if name not in entries:
        raise ValueError(
            f"unknown corpus {name!r}: not a file or folder, and not one of {sorted(entries)}"
        )
    dirs = [Path(data_dir)] if data_dir is not None else default_data_dirs()
    for d in dirs:
        candidate = d / entries[name]["file"]
        if candidate.exists():
            return candidate
    if fetch:
        return fetch_corpus(name, Path.home() / ".cache" / "steer" / "corpora")
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"corpus {name!r} ({entries[name]['file']}) not found in {looked}; set STEER_CORPORA_DIR, "
        f"pass a path, or fetch it (needs internet): {entries[name]['url']}"
    )


def clean_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header/footer (when present) and image placeholders."""
    start, end = _PG_START.search(text), _PG_END.search(text)
    if start:
        text = text[start.end():]
    if end:
        end = _PG_END.search(text)
        text = text[: end.start()] if end else text
    return _IMAGE_LINE.sub("", text.replace("\r\n", "\n").lstrip("\ufeff"))


def split_documents(text: str, fmt: str = "auto") -> list[str]:
    """Split text into documents.

    ``"lines"``: one document per non-empty line. ``"paragraphs"``: blocks
    separated by blank lines, hard line wraps joined with spaces. ``"auto"``:
    paragraphs if the text has blank lines, else lines. Whitespace inside a
    document is collapsed to single spaces.
    """
    if fmt not in ("auto", "lines", "paragraphs"):
        raise ValueError(f"`fmt` must be 'auto', 'lines' or 'paragraphs', got {fmt!r}")
    if fmt == "auto":
        fmt = "paragraphs" if re.search(r"\n\s*\n", text) else "lines"
    blocks = text.split("\n") if fmt == "lines" else re.split(r"\n\s*\n", text)
    docs = (" ".join(b.split()) for b in blocks)
    return [d for d in docs if d]


N_BLOCKS = 20
JUDGE_FRACTION = 0.2


def docs_digest(docs: list[str]) -> str:
    """sha256 (hex) of a list of documents, each followed by a NUL byte (order matters)."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def split_steer_judge(docs: list[str], judge_fraction: float = JUDGE_FRACTION,
                      n_blocks: int = N_BLOCKS) -> tuple[list[str], list[str], dict]:
    """(steer, judge, info): documents split in contiguous blocks, some blocks held out for judging.

    The documents, in order, are cut into ``n_blocks`` contiguous blocks of
    about equal characters (a run of paragraphs of a book, a run of verses or
    of highlights), and round(judge_fraction * n_blocks) blocks spread evenly
    through the corpus form the judge split: a book is judged on passages
    from its beginning, middle and end, never on paragraphs interleaved with
    the ones methods saw. A judge document whose text also occurs in the
    steer split (a repeated line such as "Amen.") is dropped, so the splits
    share no document. Deterministic: the same documents give the same split.

    Args:
        docs: the corpus's documents, in corpus order.
        judge_fraction: share of the blocks (of the text) held out, in [0, 1).
        n_blocks: blocks the corpus is cut into (fewer for a corpus of fewer documents).

    Returns:
        (steer documents, judge documents, info) with info holding the block
        layout and sizes, for config.json.
    """
    if not 0 <= judge_fraction < 1:
        raise ValueError(f"`judge_fraction` must lie in [0, 1), got {judge_fraction}")
    checks.integer("n_blocks", n_blocks, low=2)
    block, judged, n = _judged_blocks([len(d) for d in docs], judge_fraction, n_blocks)
    steer = [d for d, b in zip(docs, block, strict=True) if b not in judged]
    seen = set(steer)
    candidates = [d for d, b in zip(docs, block, strict=True) if b in judged]
    judge = [d for d in candidates if d not in seen]
    judge_chars = sum(len(d) for d in judge)
    info = {"method": "contiguous blocks", "n_blocks": n, "judge_blocks": sorted(judged),
            "n_steer_docs": len(steer), "n_judge_docs": len(judge),
            "judge_docs_dropped_as_repeats": len(candidates) - len(judge),
            "judge_char_fraction": round(judge_chars / max(1, judge_chars + sum(len(d) for d in steer)), 4),
            "steer_digest": docs_digest(steer)[:16], "judge_digest": docs_digest(judge)[:16]}
    return steer, judge, info


def _corpus_layout(name_or_path, data_dir, fetch: bool) -> tuple[Path, str, list[Path], list[Path]]:
    """(path, document format, .txt files read, files skipped) of a corpus; no .txt file is an error."""
    path = resolve_corpus(name_or_path, data_dir, fetch)
    fmt = manifest().get(str(name_or_path), {}).get("format", "auto")
    files, skipped = corpus_files(path)
    if not files:
        shown = ", ".join(f.name for f in skipped[:5]) or "nothing"
        raise ValueError(f"corpus folder {str(path)!r} holds no .txt files (found {shown})")
    return path, fmt, files, skipped


def _judged_blocks(lengths: list[int], judge_fraction: float, n_blocks: int) -> tuple[list[int], set[int], int]:
    """(block of every document, the judged blocks, number of blocks) from the documents' lengths."""
    n = min(n_blocks, len(lengths))
    k = int(round(judge_fraction * n))
    if judge_fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    # Block b holds the documents whose first character lies in [b/n, (b+1)/n) of the text.
    sizes = [length + 1 for length in lengths]
    total = sum(sizes)
    block, start = [], 0
    for size in sizes:
        block.append(min(n - 1, start * n // total) if total else 0)
        start += size
    judged = {int((i + 0.5) * n / k) for i in range(k)} if k else set()
    return block, judged, n


@dataclass(frozen=True)
class FileSteerDocs:
    """The steer documents of one corpus file, read when called (picklable: a worker process can read it).

    ``keep`` marks, per document of the file, whether it belongs to the steer split.
    """

    path: Path
    fmt: str
    encoding: str
    keep: tuple[bool, ...]

    def __call__(self) -> list[str]:
        docs = split_documents(clean_gutenberg(decode_text(self.path.read_bytes(), self.path, self.encoding)),
                               self.fmt)
        if len(docs) != len(self.keep):
            raise RuntimeError(f"corpus file {str(self.path)!r} changed while it was read")
        return [d for d, k in zip(docs, self.keep, strict=True) if k]


def steer_split_by_file(name_or_path, data_dir=None, judge_fraction: float = JUDGE_FRACTION, fetch: bool = False,
                        encoding: str = "utf-8") -> list[FileSteerDocs]:
    """The steer split of a corpus as one lazy reader per file, for corpora too big to hold in memory.

    Reads every file once to lay out the judge split (only the documents'
    lengths are kept); calling the readers gives exactly
    ``load_corpus(...).steer`` (same documents, in order), one file at a time.
    """
    if not 0 <= judge_fraction < 1:
        raise ValueError(f"`judge_fraction` must lie in [0, 1), got {judge_fraction}")
    path, fmt, files, skipped = _corpus_layout(name_or_path, data_dir, fetch)
    lengths: list[list[int]] = []
    for f in files:
        text = clean_gutenberg(decode_text(f.read_bytes(), f, encoding))
        lengths.append([len(d) for d in split_documents(text, fmt)])
    flat = [n for per_file in lengths for n in per_file]
    if not flat:
        raise ValueError(f"corpus {str(name_or_path)!r} has no text (read {len(files)} file(s), all empty)")
    block, judged, _ = _judged_blocks(flat, judge_fraction, N_BLOCKS)
    readers, i = [], 0
    for f, per_file in zip(files, lengths, strict=True):
        keep = tuple(block[j] not in judged for j in range(i, i + len(per_file)))
        i += len(per_file)
        if any(keep):
            readers.append(FileSteerDocs(f, fmt, encoding, keep))
    return readers


def check_disjoint(judge_docs: list[str], steer_docs: list[str]) -> None:
    """Refuse judge text that shares a document with the steer split (ValueError)."""
    shared = set(judge_docs) & set(steer_docs)
    if shared:
        example = next(iter(shared))
        raise ValueError(
            f"judge text overlaps the steer split: {len(shared)} document(s) occur in both "
            f"(e.g. {example[:60]!r}); build judges from Corpus.judge only"
        )


def corpus_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(read, skipped): the ``.txt`` files of a corpus folder (recursively, sorted) and the other files.

    A single file is read whatever its suffix. Hidden files are ignored.
    """
    if not path.is_dir():
        return [path], []
    every = sorted(f for f in path.rglob("*") if f.is_file() and not any(
        part.startswith(".") for part in f.relative_to(path).parts))
    return [f for f in every if f.suffix == ".txt"], [f for f in every if f.suffix != ".txt"]


def decode_text(raw: bytes, source, encoding: str = "utf-8") -> str:
    """Bytes of a corpus file as text, refusing binary data and undecodable bytes with a clear error."""
    if b"\x00" in raw[:65536]:
        raise ValueError(f"corpus file {str(source)!r} looks binary (it holds NUL bytes), not text")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"corpus file {str(source)!r} is not {encoding} text (byte {err.start}: {err.reason}); "
            "give its encoding (`encoding=`, CLI `--encoding`, e.g. cp1252 or latin-1)"
        ) from None
    except LookupError:
        raise ValueError(f"`encoding` {encoding!r} is not a known text encoding") from None


def load_corpus(name_or_path, data_dir=None, judge_fraction: float = JUDGE_FRACTION, fetch: bool = False,
                encoding: str = "utf-8") -> Corpus:
    """Resolve, read, clean and split a corpus (a manifest name, a text file or a folder of them).

    A folder contributes its ``.txt`` files (recursively); the others are
    listed in ``Corpus.skipped``. Binary, undecodable and empty corpora are
    refused with a ValueError. The documents are split into the steer and
    judge parts by :func:`split_steer_judge` (``judge_fraction=0``: all steer).

    Example:
        >>> corpus = load_corpus("don_quixote")         # doctest: +SKIP
        >>> len(corpus.steer), corpus.judge[0][:40]    # doctest: +SKIP
    """
    path, fmt, files, skipped = _corpus_layout(name_or_path, data_dir, fetch)
    h = hashlib.sha256()
    docs: list[str] = []
    for f in files:
        raw = f.read_bytes()
        h.update(raw)
        docs.extend(split_documents(clean_gutenberg(decode_text(raw, f, encoding)), fmt))
    if not docs:
        raise ValueError(f"corpus {str(name_or_path)!r} has no text (read {len(files)} file(s), all empty)")
    steer, judge, info = split_steer_judge(docs, judge_fraction)
    return Corpus(str(name_or_path), path, steer, judge, h.hexdigest(), files, skipped, info)


def fetch_corpus(name: str, dest_dir: Path) -> Path:
    """Download a named corpus into ``dest_dir`` by its manifest recipe (needs internet).

    Gutenberg books and plain URLs are fetched with urllib; Hugging Face
    datasets need the ``datasets`` package.
    """
    entry = manifest()[name]
    recipe = entry["fetch"]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / entry["file"]
    if recipe["kind"] == "gutenberg_many":  # a folder of books, one file each
        part = dest.with_name(dest.name + ".part")
        part.mkdir(parents=True, exist_ok=True)
        for book in recipe["ids"]:
            url = f"https://www.gutenberg.org/cache/epub/{book}/pg{book}.txt"
            with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https URLs
                text = clean_gutenberg(resp.read().decode("utf-8-sig", errors="replace"))
            (part / f"pg{book}.txt").write_text(text, encoding="utf-8")
        part.replace(dest)
        return dest
    if recipe["kind"] in ("gutenberg", "url"):
        url = recipe.get("url") or (
            f"https://www.gutenberg.org/cache/epub/{recipe['id']}/pg{recipe['id']}.txt"
        )
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https URLs
            text = resp.read().decode("utf-8-sig", errors="replace")
        if recipe["kind"] == "gutenberg":
            text = clean_gutenberg(text)
        if recipe.get("after") and recipe["after"] in text:
            text = text[text.index(recipe["after"]) + len(recipe["after"]):]
        if recipe.get("paragraphs_to_lines"):
            text = "\n".join(split_documents(text, "paragraphs"))
    elif recipe["kind"] == "hf_dataset":
        try:
            import datasets
        except ImportError:
            raise ImportError(f"fetching {name!r} needs `pip install datasets`") from None
        rows = datasets.load_dataset(recipe["path"], recipe.get("config"), split=recipe["split"])
        lines = []
        for value in rows[recipe["field"]]:
            if isinstance(value, list):
                value = recipe.get("join_list", " ").join(value)
            lines.extend(value.split("\n") if recipe.get("split_lines") else [value])
        text = "\n".join(" ".join(line.split()) for line in lines if line.strip())
    else:
        raise ValueError(f"unknown fetch kind {recipe['kind']!r} for corpus {name!r}")
    tmp = dest.with_suffix(".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(dest)
    return dest
