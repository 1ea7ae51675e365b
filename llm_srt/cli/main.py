"""The `llm-srt` command: translate or transcribe audio files, list the languages, serve, live subtitles.

Errors a user can make are reported as one line `llm-srt: error: ...` naming the thing at fault, never a Python
traceback: exit status 2 for bad usage (refused before any work starts), 1 for failed work, 130 when interrupted.
Only the command that runs imports what it needs (torch, transformers, the model): `llm-srt --help` is instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import languages, live, serve, translate
from .common import PROG
from .safe_io import run_reporting_errors


COMMANDS = {"translate": translate, "languages": languages, "serve": serve, "live": live}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="LLM-SRT speech translation and recognition.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad usage the parser can see: its own one-line message, exit 2
    return run_reporting_errors(PROG, lambda: COMMANDS[args.command].run(args))


__all__ = ["build_parser", "main"]
