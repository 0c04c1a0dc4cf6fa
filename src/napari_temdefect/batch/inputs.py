"""Turning what the user typed (files, folders, globs) into a sorted list of micrographs.

Folders are scanned for files whose extension a reader knows (non-recursively unless
``recursive=True``); a ``.zarr`` folder is one image (a montage). Anything else inside a folder or
matched by a glob is skipped with a note, never silently. A file named explicitly is always kept:
if it cannot be read the batch reports it as a failure with the reason.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TemDefectError
from ..io import SUPPORTED_EXTENSIONS

#: Extensions of the micrograph formats that io.read_image reads (lower case).
IMAGE_SUFFIXES = tuple(SUPPORTED_EXTENSIONS)
#: Folder suffixes that hold one (possibly huge) image: processed block by block.
ARRAY_FOLDER_SUFFIXES = (".zarr",)
_GLOB_CHARS = set("*?[")


@dataclass
class ExpandedInputs:
    """The micrographs to process, in order, and what was left out (with the reason)."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def is_image_file(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return path.suffix.lower() in ARRAY_FOLDER_SUFFIXES
    name = path.name.lower()
    if name.startswith("."):  # hidden files, partial downloads, our own temporary files
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES


def _within(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _scan_folder(folder: Path, recursive: bool, exclude: Path | None, out: ExpandedInputs):
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    for entry in entries:
        if _within(entry, exclude):
            continue
        if recursive and any(p.suffix.lower() in ARRAY_FOLDER_SUFFIXES
                             for p in entry.relative_to(folder).parents if p != Path(".")):
            continue  # the inside of a .zarr store
        if entry.is_dir() and entry.suffix.lower() not in ARRAY_FOLDER_SUFFIXES:
            if not recursive:
                out.skipped.append((entry, "a sub-folder (pass --recursive to include it)"))
            continue
        if is_image_file(entry):
            out.paths.append(entry)
        elif not entry.name.startswith("."):
            out.skipped.append((entry, "not a micrograph format that napari-temdefect reads"))


def expand_inputs(inputs, recursive: bool = False, exclude=None) -> ExpandedInputs:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of images.

    ``exclude`` is a folder (the output folder) whose contents are never taken as input. An
    input inside it (``temdefect analyze raw --out .``) is scanned, leaving out only the
    folder's ``images/`` (what a batch writes there).
    Raises :class:`TemDefectError` when an input does not exist or nothing is left to process.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    exclude = Path(exclude) if exclude is not None else None
    found = ExpandedInputs()
    for item in inputs:
        text = os.path.expanduser(str(item))
        path = Path(text)
        if path.exists():
            if path.is_dir() and path.suffix.lower() not in ARRAY_FOLDER_SUFFIXES:
                inside = exclude is not None and _within(path, exclude)
                _scan_folder(path, recursive, exclude / "images" if inside else exclude,
                             found)
            else:
                found.paths.append(path)  # named explicitly: kept, failures reported later
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=recursive))
            if not matches:
                raise TemDefectError(f"The pattern {text!r} matches no file; check the path "
                                     "(quote it so the shell does not expand it).")
            for match in map(Path, matches):
                if _within(match, exclude):
                    continue
                if match.is_dir() and match.suffix.lower() not in ARRAY_FOLDER_SUFFIXES:
                    _scan_folder(match, recursive, exclude, found)
                elif is_image_file(match):
                    found.paths.append(match)
                else:
                    found.skipped.append((match, "not a micrograph format that "
                                                 "napari-temdefect reads"))
        else:
            raise TemDefectError(f"{text} does not exist; check the path.")
    seen, unique = set(), []
    for path in found.paths:
        key = os.path.normcase(str(path.resolve()))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    found.paths = sorted(unique, key=lambda p: (str(p.parent), p.name))
    if not found.paths:
        raise TemDefectError("No micrographs found in the inputs; give image files "
                             f"({', '.join(IMAGE_SUFFIXES[:6])}, …), folders that hold them, "
                             "or a glob.")
    return found


def output_names(paths) -> list[str]:
    """A unique, file-system-safe output name per input, stable for a given input list.

    The file stem, unless two inputs share it: then the extension and, if needed, the
    parent folders are added (``a/img.tif`` and ``b/img.tif`` → ``a__img_tif``, ``b__img_tif``).
    """
    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]
    for attempt in range(1, 12):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        clashes = {n for n, c in counts.items() if c > 1}
        if not clashes:
            break
        for i, p in enumerate(paths):
            if names[i] in clashes:
                if attempt == 1:
                    names[i] = f"{p.stem}_{p.suffix.lstrip('.').lower()}"
                else:
                    parts = p.resolve().parts[-(attempt):-1]
                    names[i] = "__".join((*parts, names[i].split("__")[-1]))
    else:  # pragma: no cover - paranoid fallback
        names = [f"{i:05d}_{n}" for i, n in enumerate(names)]
    return ["".join(c if (c.isalnum() or c in "-_.") else "_" for c in n) for n in names]
