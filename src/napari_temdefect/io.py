"""Reading micrographs from TEM files, with their calibration in nm per pixel.

:func:`read_image` opens TIFF (ImageJ, OME, FEI and plain resolution tags), PNG/JPEG, Gatan
DM3/DM4, EMD (Berkeley/NCEM and Velox), TIA SER and MRC files and returns a :class:`Micrograph`
whose ``pixel_size_nm`` is converted from whatever unit the file uses (m, cm, mm, µm, nm, Å, pm;
TIFF resolution in inch or cm). ``None`` means the file holds no usable calibration: results are
then reported in pixels. :func:`write_tiff` writes an ImageJ-compatible TIFF that carries the
calibration and is read back by :func:`read_image` (and by ImageJ/Fiji).

No Qt, no napari: the napari reader hook (``reader.py``) is a thin wrapper over this module.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .constants import as_threshold
from .errors import TemDefectError
from .files import atomic_write
from .preprocess import collapse_channels

TIFF_EXTENSIONS = (".tif", ".tiff")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg")
DM_EXTENSIONS = (".dm3", ".dm4")
MRC_EXTENSIONS = (".mrc", ".mrcs", ".st")
SUPPORTED_EXTENSIONS = (
    TIFF_EXTENSIONS + RASTER_EXTENSIONS + DM_EXTENSIONS + (".emd", ".ser") + MRC_EXTENSIONS
)

#: A "calibration" coarser than this (10 µm per pixel) comes from a screen or print setting such
#: as 72 dpi, not from a microscope, and is ignored.
MAX_PLAUSIBLE_PIXEL_NM = 10_000.0

# nm per one of each unit; keys are lower-case with spaces removed.
_NM_PER_UNIT = {
    "m": 1e9, "meter": 1e9, "meters": 1e9, "metre": 1e9, "metres": 1e9,
    "cm": 1e7, "centimeter": 1e7, "centimeters": 1e7,
    "mm": 1e6, "millimeter": 1e6, "millimeters": 1e6,
    "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "microns": 1e3,
    "micrometer": 1e3, "micrometers": 1e3, "micrometre": 1e3, "\\u00b5m": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0,
    "å": 0.1, "Å": 0.1, "a": 0.1, "ang": 0.1, "angstrom": 0.1, "angstroms": 0.1,
    "ångström": 0.1, "\\u00c5": 0.1,
    "pm": 1e-3, "picometer": 1e-3, "picometers": 1e-3,
    "inch": 2.54e7, "in": 2.54e7,
}


@dataclass
class Micrograph:
    """One micrograph (2D) or stack of frames (3D, frames first) and its calibration."""

    data: np.ndarray
    pixel_size_nm: float | None
    unit_original: str | None = None
    scale_original: float | None = None
    metadata: dict = field(default_factory=dict)
    name: str = "image"
    path: str | None = None

    @property
    def calibrated(self) -> bool:
        return self.pixel_size_nm is not None

    @property
    def is_stack(self) -> bool:
        return self.data.ndim == 3


def unit_to_nm(unit: str | None) -> float | None:
    """Return how many nm one ``unit`` is (``"µm"`` → 1000), or None for unknown/empty units."""
    if unit is None:
        return None
    key = str(unit).strip().replace(" ", "")
    if not key:
        return None
    if key in _NM_PER_UNIT:
        return _NM_PER_UNIT[key]
    return _NM_PER_UNIT.get(key.lower())


def to_nm_per_px(scale, unit) -> float | None:
    """Convert a pixel size ``scale`` in ``unit`` to nm/px; None if it is not a calibration."""
    factor = unit_to_nm(unit)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        return None
    if factor is None or not math.isfinite(scale) or scale <= 0:
        return None
    nm = scale * factor
    if nm > MAX_PLAUSIBLE_PIXEL_NM:
        return None
    return nm


# --------------------------------------------------------------------------------------------
# public entry points


def read_image(path: str | os.PathLike) -> Micrograph:
    """Read a micrograph file and return it with its pixel size in nm per pixel.

    Raises :class:`TemDefectError` (one sentence) for a missing, unsupported or unreadable file.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if not path.exists():
        raise TemDefectError(f"{path} does not exist; check the path and file name.")
    if path.is_dir():
        raise TemDefectError(f"{path} is a folder; give one image file.")
    if ext not in SUPPORTED_EXTENSIONS:
        raise TemDefectError(
            f"{path.name} has the extension {ext or '(none)'!r}, which cannot be read; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    if path.stat().st_size == 0:
        raise TemDefectError(f"{path} is empty (0 bytes); copy the file again.")
    if ext in TIFF_EXTENSIONS:
        reader, fmt = _read_tiff, "TIFF"
    elif ext in RASTER_EXTENSIONS:
        reader, fmt = _read_raster, ext[1:].upper().replace("JPEG", "JPG")
    elif ext in MRC_EXTENSIONS:
        reader, fmt = _read_mrc, "MRC"
    else:
        reader, fmt = _read_rsciio, {".dm3": "DM3", ".dm4": "DM4", ".emd": "EMD",
                                     ".ser": "SER"}[ext]
    try:
        data, scale, unit, meta = reader(path)
    except TemDefectError:
        raise
    except MemoryError:
        raise TemDefectError(f"{path.name} is too large to load into memory; crop or bin it first.")
    except Exception as exc:  # every library has its own exceptions for corrupt files
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise TemDefectError(
            f"{path.name} is not a readable {fmt} file ({reason}); check that the file is "
            "complete and really is that format."
        ) from exc

    meta.setdefault("notes", [])
    meta["format"] = fmt
    data = _to_image_array(data, meta, path.name)
    try:
        scale = float(scale) if scale is not None else None
    except (TypeError, ValueError):
        meta["notes"].append(f"ignored a pixel size that is not a number: {scale!r}")
        scale = None
    pixel_nm = to_nm_per_px(scale, unit) if scale is not None else None
    if pixel_nm is None and scale is not None and unit_to_nm(unit) is not None:
        if scale > 0 and math.isfinite(scale):
            meta["notes"].append(
                f"ignored a calibration of {scale:g} {unit}/px (a screen or print resolution, "
                "not a microscope pixel size)"
            )
        else:
            meta["notes"].append(f"ignored a pixel size of {scale:g} {unit} (not positive)")
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    if name.lower().endswith(".ome"):
        name = name[:-4]
    return Micrograph(
        data=data,
        pixel_size_nm=pixel_nm,
        unit_original=str(unit) if unit else None,
        scale_original=scale,
        metadata=meta,
        name=name,
        path=str(path),
    )


#: keys ImageJ itself uses in its description; ``write_tiff(tags=...)`` may not set them
_IMAGEJ_KEYS = frozenset({"ImageJ", "axes", "unit", "spacing", "images", "channels", "slices",
                          "frames", "hyperstack", "mode", "loop", "finterval", "min", "max",
                          "labels", "ranges", "Labels", "Ranges", "LUTs"})


def write_tiff(
    path: str | os.PathLike,
    array,
    pixel_size_nm: float | None = None,
    overwrite: bool = False,
    tags: dict | None = None,
) -> Path:
    """Write a 2D image or 3D stack as an ImageJ TIFF that carries ``pixel_size_nm``.

    uint8/uint16/float32 are kept; bool becomes uint8, other integers uint16 when they fit
    (float32 otherwise), float64 becomes float32. Written atomically; an existing file is only
    replaced with ``overwrite=True``. ``tags``: extra ``key=value`` pairs (str, int, float) in
    the ImageJ description, read back by :func:`read_image` under
    ``metadata["original"]["imagej"]``; the batch runner records the threshold
    (:data:`THRESHOLD_TAG`) of the probability maps it writes.
    """
    import tifffile

    arr = _tiff_compatible(np.asarray(array))
    if arr.ndim not in (2, 3):
        raise TemDefectError(
            f"Cannot write an array of shape {arr.shape} as a TIFF; give a 2D image or 3D stack."
        )
    kwargs: dict[str, Any] = {"imagej": True, "metadata": {"axes": "ZYX" if arr.ndim == 3 else "YX"}}
    if pixel_size_nm is not None:
        try:
            px = float(pixel_size_nm)
        except (TypeError, ValueError):
            raise TemDefectError(
                f"Pixel size {pixel_size_nm!r} is not a number; give nm per pixel.") from None
        if not math.isfinite(px) or px <= 0:
            raise TemDefectError(f"Pixel size {pixel_size_nm!r} nm is not positive; give a size > 0.")
        if px > MAX_PLAUSIBLE_PIXEL_NM:  # reading would ignore it as a print resolution
            raise TemDefectError(
                f"Pixel size {px:g} nm is not a microscope pixel (over "
                f"{MAX_PLAUSIBLE_PIXEL_NM / 1000:g} µm); check the units (nm per pixel).")
        kwargs["resolution"] = (1.0 / px, 1.0 / px)
        kwargs["metadata"]["unit"] = "nm"
    for key, value in (tags or {}).items():
        if not (isinstance(key, str) and key.isidentifier() and key not in _IMAGEJ_KEYS
                and isinstance(value, (str, int, float)) and "\n" not in str(value)):
            raise TemDefectError(f"Cannot store the TIFF tag {key!r}={value!r}; use a plain "
                                 "name and a one-line string or a number.")
        kwargs["metadata"][key] = value
    path = Path(path)
    with atomic_write(path, overwrite=overwrite, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, arr, **kwargs)
    return path


#: ImageJ-description key of the threshold a probability map was cut at (``temdefect predict``)
THRESHOLD_TAG = "temdefect_threshold"
#: ImageJ-description key of the classes of the model that made a map or mask (comma-separated)
CLASSES_TAG = "temdefect_classes"
#: ImageJ-description key, 1 when the model that made a map or mask counts touching blobs apart
SPLIT_TAG = "temdefect_split_touching"


def model_tags(model_name: str, classes=None, split_touching: bool = False) -> dict:
    """The ``write_tiff(tags=...)`` of a map or mask that a model made: its name, classes and
    (:data:`SPLIT_TAG`) whether it counts touching blobs apart, so `temdefect quantify` and
    the Quantification panel know what it shows and how to count it."""
    tags = {"temdefect_model": " ".join(str(model_name).split())}
    names = [" ".join(str(c).replace(",", " ").split()) for c in classes or ()]
    if names:
        tags[CLASSES_TAG] = ",".join(names)
    if split_touching:
        tags[SPLIT_TAG] = 1
    return tags


def threshold_tags(threshold: float, model_name: str, classes=None,
                   split_touching: bool = False) -> dict:
    """The ``write_tiff(tags=...)`` of a probability map cut at ``threshold`` by a model."""
    return {THRESHOLD_TAG: float(threshold), **model_tags(model_name, classes, split_touching)}


def _imagej_tags(micrograph: "Micrograph") -> dict:
    original = (micrograph.metadata or {}).get("original") or {}
    return original.get("imagej") or {}


def map_threshold(micrograph: "Micrograph") -> float | None:
    """The threshold recorded (:data:`THRESHOLD_TAG`) in a probability-map TIFF that
    ``temdefect predict`` / ``analyze`` wrote, or None."""
    return as_threshold(_imagej_tags(micrograph).get(THRESHOLD_TAG))


def map_split_touching(micrograph: "Micrograph") -> bool:
    """Whether a map or mask TIFF that ``temdefect predict`` / ``analyze`` wrote records
    (:data:`SPLIT_TAG`) that its model counts touching blobs apart."""
    return str(_imagej_tags(micrograph).get(SPLIT_TAG, "")).strip() in ("1", "1.0", "True")


def map_classes(micrograph: "Micrograph") -> list[str] | None:
    """The model classes recorded (:data:`CLASSES_TAG`) in a map or mask TIFF that
    ``temdefect predict`` / ``analyze`` wrote, or None."""
    text = _imagej_tags(micrograph).get(CLASSES_TAG)
    names = [c.strip() for c in str(text).split(",") if c.strip()] if text else []
    return names or None


# --------------------------------------------------------------------------------------------
# format readers: each returns (data, scale_per_px, unit, metadata)


def _tiff_calibration(tif, original: dict, notes: list):
    """(pixel size, unit) of an open TIFF from its OME, ImageJ, FEI or resolution tags, as
    written (None, None when it has none); ``original`` gets the tags, ``notes`` a sentence
    when the pixels are not square. Shared by :func:`read_image` and the block-wise path."""
    page = tif.pages[0]
    scale = unit = None
    y_scale = None
    if tif.is_ome and tif.ome_metadata:
        original["ome"] = tif.ome_metadata[:20000]
        scale, unit, y_scale = _ome_pixel_size(tif.ome_metadata)
    if scale is None and tif.is_imagej and tif.imagej_metadata is not None:
        ij = {k: v for k, v in tif.imagej_metadata.items() if _is_plain(v)}
        original["imagej"] = ij
        ij_unit = ij.get("unit")
        xres = _tag_ratio(page, "XResolution")
        if ij_unit and xres:
            scale, unit = 1.0 / xres, str(ij_unit)
            yres = _tag_ratio(page, "YResolution")
            y_scale = 1.0 / yres if yres else None
    if scale is None and getattr(tif, "is_fei", False) and tif.fei_metadata:
        fei = tif.fei_metadata
        original["fei"] = {k: v for k, v in fei.items() if isinstance(v, dict)}
        for section in ("Scan", "EScan", "Image"):
            pw = fei.get(section, {}).get("PixelWidth")
            if pw:
                scale, unit = float(pw), "m"
                break
    if scale is None:
        xres = _tag_ratio(page, "XResolution")
        res_unit = page.tags.get("ResolutionUnit")
        res_unit = int(res_unit.value) if res_unit is not None else 2  # TIFF default: inch
        if xres:
            original["resolution"] = {"x_per_unit": xres, "resolution_unit": res_unit}
            if res_unit in (2, 3):
                scale, unit = 1.0 / xres, {2: "inch", 3: "cm"}[res_unit]
                yres = _tag_ratio(page, "YResolution")
                y_scale = 1.0 / yres if yres else None
    note = pixel_shape_note(scale, y_scale, unit)
    if note:
        notes.append(note)
    return scale, unit


def tiff_pixel_size_nm(path) -> float | None:
    """The pixel size in nm that :func:`read_image` would give a TIFF, without its pixels."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        scale, unit = _tiff_calibration(tif, {}, [])
    return to_nm_per_px(scale, unit) if scale is not None else None


def _read_tiff(path: Path):
    import tifffile

    meta: dict[str, Any] = {"notes": []}
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        page = tif.pages[0]
        original: dict[str, Any] = {"axes": axes}
        scale, unit = _tiff_calibration(tif, original, meta["notes"])
        if ("S" in axes and not axes.endswith("S") and data.ndim == len(axes)
                and np.issubdtype(data.dtype, np.floating)):
            # tifffile (before 2026) stored any (3|4, H, W) array as planar RGB(A): a float
            # one is a stack of frames or maps (no camera writes float colour)
            axes = axes.replace("S", "Z")
            meta["notes"].append(f"{data.shape[axes.index('Z')]} float planes stored as planar "
                                 "RGB: read as frames, not colour")
        if "S" in axes and not axes.endswith("S") and data.ndim == len(axes):
            # planar RGB (PlanarConfiguration "separate": axes SYX): samples last, as a
            # contiguous RGB image, so it is read as one colour micrograph, not 3 frames
            data = np.moveaxis(data, axes.index("S"), -1)
            axes = axes.replace("S", "") + "S"
        if "S" in axes and axes.endswith("S"):
            meta["channels_last"] = True
        original["tags"] = {
            t.name: t.value for t in page.tags.values()
            if t.name in ("ImageDescription", "Software", "DateTime", "Artist", "Make", "Model")
            and _is_plain(t.value)
        }
    meta["original"] = original
    if data.ndim > 3 and axes and not axes.endswith("S"):
        frames = int(np.prod(data.shape[:-2]))
        meta["notes"].append(f"{axes} hyperstack flattened to {frames} frames")
        data = data.reshape((frames,) + data.shape[-2:])
    return data, scale, unit, meta


def _read_raster(path: Path):
    import imageio.v3 as iio

    meta: dict[str, Any] = {"notes": []}
    data = _palette_indices(path, meta)
    if data is None:
        data = iio.imread(path, plugin="pillow")
    meta["channels_last"] = data.ndim == 3
    original: dict[str, Any] = {}
    scale = unit = None
    try:
        info = iio.immeta(path, plugin="pillow")
    except Exception:  # metadata is optional
        info = {}
    original = {k: v for k, v in info.items() if _is_plain(v)}
    dpi = info.get("dpi")
    if dpi:
        dpi_x = float(dpi[0] if isinstance(dpi, (tuple, list)) else dpi)
        if dpi_x > 0:
            scale, unit = 1.0 / dpi_x, "inch"
    meta["original"] = original
    if data.ndim == 4:  # animated PNG: frames of RGB(A)
        meta["channels_last"] = True
    return data, scale, unit, meta


def _palette_indices(path: Path, meta: dict):
    """Indexed-colour PNGs with a colour palette are label maps (VOC, labelme...): return the
    indices. Grey palettes return None and are read as grey images."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "P" or getattr(im, "n_frames", 1) > 1:
            return None
        palette = np.asarray(im.getpalette() or [], dtype=np.int32)
        rgb = palette[: palette.size // 3 * 3].reshape(-1, 3)
        if rgb.size and (rgb == rgb[:, :1]).all():
            return None
        meta["notes"].append("indexed-colour image with a colour palette: kept the indices "
                             "(label map)")
        return np.asarray(im)


def _read_mrc(path: Path):
    import warnings

    import mrcfile

    notes = []
    try:
        mrc = mrcfile.open(path, permissive=False, mode="r")
    except ValueError as strict_error:
        # Older and third-party writers leave out the "MAP " ID or write odd header fields;
        # mrcfile's permissive mode reads those (warning instead of failing) when the data
        # block is intact. A file that is not MRC at all still fails below.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mrc = mrcfile.open(path, permissive=True, mode="r")
        if mrc.data is None:
            mrc.close()
            raise strict_error
        problems = sorted({" ".join(str(w.message).split()) for w in caught}) or [
            " ".join(str(strict_error).split())]
        notes.append("read with a non-standard MRC header (" + "; ".join(problems)[:200]
                     + "); check the pixel size")
    with mrc:
        data = np.array(mrc.data)
        voxel = mrc.voxel_size
        header = {name: _plain(mrc.header[name]) for name in mrc.header.dtype.names
                  if name not in ("label",)}
        labels = [lab.decode("latin-1").strip() for lab in mrc.header.label[: int(mrc.header.nlabl)]]
        header["labels"] = labels
    meta = {"notes": notes, "original": {"header": header}}
    vx = float(voxel.x)
    scale, unit = (vx, "Å") if vx > 0 else (None, None)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return data, scale, unit, meta


def _read_rsciio(path: Path):
    ext = path.suffix.lower()
    if ext in DM_EXTENSIONS:
        from rsciio.digitalmicrograph import file_reader
    elif ext == ".emd":
        from rsciio.emd import file_reader
    else:
        from rsciio.tia import file_reader
    signals = file_reader(str(path), lazy=False)
    images = [sig for sig in signals if _is_image_signal(sig)]
    # grey images before RGB ones (DM thumbnails, overlays), in file order otherwise
    images.sort(key=lambda sig: bool(np.asarray(sig["data"]).dtype.names))
    chosen = images[0] if images else None
    if chosen is None:
        raise TemDefectError(
            f"{path.name} holds no image (only spectra or single values); "
            "open a file that contains an image or image stack."
        )
    data = chosen["data"]
    if data.dtype.names:  # DM RGB(A): structured array with R, G, B, A fields
        data = np.stack([data[c] for c in ("R", "G", "B") if c in data.dtype.names], axis=-1)
    data = np.asarray(data)
    axes = list(chosen.get("axes") or [])
    if axes and all("index_in_array" in a for a in axes):
        axes.sort(key=lambda a: a["index_in_array"])
    scale = unit = None
    notes = []
    if len(axes) >= 2:
        scale, unit = axes[-1].get("scale"), axes[-1].get("units")
        note = pixel_shape_note(scale, axes[-2].get("scale"), unit)
        if note:
            notes.append(note)
    meta: dict[str, Any] = {
        "notes": notes,
        "axes": [{k: _plain(v) for k, v in a.items()} for a in axes],
        "original": _plain_tree(chosen.get("original_metadata", {})),
        "rsciio_metadata": _plain_tree(chosen.get("metadata", {})),
    }
    if len(signals) > 1:
        meta["notes"].append(f"file holds {len(signals)} datasets; opened the first image")
    if unit and isinstance(unit, str) and unit.replace(" ", "").startswith("1/"):
        meta["notes"].append(f"axes are in {unit} (reciprocal space, a diffraction pattern)")
    return data, scale, unit, meta


# --------------------------------------------------------------------------------------------
# helpers


def _is_image_signal(sig: dict) -> bool:
    """True for an image or image stack: two spatial signal axes (not a spectrum/spectrum image)."""
    data = sig.get("data")
    if data is None or (np.ndim(data) < 2 and not getattr(data, "dtype", np.dtype(float)).names):
        return False
    axes = sorted(sig.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
    if len(axes) >= 2:
        last_two = axes[-2:]
        if any(a.get("navigate") is True for a in last_two):
            return False  # e.g. a spectrum image: the last axes are navigation axes
        if any(str(a.get("units") or "").strip().lower() in ("ev", "kev") for a in last_two):
            return False
    return True


def _to_image_array(data, meta: dict, name: str) -> np.ndarray:
    data = np.asarray(data)
    if np.iscomplexobj(data):
        raise TemDefectError(
            f"{name} holds complex values (an FFT or exit wave); export its amplitude or "
            "intensity as a real image first."
        )
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise TemDefectError(f"{name} holds {data.dtype} values; give a numeric image.")
    channels_last = meta.pop("channels_last", None)
    if data.ndim >= 3 and data.shape[-1] in (2, 3, 4) and (channels_last or min(data.shape[-3:-1]) >= 8):
        data = collapse_channels(data, meta["notes"])
    data = np.squeeze(data) if data.ndim > 2 else data
    if data.ndim < 2:
        raise TemDefectError(f"{name} holds a {data.ndim}D array, not an image; open an image file.")
    if data.ndim > 3:
        raise TemDefectError(
            f"{name} holds a {data.ndim}D array {data.shape}; export a 2D image or a 3D stack."
        )
    if min(data.shape[-2:]) < 2:
        raise TemDefectError(f"{name} is only {data.shape} pixels; open a real image.")
    return data


def _tiff_compatible(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype in (np.uint8, np.uint16, np.float32):
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 65535):
            return arr.astype(np.uint16)
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise TemDefectError(f"Cannot write {arr.dtype} data as a TIFF; give a numeric array.")


def _tag_ratio(page, name: str) -> float | None:
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    try:
        if isinstance(value, tuple):
            num, den = value[:2]
            return float(num) / float(den) if den else None
        return float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _ome_pixel_size(xml: str):
    """(x size, its unit, y size in the x unit or None) of an OME-XML header's Pixels;
    (None, None, None) when it has none or cannot be parsed."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None, None
    for el in root.iter():
        if el.tag.split("}")[-1] == "Pixels":
            size = el.get("PhysicalSizeX")
            if size is None:
                return None, None, None
            y_size = el.get("PhysicalSizeY")
            y_unit = el.get("PhysicalSizeYUnit", "µm")
            unit = el.get("PhysicalSizeXUnit", "µm")
            try:
                y = float(y_size) * unit_to_nm(y_unit) / unit_to_nm(unit) if y_size else None
            except (TypeError, ValueError, ZeroDivisionError):
                y = None
            return float(size), unit, y
    return None, None, None


NON_SQUARE = "pixels are not square"


def pixel_shape_note(x, y, unit=None) -> str | None:
    """The sentence for pixels of size ``x`` by ``y`` that differ by more than 1 %, else None
    (also None when either is unknown)."""
    if not x or not y or math.isclose(float(x), float(y), rel_tol=0.01):
        return None
    return (f"{NON_SQUARE} (x {float(x):.6g}, y {float(y):.6g}{' ' + str(unit) if unit else ''}"
            "); the x size is used for both, so areas, densities and y lengths are off by their "
            "ratio; resample the image to square pixels before measuring")


def non_square_note(micrograph: "Micrograph") -> str | None:
    """The reader's note that the file's pixels are not square, or None."""
    for note in micrograph.metadata.get("notes", []) or []:
        if str(note).startswith(NON_SQUARE):
            return str(note)
    return None


def _is_plain(value) -> bool:
    return isinstance(value, (str, int, float, bool)) or (
        isinstance(value, (tuple, list)) and len(value) < 64
        and all(isinstance(v, (str, int, float, bool)) for v in value)
    )


def _plain(value):
    """numpy scalars/small arrays → Python values, so metadata stays readable and serialisable."""
    if isinstance(value, bytes):
        return value.decode("latin-1", errors="replace")
    if isinstance(value, np.ndarray):
        if value.size <= 64:
            return _plain(value.tolist())
        return f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain_tree(tree, depth: int = 0):
    if depth > 12:
        return "<nested too deep>"
    if isinstance(tree, dict):
        return {str(k): _plain_tree(v, depth + 1) for k, v in tree.items()}
    return _plain(tree)

