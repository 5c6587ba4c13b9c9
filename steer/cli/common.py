"""What every command shares: the help formatter, the corpus and model help, how a command is added."""

from __future__ import annotations

import argparse
import sys

MODEL_HELP = ("model folder, GGUF file (or a folder holding one) or hub id ($STEER_MODEL if set, else "
              "TinyLlama-1.1B from the hub)")


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (unless there is none) and keeps the examples' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)



class Interrupted(Exception):
    """Ctrl-C, with what was kept and how to go on."""



def corpus_help() -> str:
    from steer.catalog import style_names

    return "corpus name (" + ", ".join(style_names()) + "), a text file, or a folder of .txt files"



def print_corpus(corpus) -> None:
    """Which files a corpus was read from, and which files of its folder were skipped."""
    shown = ", ".join(str(f) for f in corpus.files[:5]) + (f" and {len(corpus.files) - 5} more"
                                                          if len(corpus.files) > 5 else "")
    print(f"corpus {corpus.name}: {len(corpus.steer):,} documents to steer with, {len(corpus.judge):,} held out "
          f"for judging; "
          f"read {shown}", file=sys.stderr)
    if corpus.skipped:
        names = ", ".join(f.name for f in corpus.skipped[:10])
        print(f"corpus {corpus.name}: skipped {len(corpus.skipped)} file(s) that are not .txt: {names}",
              file=sys.stderr)



def add_command(sub, name: str, help: str, func, example: str | None = None, **kw) -> argparse.ArgumentParser:
    """A subcommand with its help, its example (shown after the options) and the function that runs it."""
    p = sub.add_parser(name, help=help, description=help, epilog=example, formatter_class=Formatter, **kw)
    p.set_defaults(func=func)
    return p
