import os
import stat

import pytest

from napari_temdefect import TemDefectError
from napari_temdefect.files import atomic_write, write_text


def test_atomic_write_never_overwrites_silently(tmp_path):
    path = write_text(tmp_path / "a.csv", "one\n")
    with pytest.raises(TemDefectError, match="already exists"):
        write_text(path, "two\n")
    assert path.read_text() == "one\n"
    write_text(path, "two\n", overwrite=True)
    assert path.read_text() == "two\n"


def test_failed_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "b.csv"
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "c.csv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.chmod(path, 0o640)
    write_text(path, "y\n", overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_parent_that_is_a_file_is_one_sentence(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(TemDefectError, match="Cannot write .*choose another folder"):
        write_text(tmp_path / "file" / "sub.txt", "hi")
    assert (tmp_path / "file").read_text() == "mine"
