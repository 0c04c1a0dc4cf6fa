"""Regenerate docs/cli.md from the real argparse help of every subcommand.

    python scripts/make_cli_docs.py          # rewrite docs/cli.md
    python scripts/make_cli_docs.py --check  # exit 1 if docs/cli.md is out of date (used by tests)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

INTRO = """# Command-line reference

`temdefect` runs the same core as the napari plugin, headless. Every command prints one line on
stderr and exits with a non-zero status on a user error (exit 2) or a failure (exit 1); `--debug`
shows the traceback. Existing outputs are never overwritten unless `--overwrite` is given.

This page is generated from the commands' own `--help` by `python scripts/make_cli_docs.py`;
a test fails when it is out of date.
"""


def render() -> str:
    os.environ["COLUMNS"] = "100"
    from napari_temdefect.cli.main import build_parser

    parser = build_parser()
    parts = [INTRO, "## temdefect\n", "```text\n" + parser.format_help().rstrip() + "\n```\n"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        parts.append(f"## temdefect {name}\n")
        parts.append("```text\n" + subparser.format_help().rstrip() + "\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date; run python scripts/make_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
