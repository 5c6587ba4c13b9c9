"""The checks every options class and constructor repeats, written once: each names the argument and value.

Each returns the value in its canonical type (an int stays an int, a list of ints becomes a tuple) or
raises ``ValueError`` naming the argument in backticks. ``bool`` is never accepted as a number.

Example:
    >>> integer("segment", 64, low=1)
    64
    >>> number("lr", 0, low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `lr` must be a finite number > 0, got 0
"""

from __future__ import annotations

import math


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def boolean(name: str, value) -> bool:
    """``value`` if it is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return value


def integer(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
            high is not None and value > high):
        bounds = " and ".join(b for b in (f">= {low}" if low is not None else "",
                                           f"<= {high}" if high is not None else "") if b)
        raise ValueError(f"`{name}` must be an int{' ' + bounds if bounds else ''}, got {value!r}")
    return value


def number(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> float:
    """``value`` as a float if it is a finite number (not a bool) within the bounds (closed unless ``*_open``)."""
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bounds = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bounds = f" {'<' if high_open else '<='} {high:g}"
        else:
            bounds = ""
        raise ValueError(f"`{name}` must be a finite number{bounds}, got {value!r}")
    return float(value)


def choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        which = f"{choices[0]!r} or {choices[1]!r}" if len(choices) == 2 else f"one of {choices}"
        raise ValueError(f"`{name}` must be {which}, got {value!r}")
    return value


def text(name: str, value) -> str:
    """``value`` if it is a string."""
    if not isinstance(value, str):
        raise ValueError(f"`{name}` must be a string, got {value!r}")
    return value


def ints(name: str, value, low: int | None = None, length: int | None = None) -> tuple[int, ...]:
    """``value`` (a non-empty list or tuple of ints >= low, of ``length`` items if given) as a tuple."""
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not items or (length is not None and len(items) != length) or any(
            isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low) for v in items):
        size = f"{length} ints" if length is not None else "a non-empty list of ints"
        raise ValueError(f"`{name}` must be {size}{f' >= {low}' if low is not None else ''}, got {value!r}")
    return items


def numbers(name: str, value, low: float | None = None) -> tuple[float, ...]:
    """``value`` (a non-empty list or tuple of finite numbers >= low) as a tuple of floats."""
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not items or any(not _is_number(v) or not math.isfinite(v) or (low is not None and v < low) for v in items):
        raise ValueError(f"`{name}` must be a non-empty list of finite numbers"
                         f"{f' >= {low:g}' if low is not None else ''}, got {value!r}")
    return tuple(float(v) for v in items)


def texts(name: str, value) -> tuple[str, ...]:
    """``value`` (a non-empty list or tuple of strings) as a tuple."""
    items = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not items or any(not isinstance(v, str) for v in items):
        raise ValueError(f"`{name}` must be a non-empty list of strings, got {value!r}")
    return items
