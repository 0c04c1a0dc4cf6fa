"""Writing files without losing what the user made.

Every file the project writes goes through :func:`atomic_write`: data land in a temporary file in
the same folder and are renamed into place only when complete, so a crash never leaves half a
CSV or checkpoint. An existing file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import TemDefectError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path, or raise if it exists and ``overwrite`` is False."""
    path = Path(path)
    if path.is_dir():
        raise TemDefectError(f"{path} is a folder; give a file name instead.")
    if path.exists() and not overwrite:
        raise TemDefectError(
            f"{path} already exists; choose another name, or replace it with --overwrite "
            "(overwrite=True in Python).")
    return path


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, overwrite: bool = False, suffix: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` keeps the extension that writers such as tifffile look at (default: path's own).
    """
    path = check_writable(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.",
            suffix=suffix if suffix is not None else path.suffix + ".tmp", dir=path.parent,
        )
    except OSError as exc:  # a parent that is a file, no permission, a full or read-only disk
        raise TemDefectError(
            f"Cannot write {path}: {exc.strerror or exc} ({exc.filename or path.parent}); "
            "choose another folder.") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.exists() and not overwrite:  # appeared while we were writing
            raise TemDefectError(f"{path} appeared while writing; nothing was replaced.")
        # mkstemp makes 0600 files; give the result the mode a plain open() would have
        # (or keep the mode of the file being replaced)
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Atomically write a text file (UTF-8, newline as given)."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(path)
