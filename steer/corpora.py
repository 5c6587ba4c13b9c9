"""Resolve a corpus name or path to cleaned documents, with a held-out slice for evaluation."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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
        train: documents to build tables from.
        heldout: the last ``holdout`` fraction of documents, kept for evaluation.
        digest: sha256 of the text read (tables are cached under it).
        files: the files read, in order.
        skipped: files of a corpus folder that were not read (not ``.txt``).
    """

    name: str
    path: Path
    train: list[str]
    heldout: list[str]
    digest: str
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


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


def split_holdout(docs: list[str], holdout: float) -> tuple[list[str], list[str]]:
    """(train, heldout): the last ``holdout`` fraction of documents is held out."""
    if not 0 <= holdout < 1:
        raise ValueError(f"`holdout` must lie in [0, 1), got {holdout}")
    n_held = int(round(len(docs) * holdout))
    if holdout > 0 and len(docs) > 1:
        n_held = max(n_held, 1)
    return docs[: len(docs) - n_held], docs[len(docs) - n_held:]


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


def load_corpus(name_or_path, data_dir=None, holdout: float = 0.05, fetch: bool = False,
                encoding: str = "utf-8") -> Corpus:
    """Resolve, read, clean and split a corpus (a manifest name, a text file or a folder of them).

    A folder contributes its ``.txt`` files (recursively); the others are
    listed in ``Corpus.skipped``. Binary, undecodable and empty corpora are
    refused with a ValueError.

    Example:
        >>> corpus = load_corpus("don_quixote")          # doctest: +SKIP
        >>> len(corpus.train), corpus.heldout[0][:40]   # doctest: +SKIP
    """
    path = resolve_corpus(name_or_path, data_dir, fetch)
    fmt = manifest().get(str(name_or_path), {}).get("format", "auto")
    files, skipped = corpus_files(path)
    if not files:
        shown = ", ".join(f.name for f in skipped[:5]) or "nothing"
        raise ValueError(f"corpus folder {str(path)!r} holds no .txt files (found {shown})")
    h = hashlib.sha256()
    docs: list[str] = []
    for f in files:
        raw = f.read_bytes()
        h.update(raw)
        docs.extend(split_documents(clean_gutenberg(decode_text(raw, f, encoding)), fmt))
    if not docs:
        raise ValueError(f"corpus {str(name_or_path)!r} has no text (read {len(files)} file(s), all empty)")
    train, held = split_holdout(docs, holdout)
    return Corpus(str(name_or_path), path, train, held, h.hexdigest(), files, skipped)


def fetch_corpus(name: str, dest_dir: Path) -> Path:
    """Download a named corpus into ``dest_dir`` by its manifest recipe (needs internet).

    Gutenberg books and plain URLs are fetched with urllib; Hugging Face
    datasets need the ``datasets`` package.
    """
    entry = manifest()[name]
    recipe = entry["fetch"]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / entry["file"]
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
