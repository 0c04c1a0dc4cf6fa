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


def test_debug_works_after_the_subcommand_too(tmp_path, capsys, monkeypatch):
    """The internal-error line says "rerun with --debug"; `temdefect quantify … --debug` must
    then be accepted where the user naturally types it, and show the traceback."""
    from napari_temdefect.cli import quantify as quantify_cli

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(quantify_cli, "run", boom)
    args = ["quantify", str(tmp_path / "m.tif"), "--kind", "blobs", "--out", str(tmp_path / "o.csv")]
    assert main(args) == 1
    assert "rerun with --debug" in capsys.readouterr().err
    for debug_args in (["--debug", *args], [*args, "--debug"]):
        with pytest.raises(RuntimeError, match="a bug"):
            main(debug_args)


def test_existing_output_and_folder_messages(tmp_path, capsys):
    (tmp_path / "m.png").write_bytes(b"")
    (tmp_path / "o.csv").write_text("mine")
    assert main(["quantify", str(tmp_path / "m.png"), "--kind", "blobs", "--out",
                 str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "overwrite=True" in err
    (tmp_path / "dir.csv").mkdir()
    assert main(["quantify", str(tmp_path / "m.png"), "--kind", "blobs", "--out",
                 str(tmp_path / "dir.csv")]) == 2
    assert "is a folder" in capsys.readouterr().err  # not "exists; pass --overwrite"
    assert (tmp_path / "o.csv").read_text() == "mine"
