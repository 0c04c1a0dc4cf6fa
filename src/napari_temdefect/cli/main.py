"""Entry point of the ``temdefect`` command.

Each subcommand lives in its own module of this package with two functions:
``add_parser(subparsers)`` (must stay light: no torch import at module level) and ``run(args)``
(returns an exit status). User errors (:class:`TemDefectError`) print one line on stderr and
exit 2; unexpected errors print one line and exit 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__
from ..errors import TemDefectError

#: Subcommand modules, in the order `--help` lists them.
SUBCOMMANDS = ("models", "predict", "analyze", "quantify", "evaluate", "finetune", "train", "gui")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="temdefect",
        description="Find and measure nanoscale defects in TEM images (napari-temdefect).",
    )
    parser.add_argument("--version", action="version", version=f"temdefect {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # subcommand not written yet
            raise
        command = module.add_parser(sub)
        # `temdefect train … --debug` as well as `temdefect --debug train …` (SUPPRESS: the
        # subcommand does not reset what the main parser set)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except TemDefectError as exc:
        print(f"temdefect: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("temdefect: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"temdefect: internal error: {type(exc).__name__}: {exc} "
              "(rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
