"""Serial batch runs: read → predict → quantify → write, one micrograph after another.

Layout of the output folder (``out``)::

    out/
      summary.csv        one row per image (and kind) for the whole batch
      objects.csv        every object of every image (the per-image tables, concatenated)
      failures.csv       image, file, error: only when something failed in the last run
      batch.log          one line per image and run (done / skipped / FAILED: reason)
      run.json           the settings of the batch (model checksum, kind, threshold, …)
      images/<name>/     <name>_mask.tif (uint8 class map), <name>_labels.tif (instances),
                         <name>_probability.tif, <name>_confidence.tif, <name>_objects.csv,
                         <name>_summary.csv, done.json (montages: <name>_mask.zarr,
                         <name>_confidence.zarr, <name>_probability.zarr instead of TIFFs)

Resuming: ``done.json`` is written last, atomically, and records the input file's size and
modification time and the settings; an image with a valid ``done.json`` is skipped unless
``overwrite``. An image interrupted half-way has no ``done.json`` and is redone. While a run goes
on, rows are appended to ``summary.partial.csv`` and ``objects.partial.csv`` as images finish;
at the end ``summary.csv`` and ``objects.csv`` are rebuilt in input order from the per-image
files, so they always cover the whole batch, done now or earlier (and equal a serial run's).

A file that fails (unreadable, wrong shape, …) is logged with its reason and the batch goes on;
:attr:`BatchResult.ok` is False and the CLI exits with status 1.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io as _io
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import CancelledError, TemDefectError
from ..files import atomic_write, write_text
from .inputs import expand_inputs, output_names

IMAGES_DIR = "images"
MARKER = "done.json"
SUMMARY_CSV = "summary.csv"
OBJECTS_CSV = "objects.csv"
FAILURES_CSV = "failures.csv"
LOG_FILE = "batch.log"
RUN_JSON = "run.json"
MARKER_VERSION = 1
#: settings that change results; a batch folder made with other values is not resumed
RESULT_KEYS = ("model_sha256", "kind", "pixel_size_nm", "thickness_nm", "tile", "overlap", "tta",
               "threshold", "min_size_px", "split_touching", "class_name", "block", "halo",
               "invert")
#: result settings added later: a run.json written before them was made with these values
LATER_KEYS = {"invert": False}


@dataclass
class BatchSettings:
    """What to run on every image. ``model`` is a bundled name, a checkpoint path or a Model."""

    model: object
    kind: str = "blobs"
    pixel_size_nm: float | None = None   # overrides every file's calibration when given
    thickness_nm: float | None = None
    tile: int | None = None
    overlap: int | None = None
    tta: bool = False
    #: invert the contrast before the model (over-focus bubbles with the bundled bubble model)
    invert: bool = False
    #: None: the model's operating threshold (resolved once, before any image is done)
    threshold: float | None = None
    device: str | None = None
    batch_size: int | None = None
    min_size_px: int | None = None       # None: quantify's default
    #: watershed split of touching blobs; None: what the model records (the bundled bubble
    #: model: split), resolved once like the threshold
    split_touching: bool | None = None
    class_name: str | None = None        # which model class to quantify (default: the first)
    save_probability: bool = True
    overwrite: bool = False
    #: images with more pixels than this (or .zarr folders) are processed block by block
    montage_min_pixels: int = 8192 * 8192
    block: int = 4096
    halo: int = 128

    def result_key(self, model_sha256: str) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k in RESULT_KEYS}
        d["model_sha256"] = model_sha256
        return d

    def check(self) -> None:
        """One sentence for a setting that would fail on every image, before any work (the
        tile, overlap, batch size, sizes, blocks, and the class name against the model)."""
        from ..inference.tiling import resolve_overlap

        auto = (None, 0, "auto")
        tile = None if self.tile in auto else int(self.tile)
        if tile is not None and tile < 32:
            raise TemDefectError(f"Tile size {self.tile} px is too small; use at least 32 px "
                                 "(or leave it out for auto).")
        if self.overlap not in (None, "auto"):
            resolve_overlap(self.overlap, tile or 512)
            rounded = None if tile is None else -(-tile // 32) * 32  # as plan_tiles rounds it
            if rounded and float(self.overlap) >= 1 and float(self.overlap) > rounded // 2:
                raise TemDefectError(f"Overlap {self.overlap} px is more than half the tile "
                                     f"({rounded} px); use less.")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise TemDefectError(f"The batch size {self.batch_size} is invalid; use 1 or more.")
        if self.min_size_px is not None and int(self.min_size_px) < 0:
            raise TemDefectError(f"The minimum size {self.min_size_px} px is negative; give 0 "
                                 "or more pixels.")
        if int(self.block) < 64 or int(self.halo) < 0:
            raise TemDefectError(f"Block {self.block} px / halo {self.halo} px are invalid; use "
                                 "a block of at least 64 px and a halo of 0 or more.")
        if self.class_name is not None:
            from ..models import model_classes

            classes = model_classes(self.model)
            if classes and self.class_name not in classes:
                raise TemDefectError(f"The model has no class {self.class_name!r}; use one of "
                                     f"{', '.join(classes)} (--class).")

    def to_worker(self) -> dict:
        """The settings as plain data (for Dask workers); the model travels separately."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}


@dataclass
class ImageOutcome:
    """What one image gave: small tables only (never the image), so it can travel back."""

    name: str
    path: str
    status: str                      # "done" | "skipped" | "failed"
    error: str | None = None
    summary: object = None           # pandas.DataFrame (one row per kind) or None
    objects: object = None           # pandas.DataFrame or None
    seconds: float = 0.0
    worker: str | None = None        # process that did it (pid@host)
    model_loads: int = 0             # how many times that process has loaded the model
    note: str | None = None          # e.g. the image is far from the model's magnification


@dataclass
class BatchResult:
    out_dir: Path
    total: int
    done: list = field(default_factory=list)      # names processed in this run
    skipped: list = field(default_factory=list)   # names already done before
    failed: list = field(default_factory=list)    # (name, path, reason)
    ignored: list = field(default_factory=list)   # (path, reason): inputs that are not images
    summary_path: Path | None = None
    objects_path: Path | None = None
    failures_path: Path | None = None
    seconds: float = 0.0
    #: process that did the work -> {"images": n, "model_loads": times it loaded the model}
    workers: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------- helpers

def _is_model(obj) -> bool:
    return hasattr(obj, "module") and hasattr(obj, "spec")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def model_reference(model) -> tuple[str | None, str]:
    """(a name or path that a worker can load, sha256 of the weights) for a model argument."""
    if _is_model(model):
        import numpy as np

        h = hashlib.sha256()
        for key, value in sorted(model.module.state_dict().items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(value.detach().cpu().float().numpy()).tobytes())
        return None, h.hexdigest()
    from ..models import bundled_paths, checkpoint_path

    text = str(model).strip()
    path, _ = checkpoint_path(text)  # one sentence for an unknown name or a missing file
    return (text if text in bundled_paths() else str(path.resolve())), sha256_file(path)


def image_dir(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / IMAGES_DIR / name


def _source_stamp(path: Path) -> dict:
    p = Path(path)
    if p.is_dir():  # a zarr store: every file, chunks included (zarr 3 keeps them in c/,
        # OME-Zarr in 0/; the top-level metadata does not change when the data is rewritten)
        stats = [f.stat() for f in sorted(p.rglob("*")) if f.is_file()]
        return {"size": sum(s.st_size for s in stats),
                "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
    st = p.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_marker(out_dir: Path, name: str) -> dict | None:
    try:
        return json.loads((image_dir(out_dir, name) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_done(out_dir: Path, name: str, path: Path, result_key: dict,
            probability: bool = False, this_run: bool = True) -> tuple[bool, str]:
    """Whether ``name`` has complete outputs for this input and these settings (and why not).

    ``probability``: the run asks for the probability map, so a marker without one is not
    done. ``this_run=False`` (an image that only an earlier run named): its marker and outputs
    decide; the input file may have been moved or archived since."""
    marker = read_marker(out_dir, name)
    if marker is None:
        return False, "not processed yet"
    settings = marker.get("settings")
    if isinstance(settings, dict):
        settings = {**LATER_KEYS, **settings}  # a marker from before a setting existed
    if marker.get("version") != MARKER_VERSION or settings != result_key:
        return False, "made with other settings"
    try:
        if marker.get("source") != _source_stamp(path):
            return False, "the input file changed since it was processed"
    except OSError:
        if this_run:
            return False, "the input file cannot be read"
    outputs = marker.get("outputs", [])
    if probability and this_run and not any("_probability." in f for f in outputs):
        return False, "the probability map was not saved then"
    folder = image_dir(out_dir, name)
    missing = [f for f in outputs if not (folder / f).exists()]
    if missing:
        return False, f"output {missing[0]} is missing"
    return True, "already done"


# ----------------------------------------------------------------------------- one image

def _tiff_shape(path: Path):
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tuple(tif.series[0].shape)
    except Exception:  # unreadable: let read_image report it properly
        return None


def is_montage(path: Path, settings: BatchSettings) -> bool:
    """A .zarr folder, or a TIFF with more pixels than ``settings.montage_min_pixels``."""
    path = Path(path)
    if path.is_dir():
        return True
    shape = _tiff_shape(path)
    if shape is None or len(shape) < 2:
        return False
    h, w = (shape[-3], shape[-2]) if shape[-1] in (3, 4) and len(shape) >= 3 else shape[-2:]
    return int(h) * int(w) > settings.montage_min_pixels


def class_index(model, class_name: str | None) -> int:
    classes = list(model.spec.classes)
    if class_name is None:
        return 0
    if class_name not in classes:
        raise TemDefectError(f"The model has no class {class_name!r}; use one of "
                             f"{', '.join(classes)}.")
    return classes.index(class_name)


def _with_file_column(summary, path: Path):
    summary = summary.copy()
    summary.insert(1, "file", str(path))
    return summary


def process_image(path, name: str, model, settings: BatchSettings, out_dir,
                  result_key: dict) -> ImageOutcome:
    """Predict and quantify one micrograph and write its outputs (marker last).

    ``result_key`` (``settings.result_key(sha)``) goes into the marker so that a later run
    with other settings does not take these outputs for its own.

    Never raises for a bad file: the failure comes back as an outcome with its reason.
    """
    path, out_dir = Path(path), Path(out_dir)
    start = time.perf_counter()
    folder = image_dir(out_dir, name)
    if settings.split_touching is None:  # run_batch resolves it; a direct call may not
        settings = dataclasses.replace(settings, split_touching=model.split_touching)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).unlink(missing_ok=True)  # not done until the marker is back
        stamp = _source_stamp(path)
        if is_montage(path, settings):
            from .montage import process_montage

            summary, objects, outputs = process_montage(path, name, model, settings, folder)
            read_notes = []
        else:
            summary, objects, outputs, read_notes = _process_in_memory(path, name, model,
                                                                       settings, folder)
        summary = _with_file_column(summary, path)
        from ..quantify.tables import write_csv

        write_csv(objects, folder / f"{name}_{OBJECTS_CSV}", overwrite=True)
        write_csv(summary, folder / f"{name}_{SUMMARY_CSV}", overwrite=True)
        seconds = time.perf_counter() - start
        marker = {
            "version": MARKER_VERSION, "image": name, "file": str(path), "source": stamp,
            "settings": result_key,
            "outputs": [*outputs, f"{name}_{OBJECTS_CSV}", f"{name}_{SUMMARY_CSV}"],
            "objects": int(len(objects)),
            "seconds": round(seconds, 3), "finished": datetime.now().isoformat(timespec="seconds"),
        }
        write_text(folder / MARKER, json.dumps(marker, indent=1), overwrite=True)
        return ImageOutcome(name, str(path), "done", summary=summary, objects=objects,
                            seconds=seconds,
                            note="; ".join(n for n in [_scale_note(model, summary), *read_notes]
                                           if n) or None)
    except CancelledError:
        raise
    except TemDefectError as exc:
        reason = str(exc)
    except MemoryError:
        reason = ("ran out of memory; lower --tile or let larger images go through the "
                  "block-wise montage path")
    except Exception as exc:  # a bug or an unreadable file: one line, traceback to stderr
        traceback.print_exc(file=sys.stderr)
        reason = f"{type(exc).__name__}: {exc}"
    try:
        folder.rmdir()  # leave no empty folder behind for a file that failed at once
    except OSError:
        pass
    return ImageOutcome(name, str(path), "failed", error=reason,
                        seconds=time.perf_counter() - start)


def _process_in_memory(path: Path, name: str, model, settings: BatchSettings, folder: Path):
    import numpy as np

    from ..inference import predict
    from ..io import model_tags, non_square_note, read_image, threshold_tags, write_tiff
    from ..preprocess import as_2d_image
    from ..quantify import quantify

    mic = read_image(path)
    image = as_2d_image(mic.data, name=f"image {path.name}")
    pixel_size = settings.pixel_size_nm if settings.pixel_size_nm is not None \
        else mic.pixel_size_nm
    k = class_index(model, settings.class_name)
    result = predict(model, image, tile=settings.tile, overlap=settings.overlap,
                     tta=settings.tta, threshold=settings.threshold, device=settings.device,
                     batch_size=settings.batch_size, invert=settings.invert)
    mask = (result.mask == k + 1) if result.probability.shape[0] > 1 else result.mask > 0
    kwargs = {} if settings.min_size_px is None else {"min_size_px": settings.min_size_px}
    quant = quantify(mask.astype(np.uint8), settings.kind, pixel_size,
                     probability=result.probability[k], confidence=result.confidence,
                     thickness_nm=settings.thickness_nm, threshold=settings.threshold,
                     split_touching=settings.split_touching, image_name=name, **kwargs)
    outputs = {f"{name}_mask.tif": result.mask,
               f"{name}_confidence.tif": result.confidence}
    labels = np.asarray(quant.labels)
    outputs[f"{name}_labels.tif"] = labels.astype(
        np.uint16 if labels.max(initial=0) < 65535 else np.uint32)
    if settings.save_probability:
        outputs[f"{name}_probability.tif"] = result.probability.astype(np.float32)
    # the probability map records where it was cut, so `temdefect quantify` cuts it the same way
    classes = model.spec.classes
    split = model.split_touching
    tags = {f"{name}_probability.tif": threshold_tags(result.threshold, model.name, classes,
                                                      split),
            f"{name}_mask.tif": model_tags(model.name, classes, split)}
    for file_name, array in outputs.items():
        write_tiff(folder / file_name, array, pixel_size_nm=pixel_size, overwrite=True,
                   tags=tags.get(file_name))
    outputs = list(outputs)
    # what the reader noted that changes the numbers: non-square pixels (x size used)
    read_notes = [n for n in [non_square_note(mic)] if n]
    return quant.summary, quant.objects, outputs, read_notes


# ----------------------------------------------------------------------------- batch tables

class _LiveCsv:
    """``<stem>.partial.csv``: grows as results arrive (header: the first table's columns).

    Removed once the final CSV has been rebuilt; left behind only if the run was killed.
    """

    def __init__(self, path: Path):
        self.path = Path(path).with_name(Path(path).stem + ".partial.csv")
        self.columns = None
        self._file = open(self.path, "w", encoding="utf-8", newline="")

    def append(self, df) -> None:
        if df is None:
            return
        if self.columns is None:
            self.columns = list(df.columns)
            self._file.write(",".join(_quote(c) for c in self.columns) + "\n")
        df.reindex(columns=self.columns).to_csv(
            self._file, header=False, index=False, na_rep="", float_format="%.10g",
            lineterminator="\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _quote(text: str) -> str:
    buf = _io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def concat_csvs(parts: Iterable[Path], dest: Path) -> int:
    """Concatenate per-image CSVs into ``dest`` (atomically), one file in memory at a time.

    Columns are the union in first-seen order (calibrated and uncalibrated images give ``_nm``
    and ``_px`` columns); a part whose header already matches is copied byte for byte.
    Returns the number of parts written.
    """
    parts = [Path(p) for p in parts if Path(p).is_file()]
    columns: list[str] = []
    headers = []
    for part in parts:
        with open(part, encoding="utf-8", newline="") as f:
            header = next(csv.reader([f.readline()]), [])
        headers.append(header)
        columns += [c for c in header if c not in columns]
    with atomic_write(dest, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for part, header in zip(parts, headers):
                text = part.read_text(encoding="utf-8")
                body = text.split("\n", 1)[1] if "\n" in text else ""
                if header == columns:
                    out.write(body if body.endswith("\n") or not body else body + "\n")
                    continue
                for row in csv.DictReader(_io.StringIO(text)):
                    writer.writerow([row.get(c, "") for c in columns])
    return len(parts)


def _scale_note(model, summary) -> str | None:
    """The magnification note (:func:`..inference.scale_mismatch`) for a finished image."""
    from ..inference.scale import scale_mismatch

    try:
        px = summary["pixel_size_nm"].iloc[0]  # NaN when uncalibrated: no note
    except (KeyError, IndexError):
        return None
    return scale_mismatch(model.spec.pixel_size_nm, px)


def _log_line(log, status: str, name: str, detail: str) -> None:
    stamp = datetime.now().isoformat(timespec="seconds")
    log.write(f"{stamp}  {status:<8} {name}  {detail}\n")
    log.flush()


def _check_run_file(out_dir: Path, key: dict, overwrite: bool) -> None:
    run_file = out_dir / RUN_JSON
    if run_file.exists() and not overwrite:
        try:
            old = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
        except ValueError:
            old = {}
        old = {**LATER_KEYS, **old}
        changed = [k for k in RESULT_KEYS if old.get(k) != key.get(k)]
        if changed:
            what = ", ".join(f"{k} {old.get(k)!r} → {key.get(k)!r}" for k in changed[:3])
            raise TemDefectError(
                f"{out_dir} holds results made with other settings ({what}); pass --overwrite "
                "to redo them all or choose another --out folder."
            )


def _check_not_foreign(out_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that holds a summary.csv / objects.csv that no batch wrote (no run.json):
    the batch tables would replace the user's files."""
    if overwrite or (out_dir / RUN_JSON).exists():
        return
    for name in (SUMMARY_CSV, OBJECTS_CSV):
        if (out_dir / name).exists():
            raise TemDefectError(
                f"{out_dir / name} exists and is not from a temdefect analyze batch; choose a "
                "new --out folder (or pass --overwrite to replace it).")


def _with_earlier_images(out_dir: Path, paths, names):
    """(this run's output names, the folder's whole batch as (input, name) pairs in order).

    The folder is one batch: its tables keep the images that earlier runs put into it (when
    their outputs are still complete for these settings; :func:`_finish` checks), in the order
    they came, then this run's new ones. An input seen before keeps its earlier name; a new one
    that would take an earlier image's name gets ``-2``, ``-3``… (``a/img.tif`` then
    ``b/img.tif``: ``img``, ``img-2``), so it never lands in another image's folder."""
    try:
        record = json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))
        pairs = [(Path(p), str(n)) for p, n in zip(record.get("inputs", []),
                                                   record.get("names", []))]
    except (OSError, ValueError, TypeError):
        pairs = []

    def key(path):
        return os.path.normcase(str(Path(path).resolve()))

    before = {key(p): n for p, n in pairs}
    used = set(before.values())
    out = []
    for path, name in zip(paths, names):
        if key(path) in before:
            out.append(before[key(path)])
            continue
        new, k = name, 1
        while new in used:
            k += 1
            new = f"{name}-{k}"
        used.add(new)
        out.append(new)
    current = {key(p): (p, n) for p, n in zip(paths, out)}
    batch = [current.pop(key(p), (p, n)) for p, n in pairs]
    return out, batch + list(current.values())


# ----------------------------------------------------------------------------- the batch

def run_batch(inputs, out_dir, settings: BatchSettings, *, scheduler=None, recursive=False,
              progress: bool = True) -> BatchResult:
    """Process every micrograph in ``inputs`` (files, folders, globs) into ``out_dir``.

    ``scheduler``: None (serial, in this process), ``"local"``/``"local:N"`` (a Dask
    LocalCluster of N single-threaded worker processes), ``"tcp://host:port"`` (an existing
    Dask scheduler) or a ``distributed.Client``. Both give the same files.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise TemDefectError(f"--out {out_dir} is a file; give a folder for the results.")
    settings.check()
    found = expand_inputs(inputs, recursive=recursive, exclude=out_dir)
    names = output_names(found.paths)
    ref, sha = model_reference(settings.model)
    if settings.threshold is None:
        from ..models import model_threshold

        settings = dataclasses.replace(settings, threshold=model_threshold(settings.model))
    if settings.split_touching is None:
        from ..models import model_split_touching

        settings = dataclasses.replace(
            settings, split_touching=model_split_touching(settings.model))
    key = settings.result_key(sha)
    _check_run_file(out_dir, key, settings.overwrite)
    _check_not_foreign(out_dir, settings.overwrite)
    names, batch = (names, list(zip(found.paths, names))) if settings.overwrite else \
        _with_earlier_images(out_dir, found.paths, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / RUN_JSON, json.dumps({
        "settings": key, "model": ref or getattr(settings.model, "name", "model"),
        # absolute, so that a later run from another working directory finds them again
        "inputs": [str(Path(p).resolve()) for p, _ in batch], "names": [n for _, n in batch],
        "started": datetime.now().isoformat(timespec="seconds"),
    }, indent=1), overwrite=True)

    result = BatchResult(out_dir=out_dir, total=len(names), ignored=list(found.skipped))
    todo = []
    for path, name in zip(found.paths, names):
        done, _why = (False, "") if settings.overwrite else is_done(
            out_dir, name, path, key, probability=settings.save_probability)
        (result.skipped.append(name) if done else todo.append((path, name)))

    from tqdm.auto import tqdm

    bar = tqdm(total=len(names), unit="image", file=sys.stderr, disable=not progress,
               desc="temdefect", dynamic_ncols=True)
    summary_live = _LiveCsv(out_dir / SUMMARY_CSV)
    objects_live = _LiveCsv(out_dir / OBJECTS_CSV)
    try:
        with open(out_dir / LOG_FILE, "a", encoding="utf-8") as log:
            for path, reason in found.skipped:
                _log_line(log, "ignored", str(path), reason)
            for name in result.skipped:
                _log_line(log, "skipped", name, "already done (--overwrite redoes it)")
                bar.update(1)
            outcomes = _run_serial(todo, settings, out_dir, key) if scheduler is None else \
                _run_dask(todo, settings, out_dir, key, scheduler, ref)
            for outcome in outcomes:
                seen = result.workers.setdefault(outcome.worker, {"images": 0, "model_loads": 0})
                seen["images"] += 1
                seen["model_loads"] = max(seen["model_loads"], outcome.model_loads)
                if outcome.status == "done":
                    result.done.append(outcome.name)
                    summary_live.append(outcome.summary)
                    objects_live.append(outcome.objects)
                    n = 0 if outcome.objects is None else len(outcome.objects)
                    _log_line(log, "done", outcome.name, f"({outcome.seconds:.1f} s, {n} objects)"
                              + (f"; note: {outcome.note}" if outcome.note else ""))
                    if outcome.note:
                        bar.write(f"temdefect: note: {outcome.path}: {outcome.note}",
                                  file=sys.stderr)
                else:
                    result.failed.append((outcome.name, outcome.path, outcome.error))
                    _log_line(log, "FAILED", outcome.name, f"{outcome.path}: {outcome.error}")
                    bar.write(f"temdefect: {outcome.path} failed: {outcome.error}",
                              file=sys.stderr)
                bar.update(1)
    finally:
        bar.close()
        summary_live.close()
        objects_live.close()
        _finish(result, batch, out_dir, key, set(names))
        summary_live.remove()
        objects_live.remove()
    result.seconds = time.perf_counter() - start
    return result


def _finish(result: BatchResult, jobs, out_dir: Path, key: dict, current: set) -> None:
    """Rebuild the batch CSVs in input order from every image that has complete outputs."""
    complete = [n for p, n in jobs
                if is_done(out_dir, n, p, key, this_run=n in current)[0]]
    if complete:
        concat_csvs([image_dir(out_dir, n) / f"{n}_{SUMMARY_CSV}" for n in complete],
                    out_dir / SUMMARY_CSV)
        concat_csvs([image_dir(out_dir, n) / f"{n}_{OBJECTS_CSV}" for n in complete],
                    out_dir / OBJECTS_CSV)
        result.summary_path, result.objects_path = out_dir / SUMMARY_CSV, out_dir / OBJECTS_CSV
    failures = out_dir / FAILURES_CSV
    if result.failed:
        with atomic_write(failures, overwrite=True) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["image", "file", "error"])
                writer.writerows(result.failed)
        result.failures_path = failures
    else:
        failures.unlink(missing_ok=True)  # from an earlier run whose failures are now fixed


def load_batch_model(model, device=None):
    from ..models import load_model

    return model.to(device) if _is_model(model) and device is not None else (
        model if _is_model(model) else load_model(model, device=device))


def _run_serial(todo, settings: BatchSettings, out_dir: Path, key: dict
                ) -> Iterator[ImageOutcome]:
    if not todo:
        return
    model = load_batch_model(settings.model, settings.device)
    for path, name in todo:
        outcome = process_image(path, name, model, settings, out_dir, key)
        outcome.worker = f"{os.getpid()}@local"
        outcome.model_loads = 1
        yield outcome


def _run_dask(todo, settings: BatchSettings, out_dir: Path, key: dict, scheduler, ref):
    from .dask_runner import run_on_cluster

    if ref is None:  # an in-memory model: workers load it from a checkpoint in the out folder
        ref = str(settings.model.save(out_dir / "model_used.safetensors", overwrite=True))
    yield from run_on_cluster(todo, ref, settings, out_dir, key, scheduler)
