"""napari reader hook (npe2 ``readers`` contribution): a thin wrapper over :mod:`io`.

The layer's ``scale`` is the pixel size in nm/px from the file (1 when the file has no
calibration, marked ``calibrated: False`` in the metadata). A file this plugin cannot read makes
the hook return ``None`` so napari can try other readers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import TemDefectError
from .io import (
    SUPPORTED_EXTENSIONS, Micrograph, map_classes, map_split_touching, map_threshold, read_image,
)

log = logging.getLogger(__name__)


def napari_get_reader(path):
    """Return a reader function for ``path`` (one path or a list of them, one layer each), or
    None if this plugin cannot open every one of them."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        return None
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            return None
        p = Path(p)
        if p.suffix.lower() not in SUPPORTED_EXTENSIONS or not p.is_file():
            return None
    return _read


def _read(path):
    """Layers for ``path`` (or a list of paths); None if any file cannot be read."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    layers = []
    for p in paths:
        try:
            layers.append(layer_data(read_image(p)))
        except TemDefectError as exc:
            log.warning("napari-temdefect could not read %s: %s", p, exc)
            return None
    return layers


def layer_metadata(micrograph: Micrograph, source: str | None = None) -> dict:
    """The metadata every calibrated image layer of this plugin carries (and, for a
    probability map or mask that ``temdefect predict`` wrote, the threshold it was cut at and
    the model's classes)."""
    meta = {
        "pixel_size_nm": micrograph.pixel_size_nm,
        "calibrated": micrograph.pixel_size_nm is not None,
        "unit": "nm" if micrograph.pixel_size_nm is not None else "px",
        "original_unit": micrograph.unit_original,
        "original_scale": micrograph.scale_original,
        "original_metadata": micrograph.metadata,
        "source": source if source is not None else micrograph.path,
    }
    recorded = {}
    threshold = map_threshold(micrograph)
    if threshold is not None:  # the Quantify panel cuts the map at the same threshold
        recorded["threshold"] = threshold
    classes = map_classes(micrograph)
    if classes:  # and presets the kind from them
        recorded["classes"] = classes
    if map_split_touching(micrograph):  # and splits touching blobs, as the model counts
        recorded["split_touching"] = True
    if recorded:
        meta["temdefect"] = recorded
    return meta


def layer_data(micrograph: Micrograph) -> tuple:
    """``(data, kwargs, "image")`` for napari, with scale in nm/px on the two image axes."""
    px = micrograph.pixel_size_nm if micrograph.pixel_size_nm is not None else 1.0
    scale = (1.0,) * (micrograph.data.ndim - 2) + (px, px)
    kwargs = {
        "name": micrograph.name,
        "scale": scale,
        "metadata": layer_metadata(micrograph),
    }
    if micrograph.pixel_size_nm is not None:
        kwargs["units"] = ("pixel",) * (micrograph.data.ndim - 2) + ("nm", "nm")
    return (micrograph.data, kwargs, "image")
