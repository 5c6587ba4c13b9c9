"""The manifest of named style corpora (source, licence, fetch recipe, local file name)."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST_PATH = Path(__file__).with_name("manifest.json")


def manifest() -> dict[str, dict]:
    """Name -> entry, as written in manifest.json."""
    with open(MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)["corpora"]


def style_names() -> list[str]:
    """Names of the style corpora (entries without a ``role``, such as the ``background`` text)."""
    return [name for name, entry in manifest().items() if "role" not in entry]
