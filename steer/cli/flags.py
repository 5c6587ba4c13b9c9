"""Command-line flags derived from the option dataclasses (:mod:`steer.options`), not restated beside them.

Each field of a family becomes one flag: ``--{prefix}{name}`` with underscores as dashes (or its
``metadata["flag"]``), its help and default taken from the field. A flag left out is not set, so
the family's default applies; :func:`given` reads back the options a command line set.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields

_ITEM = {int: int, float: float, str: str}


class _Null:
    """``none`` on the command line: the option set to None (a flag left out is not set at all)."""

    def __repr__(self) -> str:
        return "none"


NULL = _Null()


def _unwrap(hint):
    """(the type without ``| None``, whether None is allowed)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _parser(name: str, hint):
    """The ``type=`` function of a flag for a field of type ``hint``, and its choices (or None)."""
    base, optional = _unwrap(hint)
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        return str, list(typing.get_args(base))
    if origin is tuple:
        item = _ITEM[typing.get_args(base)[0]]

        def items(text: str):
            if optional and text.strip().lower() == "none":
                return NULL
            try:
                return tuple(item(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise ValueError(f"`{name}` takes comma-separated {item.__name__}s, got {text!r}") from None

        return items, None
    single = _ITEM[base]

    def one(text: str):
        if optional and text.strip().lower() == "none":
            return NULL
        try:
            return single(text)
        except ValueError:
            raise ValueError(f"`{name}` takes a{'n' if single is int else ''} {single.__name__}, "
                             f"got {text!r}") from None

    return one, None


def flag_name(f, prefix: str = "") -> str:
    """The flag of dataclass field ``f`` (without the leading dashes)."""
    return f.metadata.get("flag") or prefix + f.name.replace("_", "-")


def _default_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_flags(parser, cls, prefix: str = "") -> None:
    """Add one flag per field of options class ``cls`` to ``parser``, named ``--{prefix}{field}``."""
    hints = typing.get_type_hints(cls)
    summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
    group = parser.add_argument_group(f"{cls.family} options", summary)
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        name = flag_name(f, prefix)
        help = f.metadata.get("help", "").replace("%", "%%")
        dest = f"{cls.family}__{f.name}"
        if hints[f.name] is bool:
            # A switch turns the option to the opposite of its default.
            help += f" (default: {'on' if default else 'off'})"
            group.add_argument(f"--{name}", dest=dest, action="store_const", const=not default, default=None,
                               help=help)
            continue
        # The text is converted by given(), so that a bad value is an error of the command, not of argparse.
        _, choices = _parser(f.name, hints[f.name])
        group.add_argument(f"--{name}", dest=dest, choices=choices, default=None,
                           metavar=f.metadata.get("metavar") or (None if choices else f.name.upper()),
                           help=f"{help} (default: {_default_text(default)})")


def given(args, cls) -> dict:
    """The options of family ``cls`` the command line set."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        value = getattr(args, f"{cls.family}__{f.name}", None)
        if isinstance(value, str):
            value = _parser(f.name, hints[f.name])[0](value)
        if value is not None:
            out[f.name] = None if value is NULL else value
    return out


def options(args, cls):
    """The options of family ``cls``: those the command line set, the others at their defaults."""
    return cls.from_dict(given(args, cls))
