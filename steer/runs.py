"""A run folder: one process at a time, and a config.json that must match to resume."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

LOCK_FILE = ".steer.lock"
OWNER_FILE = ".steer.owner"


class RunFolderBusyError(RuntimeError):
    """Another process holds the run folder."""


def read_jsonl(path) -> list[dict]:
    """The rows of a JSON-lines file: ``NAME`` or, where that is absent, its gzipped copy ``NAME.gz`` (as run
    folders are committed); a path ending in ``.gz`` is read gzipped. A line cut short by an interruption
    ends the rows."""
    path = Path(path)
    if path.suffix != ".gz" and not path.exists():
        path = path.with_name(path.name + ".gz")
    if not path.exists():
        return []
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by an interruption: drop it and what follows
    return rows


def write_jsonl(path, rows: list[dict]) -> None:
    """Write ``rows`` as JSON lines (gzipped when the name ends in ``.gz``), atomically: beside, then renamed."""
    path = Path(path)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    tmp.replace(path)


def normalise(config: dict) -> dict:
    """The config as it reads back from JSON (tuples become lists, keys become strings)."""
    return json.loads(json.dumps(config))


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like configs, sorted.

    Example:
        >>> config_diff({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": (1, 3)}})
        ['b.c']
    """
    old, new = normalise(old), normalise(new)
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            keys += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_config(path: Path, config: dict, defaults: dict | None = None, canonical=None) -> None:
    """Refuse to resume a run folder whose config.json describes another run.

    A top-level key that the stored config lacks is no difference when the
    requested value equals ``defaults[key]`` (a setting added to the library
    since the run began, left at its default). ``canonical`` (dict -> dict), if given, is applied
    to both configs first (e.g. to write option families out in full).

    Raises:
        ValueError: naming each differing key with its stored and requested value.
    """
    cfg_path = Path(path) / "config.json"
    if not cfg_path.exists():
        return
    try:
        old = json.loads(cfg_path.read_text(encoding="utf-8")).get("sweep", {})
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{str(cfg_path)!r} is not a steer config; use another --out or delete it") from None
    if canonical is not None:
        old, config = canonical(old), canonical(config)
    new_keys = {k for k in set(config) - set(old) if defaults and k in defaults and
                normalise(config[k]) == normalise(defaults[k])}
    diff = [k for k in config_diff(old, config) if k.split(".")[0] not in new_keys]
    if diff:
        def value(cfg, key):
            for part in key.split("."):
                cfg = cfg.get(part, "<missing>") if isinstance(cfg, dict) else "<missing>"
            return cfg

        new = normalise(config)
        details = "; ".join(f"{k}: {_show(value(old, k))} there, {_show(value(new, k))} now" for k in diff[:8])
        more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
        raise ValueError(
            f"{str(path)!r} holds a different sweep ({details}{more}); "
            "rerun with the same settings to resume, or use another --out"
        )


class RunLock:
    """An exclusive, non-blocking lock on a run folder, held by one process.

    The lock is an OS file lock (``filelock``), released when the process ends
    however it ends, so a crash never leaves a stale lock. The holder's process
    id is written beside it so that a refused process can say who holds it.

    Example:
        >>> with RunLock("runs/x"):  # doctest: +SKIP
        ...     ...                  # only this process writes runs/x
    """

    def __init__(self, folder):
        from filelock import FileLock

        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder / LOCK_FILE), timeout=0)

    def owner(self) -> str:
        try:
            return (self.folder / OWNER_FILE).read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            return "unknown"

    def __enter__(self) -> RunLock:
        from filelock import Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderBusyError(
                f"{str(self.folder)!r} is in use by process {self.owner()} (another run writing there); "
                "wait for it to finish or use another --out"
            ) from None
        (self.folder / OWNER_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        try:
            (self.folder / OWNER_FILE).unlink()
        except OSError:
            pass
        self._lock.release()
