"""Huge single images (montages): lazy, block-by-block prediction and quantification.

The input is never loaded whole. It is read lazily as a dask array: a zarr array (or the first
array of a zarr group, e.g. level ``0`` of an OME-Zarr pyramid), a tiled/BigTIFF through
``tifffile.imread(path, aszarr=True)``, or any array-like.

**Prediction** walks the image in ``block``×``block`` blocks. Each block is read with a margin
of ``halo`` pixels on every side (clipped at the image edge), predicted with the *whole
montage's* normalisation statistics (:func:`montage_stats`, robust percentiles from windows
spread over the whole image), and only its core is written to the zarr outputs:
``<name>_probability.zarr`` (C, H, W) float32, ``<name>_confidence.zarr`` (H, W) float32 and
``<name>_mask.zarr`` (H, W) uint8 class map, chunked by block. Working memory is a few blocks,
whatever the image size.

**Quantification** (blobs) reads the written mask back, again block by block with a halo, and
labels each expanded block exactly as :func:`quantify.blobs.label_blobs` labels a whole image.
An object is kept by the one block whose core holds its *anchor*, its first pixel in raster
order (top-most row, then left-most column), so an object straddling a border is counted once.
Labels are then renumbered by anchor order, which is the order a whole-image labelling gives.
Rule and limit: an object no wider or taller than ``halo`` pixels is measured exactly as in a
whole-image run; a larger one can be cut by the edge of its block's window (its measurements
are then partial and, in rare shapes, a piece can be counted twice). Such objects are counted
in ``MontageReport.truncated`` and logged; raise ``halo`` if there are any.

Lines and grains span whole regions of a montage and are not quantified block-wise: for those
kinds the zarr outputs are written and the image is reported as failed with that reason.

The outputs open lazily in napari: :func:`lazy_layers` gives calibrated layer-data tuples, or
``viewer.add_labels(dask.array.from_zarr("…_mask.zarr"), scale=(px, px))`` by hand
(``viewer.open("…_mask.zarr", plugin="napari")`` also works, without the pixel size).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TemDefectError

_STAT_WINDOWS = 16      # windows per axis sampled for the normalisation statistics
_STAT_PIXELS = 4_000_000


@dataclass
class MontageReport:
    shape: tuple
    blocks: int
    truncated: int = 0            # objects cut by a block window (larger than the halo)
    outputs: tuple = ()


# ----------------------------------------------------------------------------- input

def _zarr_pixel_size(node) -> float | None:
    attrs = dict(node.attrs)
    if attrs.get("pixel_size_nm"):
        return float(attrs["pixel_size_nm"])
    for ms in attrs.get("multiscales", []) or attrs.get("ome", {}).get("multiscales", []):
        try:
            axes = ms.get("axes", [])
            scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
            unit = axes[-1].get("unit") if axes and isinstance(axes[-1], dict) else None
            from ..io import to_nm_per_px

            return to_nm_per_px(float(scale[-1]), unit) if unit else None
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return None


def open_montage(source):
    """Return (2D dask array, pixel size in nm or None) without reading the pixels."""
    import dask.array as da
    import zarr

    pixel_size = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise TemDefectError(f"{path} does not exist; check the path.")
        try:
            if path.is_dir():
                node = zarr.open(str(path), mode="r")
                pixel_size = _zarr_pixel_size(node)
                if isinstance(node, zarr.Group):
                    arrays = sorted(node.arrays(), key=lambda kv: kv[0])
                    if not arrays:
                        raise TemDefectError(f"{path.name} is a zarr group without arrays; "
                                             "give the folder of one 2D zarr array.")
                    node = dict(arrays).get("0", arrays[0][1])
                arr = da.from_zarr(node)
            else:
                import tifffile

                from ..io import tiff_pixel_size_nm

                pixel_size = tiff_pixel_size_nm(path)  # what read_image gives the same file
                node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
                if isinstance(node, zarr.Group):  # a pyramid: level 0 is full resolution
                    node = node["0"]
                arr = da.from_zarr(node)
        except TemDefectError:
            raise
        except Exception as exc:
            raise TemDefectError(f"Could not open {path.name} lazily as a zarr array or tiled "
                                 f"TIFF ({type(exc).__name__}: {exc}); check the file.") from exc
    else:
        arr = source if isinstance(source, da.Array) else da.from_array(source, chunks=4096)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB(A): luminance, block by block
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        arr = (arr[..., :3].astype(np.float32) * weights).sum(axis=-1)
    if arr.ndim != 2:
        raise TemDefectError(f"The montage has shape {arr.shape}; give one 2D image "
                             "(a single channel and frame).")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TemDefectError(f"The montage has dtype {arr.dtype}; give a numeric image.")
    return arr, pixel_size


_MIN_READ = 64


def _at_least(lo: int, hi: int, size: int) -> tuple[int, int]:
    """Grow the window [lo, hi) to _MIN_READ px (or the whole axis), keeping it in [0, size)."""
    if hi - lo >= min(_MIN_READ, size):
        return lo, hi
    lo = max(0, hi - _MIN_READ)
    return lo, min(size, lo + _MIN_READ)


def montage_stats(arr, normalization: dict | None = None) -> tuple[float, float]:
    """Whole-image (offset, scale) from windows spread evenly over the montage.

    ``_STAT_WINDOWS``² windows of equal size, about 4 Mpx in all, so only the chunks under
    them are read.
    """
    from ..preprocess import normalization_stats

    h, w = arr.shape
    if h * w <= _STAT_PIXELS:
        return normalization_stats(np.asarray(arr), normalization)
    n = _STAT_WINDOWS
    side = min(max(8, int(math.sqrt(_STAT_PIXELS / (n * n)))), h, w)  # a strip: its width
    ys = np.linspace(0, h - side, n).astype(int)
    xs = np.linspace(0, w - side, n).astype(int)
    sample = np.concatenate([
        np.asarray(arr[y:y + side, x:x + side]).ravel() for y in ys for x in xs])
    return normalization_stats(sample.reshape(n * n, -1), normalization)


def blocks(shape, block: int):
    """(y0, y1, x0, x1) of every block core, in raster order."""
    h, w = shape
    for y0 in range(0, h, block):
        for x0 in range(0, w, block):
            yield y0, min(y0 + block, h), x0, min(x0 + block, w)


def _expand(core, halo: int, shape):
    y0, y1, x0, x1 = core
    return (max(0, y0 - halo), min(shape[0], y1 + halo),
            max(0, x0 - halo), min(shape[1], x1 + halo))


# ----------------------------------------------------------------------------- prediction

def _new_store(path: Path, shape, chunks, dtype, attrs: dict):
    import zarr

    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    z = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype=dtype,
                        fill_value=0)
    z.attrs.update(attrs)
    return z, tmp


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    if path.exists():
        if not overwrite:
            raise TemDefectError(f"{path} already exists; pass --overwrite to replace it.")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)


def predict_montage(model, source, folder, *, block: int = 4096, halo: int = 128, tile=None,
                    overlap=None, tta: bool = False, threshold: float | None = None,
                    device=None, batch_size=None, pixel_size_nm=None, save_probability: bool = True,
                    overwrite: bool = False, resume: bool = True, progress=None, cancel=None,
                    prefix: str = "", invert: bool = False) -> MontageReport:
    """Predict a montage block by block into ``folder``/``prefix`` + {mask, confidence,
    probability}.zarr.

    The stores are written as ``*.zarr.partial`` and renamed when every block is done. With
    ``resume`` an interrupted run (crash, Ctrl-C, a killed cluster job) continues from the
    blocks it finished, recorded in ``prefix`` + ``blocks_done.json``, if its settings match.
    """
    from ..files import write_text
    from ..inference import predict

    arr, file_px = open_montage(source)
    threshold = float(model.threshold if threshold is None else threshold)
    px = pixel_size_nm if pixel_size_nm is not None else file_px
    block, halo = int(block), int(halo)
    if block < 64 or halo < 0:
        raise TemDefectError(f"Block {block} px / halo {halo} px are invalid; use a block of at "
                             "least 64 px and a halo of 0 or more.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stats = montage_stats(arr, model.spec.normalization)
    h, w = arr.shape
    n_cls = model.spec.num_classes
    attrs = {"pixel_size_nm": px, "classes": list(model.spec.classes),
             "threshold": float(threshold), "source": str(source) if isinstance(
                 source, (str, Path)) else "array", "block": block, "halo": halo,
             "normalization_stats": list(stats)}
    names = ["mask", "confidence"] + (["probability"] if save_probability else [])
    finals = {n: folder / f"{prefix}{n}.zarr" for n in names}
    if not overwrite:
        for path in finals.values():
            if path.exists():
                raise TemDefectError(f"{path} already exists; pass --overwrite to replace it.")
    shapes = {"mask": ((h, w), (block, block), "uint8"),
              "confidence": ((h, w), (block, block), "float32"),
              "probability": ((n_cls, h, w), (1, block, block), "float32")}
    record_path = folder / f"{prefix}blocks_done.json"
    key = json.loads(json.dumps({
        "shape": [h, w], "block": block, "halo": halo, "tile": tile, "overlap": overlap,
        "tta": bool(tta), "threshold": float(threshold), "stats": list(stats),
        "classes": list(model.spec.classes), "stores": names,
        "model": getattr(model, "source", None) or getattr(model, "name", None),
        **({"invert": True} if invert else {})}))  # (absent when off: older records resume)
    done: set = set()
    tmps = {n: finals[n].with_name(finals[n].name + ".partial") for n in names}
    if resume and record_path.exists() and all(t.exists() for t in tmps.values()):
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") == key:
                done = {int(i) for i in record.get("done", [])}
        except (OSError, ValueError):
            done = set()
    import zarr

    if done:
        stores = {n: zarr.open_array(str(tmps[n]), mode="r+") for n in names}
    else:
        stores = {n: _new_store(finals[n], *shapes[n], attrs)[0] for n in names}
    cores = list(blocks((h, w), block))
    for i, core in enumerate(cores):
        if i in done:
            continue
        y0, y1, x0, x1 = core
        ey0, ey1, ex0, ex1 = _expand(core, halo, (h, w))
        # a narrow last block (small halo) reads at least _MIN_READ px, as far as the image
        # goes: the network needs a few pixels of context (and 8 px at the least)
        ey0, ey1 = _at_least(ey0, ey1, h)
        ex0, ex1 = _at_least(ex0, ex1, w)
        region = np.asarray(arr[ey0:ey1, ex0:ex1])
        res = predict(model, region, tile=tile, overlap=overlap, tta=tta,
                      threshold=threshold, device=device, batch_size=batch_size,
                      normalization_stats=stats, cancel=cancel, invert=invert)
        cy, cx = slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0)
        stores["mask"][y0:y1, x0:x1] = res.mask[cy, cx]
        stores["confidence"][y0:y1, x0:x1] = res.confidence[cy, cx]
        if "probability" in stores:
            stores["probability"][:, y0:y1, x0:x1] = res.probability[:, cy, cx]
        del res, region
        done.add(i)
        write_text(record_path, json.dumps({"key": key, "done": sorted(done)}), overwrite=True)
        if progress is not None:
            progress(len(done), len(cores))
    for n in names:
        _commit(tmps[n], finals[n], overwrite)
    record_path.unlink(missing_ok=True)
    return MontageReport(shape=(h, w), blocks=len(cores),
                         outputs=tuple(f.name for f in finals.values()))


# ----------------------------------------------------------------------------- quantification

def _anchors(lab: np.ndarray):
    """Label ids of ``lab`` and the (row, col) of each one's first pixel in raster order."""
    flat = lab.ravel()
    fg = np.flatnonzero(flat)
    ids, first = np.unique(flat[fg], return_index=True)
    rows, cols = np.divmod(fg[first], lab.shape[1])
    return ids, rows, cols


def quantify_montage_blobs(mask, *, pixel_size_nm=None, probability=None, confidence=None,
                           block: int = 4096, halo: int = 128, min_size_px=None,
                           split_touching: bool = False, split_h_px: float = 2.0,
                           threshold=None, image_name: str = "image"):
    """Blob objects and summary of a (lazy) mask, block by block; see the module docstring.

    ``mask``, ``probability`` (H, W) and ``confidence`` are arrays or zarr/dask arrays of the
    same shape. Returns (objects DataFrame, summary DataFrame, MontageReport).
    """
    import pandas as pd

    from ..quantify import DEFAULT_MIN_SIZE_PX
    from ..quantify.blobs import label_blobs
    from ..quantify.tables import measure, px_name, summarize

    h, w = mask.shape
    min_size = DEFAULT_MIN_SIZE_PX["blobs"] if min_size_px is None else int(min_size_px)
    s = 1.0 if pixel_size_nm is None else float(pixel_size_nm)
    cx_col = "centroid_x_nm" if pixel_size_nm is not None else px_name("centroid_x_nm")
    cy_col = "centroid_y_nm" if pixel_size_nm is not None else px_name("centroid_y_nm")
    tables, anchor_keys = [], []
    foreground = truncated = 0
    cores = list(blocks((h, w), int(block)))
    for core in cores:
        y0, y1, x0, x1 = core
        ey0, ey1, ex0, ex1 = _expand(core, int(halo), (h, w))
        sub = np.asarray(mask[ey0:ey1, ex0:ex1]) > 0
        lab = label_blobs(sub, min_size, split_touching, split_h_px)
        foreground += int(np.count_nonzero(lab[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]))
        ids, ar, ac = _anchors(lab)
        gr, gc = ar + ey0, ac + ex0
        keep = (gr >= y0) & (gr < y1) & (gc >= x0) & (gc < x1)
        if not keep.any():
            continue
        kept = ids[keep]
        prob = None if probability is None else np.asarray(probability[ey0:ey1, ex0:ex1])
        conf = None if confidence is None else np.asarray(confidence[ey0:ey1, ex0:ex1])
        df = measure(lab, pixel_size_nm, kind="blobs", image=image_name, probability=prob,
                     confidence=conf)
        df = df.set_index("label").loc[kept].reset_index()
        df[cx_col] += ex0 * s
        df[cy_col] += ey0 * s
        # touching the image border, not a block border; cut by an inner window edge: truncated
        edges_img = {"top": ey0 == 0, "bottom": ey1 == h, "left": ex0 == 0, "right": ex1 == w}
        on_edge = {"top": np.unique(lab[0]), "bottom": np.unique(lab[-1]),
                   "left": np.unique(lab[:, 0]), "right": np.unique(lab[:, -1])}
        border = np.zeros(len(kept), bool)
        cut = np.zeros(len(kept), bool)
        for edge, is_image_edge in edges_img.items():
            hit = np.isin(kept, on_edge[edge])
            if is_image_edge:
                border |= hit
            else:
                cut |= hit
        df["touches_border"] = border
        truncated += int(cut.sum())
        tables.append(df)
        anchor_keys.append(gr[keep].astype(np.int64) * w + gc[keep])
    columns = measure(np.zeros((2, 2), np.int32), pixel_size_nm, kind="blobs",
                      image=image_name).columns
    if tables:
        objects = pd.concat(tables, ignore_index=True)
        order = np.argsort(np.concatenate(anchor_keys), kind="stable")
        objects = objects.iloc[order].reset_index(drop=True)
        objects["label"] = np.arange(1, len(objects) + 1, dtype=np.int64)
        objects = objects[list(columns)]
    else:
        objects = pd.DataFrame(columns=columns)
    summary = summarize(objects, kind="blobs", image=image_name, shape=(h, w),
                        pixel_size_nm=pixel_size_nm, foreground_px=foreground,
                        min_size_px=min_size, threshold=threshold)
    return objects, summary, MontageReport(shape=(h, w), blocks=len(cores),
                                           truncated=truncated)


def process_montage(path, name: str, model, settings, folder: Path):
    """The batch step for one montage: predict to zarr, then quantify blobs block-wise."""
    import zarr

    from .runner import class_index

    _, file_px = open_montage(path)
    px = settings.pixel_size_nm if settings.pixel_size_nm is not None else file_px
    report = predict_montage(
        model, path, folder, block=settings.block, halo=settings.halo, tile=settings.tile,
        overlap=settings.overlap, tta=settings.tta, threshold=settings.threshold,
        device=settings.device, batch_size=settings.batch_size, pixel_size_nm=px,
        save_probability=settings.save_probability, overwrite=True,
        resume=not settings.overwrite, prefix=f"{name}_", invert=settings.invert)
    if settings.kind != "blobs":
        raise TemDefectError(
            f"--kind {settings.kind} is not quantified on montages (only blobs are, block by "
            f"block); the mask and probability are in {folder}/*.zarr: quantify a crop of them.")
    k = class_index(model, settings.class_name)
    prefix = f"{name}_"
    mask = zarr.open_array(str(folder / f"{prefix}mask.zarr"), mode="r")
    conf = zarr.open_array(str(folder / f"{prefix}confidence.zarr"), mode="r")
    prob = None
    if settings.save_probability:
        prob = zarr.open_array(str(folder / f"{prefix}probability.zarr"), mode="r")
        prob = _ClassView(prob, k)
    binary = _EqualsView(mask, k + 1) if model.spec.num_classes > 1 else mask
    objects, summary, qrep = quantify_montage_blobs(
        binary, pixel_size_nm=px, probability=prob, confidence=conf, block=settings.block,
        halo=settings.halo, min_size_px=settings.min_size_px,
        split_touching=settings.split_touching,
        threshold=settings.threshold, image_name=name)
    if qrep.truncated:
        import sys

        print(f"temdefect: {name}: {qrep.truncated} objects are larger than the halo "
              f"({settings.halo} px) and were cut by a block window; rerun with a larger halo.",
              file=sys.stderr)
    return summary, objects, list(report.outputs)


class _ClassView:
    """``zarr[k]`` of a (C, H, W) array, sliced lazily as (H, W)."""

    def __init__(self, arr, k):
        self.arr, self.k, self.shape = arr, k, arr.shape[1:]

    def __getitem__(self, key):
        return self.arr[(self.k, *key)]


class _EqualsView:
    def __init__(self, arr, value):
        self.arr, self.value, self.shape = arr, value, arr.shape

    def __getitem__(self, key):
        return np.asarray(self.arr[key]) == self.value


def lazy_layers(folder, name: str | None = None) -> list[tuple]:
    """napari layer-data tuples ``(dask array, kwargs, layer type)`` for a montage's outputs.

    Nothing is read but the zarr metadata; napari loads the chunks it displays. Use::

        for data, kwargs, kind in lazy_layers("out/images/montage"):
            getattr(viewer, f"add_{kind}")(data, **kwargs)
    """
    import dask.array as da
    import zarr

    folder = Path(folder)
    prefix = f"{name}_" if name else ""
    if not name:
        found = sorted(folder.glob("*mask.zarr"))
        if not found:
            raise TemDefectError(f"No *mask.zarr in {folder}; give the folder of one montage's "
                                 "outputs (out/images/<name>).")
        prefix = found[0].name[: -len("mask.zarr")]
    layers = []
    for part, kind in (("probability", "image"), ("confidence", "image"), ("mask", "labels")):
        path = folder / f"{prefix}{part}.zarr"
        if not path.exists():
            continue
        node = zarr.open_array(str(path), mode="r")
        px = node.attrs.get("pixel_size_nm")
        scale = (px, px) if px else (1.0, 1.0)
        data = da.from_zarr(node)
        kwargs = {"name": f"{prefix}{part}", "scale": scale}
        if px:  # nm like the micrograph the reader opens, so napari keeps units on the canvas
            kwargs["units"] = ("nm", "nm")
        if part == "probability":
            classes = node.attrs.get("classes") or []
            data = data[0] if data.shape[0] == 1 else data
            kwargs.update(contrast_limits=(0.0, 1.0), blending="additive")
            if data.ndim == 3:  # one layer per class
                kwargs.update(channel_axis=0, name=[f"{prefix}p_{c}" for c in classes])
            else:
                kwargs["colormap"] = "magma"
        elif part == "confidence":
            kwargs.update(colormap="gray", contrast_limits=(0.0, 1.0), visible=False)
        else:
            kwargs.update(opacity=0.5)
        layers.append((data, kwargs, kind))
    return layers
