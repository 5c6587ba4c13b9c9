"""Evaluation pairs for the edit tasks: sources with their references, from the shared edit sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class EditSet:
    """Sources and, per source, every human reference."""

    name: str
    task: str
    sources: list[str]
    references: list[list[str]]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (source, reference) pair."""
        return [(s, r) for s, refs in zip(self.sources, self.references, strict=True) for r in refs]


def edits_dir() -> Path:
    """``$STEER_EDITS_DIR``, else ``shared/data/edits`` beside the source checkout."""
    if os.environ.get("STEER_EDITS_DIR"):
        return Path(os.environ["STEER_EDITS_DIR"])
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "edits"


def _lines(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"edit set file {str(path)!r} not found (set STEER_EDITS_DIR)")
    return path.read_text(encoding="utf-8").rstrip("\n").split("\n")


def load_edit_set(name: str, split: str = "test", root: Path | None = None) -> EditSet:
    """One of ``jfleg`` (error correction; dev/test), ``asset`` (simplification; valid/test),
    ``turkcorpus`` (simplification; tune), ``mrpc`` (paraphrase; train/test, positive pairs)."""
    root = Path(root) if root is not None else edits_dir()
    if name == "jfleg":
        src = _lines(root / "jfleg" / split / f"{split}.src")
        refs = [_lines(root / "jfleg" / split / f"{split}.ref{k}") for k in range(4)]
        return EditSet(name, "gec", src, [list(r) for r in zip(*refs, strict=True)])
    if name == "asset":
        src = _lines(root / "asset" / f"asset.{split}.orig")
        refs = [_lines(root / "asset" / f"asset.{split}.simp.{k}") for k in range(10)]
        return EditSet(name, "simplify", src, [list(r) for r in zip(*refs, strict=True)])
    if name == "turkcorpus":
        src = _lines(root / "turkcorpus" / f"{split}.8turkers.tok.norm")
        refs = [_lines(root / "turkcorpus" / f"{split}.8turkers.tok.turk.{k}") for k in range(8)]
        return EditSet(name, "simplify", src, [list(r) for r in zip(*refs, strict=True)])
    if name == "mrpc":
        rows = _lines(root / "mrpc" / f"msr_paraphrase_{split}.txt")[1:]
        src, refs = [], []
        for row in rows:
            cols = row.split("\t")
            if len(cols) == 5 and cols[0].lstrip("\ufeff") == "1":
                src.append(cols[3])
                refs.append([cols[4]])
        return EditSet(name, "paraphrase", src, refs)
    raise ValueError(f"unknown edit set {name!r}: one of jfleg, asset, turkcorpus, mrpc")


ALL_SETS = [("jfleg", "dev"), ("jfleg", "test"), ("asset", "valid"), ("asset", "test"),
            ("turkcorpus", "tune"), ("mrpc", "train"), ("mrpc", "test")]
