"""Option families: exact JSON round trips, unknown keys and bad values refused by name, each option defined once."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from steer.checks import integer, ints, number
from steer.options import ActivationOptions, GuidedOptions, Options, families

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(families()))
def test_every_family_round_trips_exactly_through_json(name):
    cls = families()[name]
    default = cls()
    assert cls.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    assert default.changed() == {}
    for f in fields(cls):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help"
        assert f.default is not MISSING, f"{name}.{f.name} has no default"


def test_changed_values_round_trip_and_keep_their_canonical_types():
    opts = ActivationOptions.from_dict({"layers": [3, 5], "scale": 1, "normalise": False})
    assert opts.layers == (3, 5) and opts.scale == 1.0 and isinstance(opts.scale, float)
    assert opts.changed() == {"layers": [3, 5], "scale": 1.0, "normalise": False}
    assert ActivationOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts


@pytest.mark.parametrize("bad, match", [
    ({"plausibility": 0}, "`plausibility`"), ({"plausibility": 1.5}, "`plausibility`"), ({"clip": -1.0}, "`clip`"),
    ({"kl_max_lam": float("inf")}, "`kl_max_lam`"), ({"centre": 1}, "`centre`"), ({"fresh": True}, "`fresh`"),
    ({"fresh": 2.0}, "`fresh`"), ({"alpha": 0.1}, "unknown options"), ("x", "must be an object"),
])
def test_bad_options_are_refused_with_the_family_and_the_argument(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        GuidedOptions.from_dict(bad)
    assert "`guided`" in str(err.value)


def test_checks_name_the_argument_and_the_value():
    assert integer("n", 3, low=1) == 3 and ints("layers", [1, 2]) == (1, 2) and number("x", 2) == 2.0
    for call, match in [(lambda: integer("n", True), "`n` must be an int, got True"),
                        (lambda: number("lr", float("nan"), 0, low_open=True), "`lr` must be a finite number > 0"),
                        (lambda: ints("layers", [], low=0), "`layers` must be a non-empty list")]:
        with pytest.raises(ValueError, match=re.escape(match)):
            call()


def test_no_options_dict_with_defaults_remains():
    """Options are dataclass fields: no ``*_DEFAULTS`` dict and no hand-written options validator is left."""
    offenders = []
    for path in (ROOT / "steer").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {m}" for m in re.findall(r"^([A-Z_]+_DEFAULTS)\s*=", text, re.M)]
        offenders += [f"{path.name}: {m}" for m in re.findall(r"^def (\w+_options)\(options: dict", text, re.M)]
    assert offenders == []


def test_every_method_and_decoding_flag_comes_from_a_dataclass_field():
    """Each option flag of `steer generate` and `steer sweep` is generated from its field (help and default
    included), and every field of every family has its flag there."""
    from steer.cli import build_parser
    from steer.cli.flags import flag_name
    from steer.cli.generate import PREFIXES

    parser = build_parser()
    commands = {a.dest: a for a in parser._subparsers._group_actions}["command"].choices
    for command in ("generate", "sweep"):
        actions = {a.dest: a for a in commands[command]._actions}
        for name, cls in families().items():
            if command == "generate" and name == "lora":
                continue  # generate trains no adapter
            for f in fields(cls):
                action = actions[f"{name}__{f.name}"]
                assert action.option_strings == [f"--{flag_name(f, PREFIXES[name])}"]
                assert action.help.startswith(f.metadata["help"].replace("%", "%%")), (command, name, f.name)
                assert action.default is None  # left out: the field's default applies
        owned = {d for d in actions if "__" in d}
        option_like = {d for d, a in actions.items() if a.option_strings and d not in owned}
        # What is left is the command's own (model, corpus, run folder...), never a method or decoding option.
        every_field = {f.name for cls in families().values() for f in fields(cls)}
        assert not option_like & every_field, (command, option_like & every_field)


def test_options_base_is_the_only_json_form():
    assert all(issubclass(cls, Options) for cls in families().values())
