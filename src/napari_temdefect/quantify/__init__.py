"""Quantification: instances, a per-object table and a per-image summary, in physical units.

>>> from napari_temdefect.quantify import quantify, write_csv
>>> result = quantify(mask, "blobs", pixel_size_nm=0.25)
>>> write_csv(result.objects, "objects.csv"); write_csv(result.summary, "summary.csv")

What the input is taken to be:

* ``bool`` array, or an integer array with a single non-zero value (0/1, 0/255): a mask.
* float array with values in 0..1: a probability map, thresholded at ``threshold``; it also
  fills ``mean_probability`` unless ``probability`` is given.
* integer array with several non-zero values: instance labels (blobs, grains), kept as given.
* ``labels=``: instance labels to measure instead of labelling the mask.

For ``grains`` a mask is the *boundary* network; the grains are the regions it encloses.
No Qt or napari here: the widget and the CLI call this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..constants import IGNORE_LABEL, KINDS, kind_for_class
from ..errors import TemDefectError
from .tables import OBJECT_COLUMNS, SUMMARY_COLUMNS, measure, px_name, summarize, write_csv

__all__ = ["quantify", "QuantResult", "write_csv", "OBJECT_COLUMNS", "SUMMARY_COLUMNS",
           "DEFAULT_MIN_SIZE_PX", "px_name", "kind_for_class"]

#: Default minimum object size: pixels of area (blobs, grains) or of skeleton length (lines).
DEFAULT_MIN_SIZE_PX = {"blobs": 5, "lines": 5, "grains": 20}


@dataclass
class QuantResult:
    labels: np.ndarray          # int32 instances (grains: boundaries shared out, see grains.py)
    objects: pd.DataFrame       # one row per object
    summary: pd.DataFrame       # one row
    kind: str
    pixel_size_nm: float | None
    #: extra arrays: "mask" (bool defect pixels), "skeleton" (lines), "boundary" (grains)
    extra: dict = field(default_factory=dict)
    #: sentences about input that looks wrong but is measured anyway (e.g. an inverted mask)
    notes: list = field(default_factory=list)

    @property
    def calibrated(self) -> bool:
        return self.pixel_size_nm is not None


def _check_number(value, what: str, fix: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TemDefectError(f"The {what} {value!r} is not a number; {fix}.") from None
    if not math.isfinite(v) or v <= 0:
        raise TemDefectError(f"The {what} is {value}; it must be a positive number ({fix}).")
    return v


def _plane(arr, what: str) -> np.ndarray:
    from ..preprocess import as_2d_image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] not in (1, 3, 4) and a.shape[-1] not in (3, 4):
        raise TemDefectError(
            f"The {what} has {a.shape[0]} channels; pick the one class to quantify first.")
    return as_2d_image(a, name=what)


def _same_shape(arr, shape, what):
    if arr is None:
        return None
    a = _plane(arr, what)
    if a.shape != shape:
        raise TemDefectError(
            f"The {what} is {a.shape[0]}×{a.shape[1]} px but the mask is {shape[0]}×{shape[1]} px;"
            " give arrays of the same image.")
    return a


#: side of the window that :func:`_check_plausible_labels` looks at (bounded memory)
_CHECK_WINDOW = 2048


def _check_plausible_labels(a: np.ndarray, n_values: int) -> None:
    """Refuse an integer image whose values are not instance labels: each instance is one
    connected patch (a few after a merge), while a JPEG-compressed mask, a class mask or a
    micrograph passed by mistake scatters each value over many patches. A large image is
    judged on its central window."""
    from skimage.measure import label

    h, w = a.shape
    if max(h, w) > _CHECK_WINDOW:
        y0, x0 = max(0, (h - _CHECK_WINDOW) // 2), max(0, (w - _CHECK_WINDOW) // 2)
        a = a[y0:y0 + _CHECK_WINDOW, x0:x0 + _CHECK_WINDOW]
        n_values = int(np.count_nonzero(np.unique(a)))
    patches = int(label(a, background=0, connectivity=2).max())
    if patches > 2 * n_values + 10:
        raise TemDefectError(
            f"The image has {n_values} values in {patches} separate patches, so it is not a "
            "mask or instance labels (a JPEG-compressed mask, a class mask, or the micrograph "
            "itself?); give a 0/1 or 0/255 mask saved losslessly (PNG, TIFF), or for a class "
            "mask pick one class (--class K).")


def _scattered_labels_note(lab: np.ndarray) -> list[str]:
    """A sentence when some label ids are painted in several separate pieces: each such id is
    measured as one object (as given), which is rarely what painting several blobs meant."""
    if not lab.any():
        return []
    pieces, _ = ndi.label(lab > 0, structure=np.ones((3, 3), bool), output=np.int32)
    pairs = np.unique(pieces.astype(np.int64) * (int(lab.max()) + 1) + lab)
    ids = pairs % (int(lab.max()) + 1)
    ids, counts = np.unique(ids[ids > 0], return_counts=True)
    split = ids[counts > 1]
    if not split.size:
        return []
    worst = int(ids[np.argmax(counts)])
    return [f"{split.size} label(s) are painted in several separate pieces (label {worst}: "
            f"{int(counts.max())} pieces) and each counts as one object; give each defect its "
            "own label (napari: press M for a new label before painting the next one)."]


#: Largest label id measured as given; larger ids are renumbered 1..N (32-bit tables).
MAX_ID = 2 ** 31 - 2


def _fit_ids(instances: np.ndarray):
    """(labels that fit int32, the largest original id if they had to be renumbered else 0)."""
    top = int(instances.max(initial=0))
    if top <= MAX_ID:
        return instances, 0
    return _renumber(instances), top


def _renumber(instances: np.ndarray) -> np.ndarray:
    """Renumber any integer labels 1..N in raster order of first appearance (int32)."""
    flat = np.asarray(instances).ravel()
    ids, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(np.where(ids > 0, first, -1), kind="stable")  # background first
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    new = rank if ids[0] == 0 else rank + 1
    return new[inverse].reshape(np.shape(instances)).astype(np.int32)


def _union(a, b):
    return b if a is None else a | b


def _interpret(data, threshold: float, kind: str = "blobs"):
    """Return (mask bool, probability or None, instance labels or None, ignored bool or None).

    ``ignored``: the pixels an integer label image marks :data:`IGNORE_LABEL` (the ignore
    brush), which are outside the measured field."""
    a = _plane(data, "mask or probability map")
    if a.dtype == np.uint8 and a.max() <= 1 and a.min() >= 0:
        return a > 0, None, None, None
    if np.issubdtype(a.dtype, np.floating):
        finite = a[np.isfinite(a)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            if np.all(finite == np.round(finite)):
                a = np.where(np.isfinite(a), a, 0).astype(np.int64)
            else:
                raise TemDefectError(
                    "The probability map has values outside 0..1; give probabilities "
                    "(0..1), a binary mask, or integer instance labels.")
        else:
            prob = np.where(np.isfinite(a), a, 0).astype(np.float32)
            return prob > threshold, prob, None, None  # the rule of predict()
    if np.issubdtype(a.dtype, np.integer):
        values = np.unique(a)
        values = values[values != 0]
        if values.size == 1:  # a mask: 0/1, 0/255, or a 16-bit 0/65535 (not "all ignored")
            return a != 0, None, None, None
        ignored = a == IGNORE_LABEL
        if ignored.any():  # next to other labels, 65535 is the ignore brush
            a = np.where(ignored, 0, a)
            values = values[values != IGNORE_LABEL]
        else:
            ignored = None
        if values.size <= 1:
            return a != 0, None, None, ignored
        if values.min() < 0:
            raise TemDefectError("The label image has negative values; give a mask or "
                                 "labels with 0 for background and positive ids.")
        if kind == "lines":  # lines are measured from the mask; their ids do not matter
            return a > 0, None, None, ignored
        _check_plausible_labels(a, values.size)
        return a > 0, None, a, ignored
    raise TemDefectError(f"The mask has dtype {a.dtype}; give a mask, labels or probabilities.")


def quantify(mask_or_probability, kind: str, pixel_size_nm: float | None = None, *,
             labels=None, probability=None, confidence=None, thickness_nm=None,
             min_size_px: int | None = None, threshold: float = 0.5,
             split_touching: bool = False, image_name: str = "image",
             split_h_px: float = 2.0, gap_px: int | None = None,
             fill_boundaries: bool = True, exclude=None) -> QuantResult:
    """Label, measure and summarise the defects of one image.

    Pixels marked ignore (:data:`IGNORE_LABEL` in integer input or ``labels``) and ``exclude``
    (bool, same shape) are outside the measured field: no object is counted there, densities
    and fractions are per the remaining area, and an object that touches them is treated like
    one cut by the image edge (``touches_border``), since its extent is unknown.

    ``pixel_size_nm=None`` means uncalibrated: every length/area column is in pixels and named
    ``_px``/``_px2``. ``thickness_nm`` (lines) adds the dislocation density ρ = L/(A·t) in m⁻².
    ``min_size_px`` (default :data:`DEFAULT_MIN_SIZE_PX`) drops smaller objects: area in px for
    blobs and grains, skeleton length in px for lines. See docs/quantification.md.
    """
    from . import blobs, grains, lines

    if kind not in KINDS:
        raise TemDefectError(f"Unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    px = _check_number(pixel_size_nm, "pixel size",
                       "give nm per pixel, or leave it empty for an uncalibrated image")
    t = _check_number(thickness_nm, "foil thickness", "give it in nm, or leave it empty")
    if not 0 < float(threshold) < 1:
        raise TemDefectError(f"The threshold is {threshold}; choose a value between 0 and 1.")
    min_size = DEFAULT_MIN_SIZE_PX[kind] if min_size_px is None else int(min_size_px)
    if min_size < 0:
        raise TemDefectError("The minimum size is negative; give 0 or more pixels.")

    mask, prob, instances, ignored = _interpret(mask_or_probability, float(threshold), kind)
    shape = mask.shape
    if labels is not None:
        lab = _same_shape(labels, shape, "labels")
        if not np.issubdtype(lab.dtype, np.integer):
            raise TemDefectError("The labels are not integers; give an integer label image.")
        ignored = _union(ignored, lab == IGNORE_LABEL)
        instances = np.where(lab == IGNORE_LABEL, 0, lab)
        if kind != "grains":
            mask = instances > 0
    if exclude is not None:
        ignored = _union(ignored, _same_shape(exclude, shape, "exclude mask").astype(bool))
    excluded = ignored if ignored is not None and ignored.any() else None
    if excluded is not None:
        if excluded.all():
            raise TemDefectError("Every pixel is marked ignore, so nothing is left to measure; "
                                 "erase the ignore label from the region to measure.")
        if kind == "grains":
            mask = mask | excluded  # a separator: no grain grows across an ignored region
        else:
            mask = mask & ~excluded
        if instances is not None:
            instances = np.where(excluded, 0, instances)
    if probability is not None:
        prob = _same_shape(probability, shape, "probability map").astype(np.float32)
    conf = _same_shape(confidence, shape, "confidence map")

    if instances is not None:
        instances, renumbered = _fit_ids(instances)
    extra: dict = {}
    columns: dict = {}
    cut_reference = None
    foreground = int(np.count_nonzero(mask))
    length = None
    touches = None
    if kind == "blobs":
        if instances is not None:
            lab = blobs.remove_small(np.asarray(instances, np.int32).copy(), min_size)
            if split_touching:  # within each given label: touching labels stay as given
                lab = blobs.remove_small(blobs.split_each_label(lab, split_h_px), min_size)
        else:
            lab = blobs.label_blobs(mask, min_size, split_touching, split_h_px)
        foreground = int(np.count_nonzero(lab))
    elif kind == "lines":
        lab, skel, length, ends, junctions = lines.label_lines(mask, min_size)
        extra["skeleton"] = skel
        columns = {"endpoints": ends, "junctions": junctions}
        foreground = int(np.count_nonzero(lab))
    else:
        gap = grains.DEFAULT_GAP_PX if gap_px is None else int(gap_px)
        if gap < 0:
            raise TemDefectError(f"The gap is {gap} px; give 0 (no bridging) or more pixels.")
        if instances is not None:
            lab = blobs.remove_small(np.asarray(instances, np.int32).copy(), min_size)
            n = int(lab.max()) + 1
            solidity = grains._solidity(lab, n)
            extra["boundary"] = lab == 0
        else:
            lab, interiors, closed, touches, solidity, filled = grains.label_grains(
                mask, min_size, gap, fill_boundaries)
            # cut by an ignored region: decided on the filled grains, as at the image edge,
            # so that it does not depend on fill_boundaries
            cut_reference = filled
            extra["boundary"] = closed
            extra["interiors"] = interiors
        convex = solidity >= grains.CONVEX_SOLIDITY
        columns = {"solidity": solidity, "convex": convex}
        if excluded is not None:
            lab = np.where(excluded, 0, lab)
            if cut_reference is not None:
                cut_reference = np.where(excluded, 0, cut_reference)
            extra["boundary"] = extra["boundary"] & ~excluded
            mask = mask & ~excluded
        foreground = int(np.count_nonzero(extra["boundary"]))
    lab = np.asarray(lab, np.int32)
    if instances is None and lab.max(initial=0) >= IGNORE_LABEL:
        # ids the project numbers itself skip the ignore value, so a labels file written
        # from them (analyze's <name>_labels.tif) never reads back with an object ignored
        lab = np.where(lab >= IGNORE_LABEL, lab + 1, lab)
        if cut_reference is not None:
            cut_reference = np.where(cut_reference >= IGNORE_LABEL, cut_reference + 1,
                                     cut_reference)
    extra["mask"] = mask
    if excluded is not None:
        extra["excluded"] = excluded

    objects = measure(lab, px, kind=kind, image=image_name, probability=prob,
                      confidence=conf, length_px=length, extra=columns)
    if kind == "grains" and touches is not None:
        objects["touches_border"] = touches[objects["label"].to_numpy()]
    if excluded is not None and len(objects):
        near = ndi.binary_dilation(excluded, structure=np.ones((3, 3), bool))
        ref = lab if cut_reference is None else cut_reference
        cut = np.unique(ref[near & (ref > 0)])
        objects["touches_border"] = objects["touches_border"].to_numpy(bool) | \
            np.isin(objects["label"].to_numpy(), cut)
    grain_convex = objects["convex"].to_numpy(bool) if kind == "grains" else None
    summary = summarize(objects, kind=kind, image=image_name, shape=shape, pixel_size_nm=px,
                        foreground_px=foreground, thickness_nm=t, min_size_px=min_size,
                        threshold=float(threshold) if prob is not None else None,
                        grain_convex=grain_convex,
                        excluded_px=0 if excluded is None else int(np.count_nonzero(excluded)))
    notes = []
    if instances is not None and renumbered:
        notes.append(f"the label ids (up to {renumbered}) do not fit 32 bits, so they were "
                     "renumbered 1..N in raster order")
    if kind == "blobs" and instances is not None:
        notes += _scattered_labels_note(lab)
    fraction = float(summary["area_fraction"].iloc[0])
    if kind == "grains" and fraction > 0.5:
        notes.append(f"The boundaries cover {100 * fraction:.0f} % of the image, "
                     "so the mask is probably inverted (grains white); grains are the regions "
                     "that a boundary mask encloses, so invert it and measure again.")
    return QuantResult(labels=lab, objects=objects, summary=summary, kind=kind,
                       pixel_size_nm=px, extra=extra, notes=notes)
