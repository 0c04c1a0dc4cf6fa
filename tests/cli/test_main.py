import subprocess
import sys
from pathlib import Path

import pytest

from napari_temdefect import __version__
from napari_temdefect.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "usage: temdefect" in capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    from napari_temdefect.cli.main import SUBCOMMANDS, build_parser

    parser = build_parser()
    text = parser.format_help()
    for name in ("models", "gui"):
        assert name in text
    for name in SUBCOMMANDS:
        if name in text:
            with pytest.raises(SystemExit) as exc:
                main([name, "--help"])
            assert exc.value.code == 0


def test_console_script_errors_are_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "napari_temdefect.cli.main", "gui", "/definitely/missing.tif",
         "--sample", "none"],
        capture_output=True, text=True, timeout=120,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "missing.tif does not exist" in proc.stderr


def test_cli_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_cli_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
