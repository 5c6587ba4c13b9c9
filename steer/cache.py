"""Where steer keeps what it builds once and reuses: tables, adapters, converted models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$STEER_CACHE_DIR`` if set, else ``~/.cache/steer``."""
    return Path(os.environ.get("STEER_CACHE_DIR") or Path.home() / ".cache" / "steer")
