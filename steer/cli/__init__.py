"""The `steer` command line: one module per command, over the library (the library never parses argv).

Method and decoding flags are generated from the option dataclasses (:mod:`steer.cli.flags`).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from steer.cli import attr, edits, generate, lora, sweep, tables, tune
from steer.cli.common import Formatter, Interrupted

COMMANDS = (tables, generate, sweep, tune, lora, attr, edits)


def build_parser() -> argparse.ArgumentParser:
    from steer import __version__

    parser = argparse.ArgumentParser(
        prog="steer", description="Decoding-time steering of frozen causal LMs with n-gram style priors.",
        epilog="Run `steer COMMAND --help` for a command's options and an example.", formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"steer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from steer.runs import RunFolderBusyError

    parser = build_parser()
    args = parser.parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None):  # one line, no source echo
        print(f"steer {args.command}: warning: {message}", file=sys.stderr)

    previous, warnings.showwarning = warnings.showwarning, show_warning
    try:
        return args.func(args)
    except Interrupted as err:
        print(f"\nsteer {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\nsteer {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, RunFolderBusyError) as err:
        print(f"steer {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous




if __name__ == "__main__":
    sys.exit(main())
