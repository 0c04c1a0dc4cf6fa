"""Per-object and per-image tables, their units, and CSV writing.

All measurements are vectorised over the whole label image (``np.bincount`` over foreground
pixels), so 20,000 objects take well under a second; nothing loops over objects in Python.

Units: with a pixel size (nm per pixel) lengths are in nm, areas in nm², field quantities in
µm. Without one, every unit-bearing column is renamed to pixels (``_nm`` → ``_px``, ``_nm2`` and
``_um2`` → ``_px2``, ``_um`` → ``_px``) and holds pixel values: a pixel is never reported as a
nanometre. See docs/quantification.md for every formula.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from ..files import atomic_write

#: Per-object columns, in order (calibrated names; see :func:`px_names` for uncalibrated ones).
OBJECT_COLUMNS = [
    "image", "kind", "label",
    "centroid_x_nm", "centroid_y_nm",
    "area_nm2", "equivalent_diameter_nm",
    "major_axis_nm", "minor_axis_nm", "orientation_deg", "eccentricity",
    "length_nm",
    "mean_probability", "mean_confidence", "touches_border",
]

#: Per-image summary columns, in order (calibrated names).
SUMMARY_COLUMNS = [
    "image", "kind", "pixel_size_nm", "field_area_um2", "ignored_fraction",
    "count", "count_excluding_border",
    "number_density_per_um2", "number_density_excluding_border_per_um2",
    "area_fraction",
    "mean_equivalent_diameter_nm", "median_equivalent_diameter_nm",
    "std_equivalent_diameter_nm", "p10_equivalent_diameter_nm", "p90_equivalent_diameter_nm",
    "total_line_length_um", "line_density_per_um", "thickness_nm", "dislocation_density_m2",
    "grain_count", "grain_count_including_border", "convex_grain_count",
    "mean_grain_diameter_nm",
    "min_size_px", "threshold",
]

_SUFFIXES = (  # longest first
    ("_per_um2", "_per_px2"), ("_per_um", "_per_px"),
    ("_nm2", "_px2"), ("_um2", "_px2"), ("_nm", "_px"), ("_um", "_px"),
)


def px_name(name: str) -> str:
    """The uncalibrated (pixel) name of a calibrated column name."""
    if name in ("pixel_size_nm", "min_size_px", "thickness_nm"):  # given in these units
        return name
    for old, new in _SUFFIXES:
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def column_names(columns, calibrated: bool) -> list[str]:
    return list(columns) if calibrated else [px_name(c) for c in columns]


def measure(labels: np.ndarray, pixel_size_nm: float | None, *, kind: str, image: str,
            probability=None, confidence=None, length_px=None, extra=None) -> pd.DataFrame:
    """One row per label > 0 of ``labels`` (ids need not be consecutive).

    ``length_px`` maps label ids to skeleton lengths in pixels (lines); ``extra`` is a dict of
    further columns indexed by label id (e.g. solidity of grains).
    """
    calibrated = pixel_size_nm is not None
    s = float(pixel_size_nm) if calibrated else 1.0
    lab = np.asarray(labels)
    flat = lab.ravel()
    fg = np.flatnonzero(flat)
    ids_all = flat[fg].astype(np.int64)
    n = int(ids_all.max()) + 1 if ids_all.size else 1
    area = np.bincount(ids_all, minlength=n).astype(np.float64)
    ids = np.flatnonzero(area)
    rows, cols = np.divmod(fg, lab.shape[1])
    rows = rows.astype(np.float64)
    cols = cols.astype(np.float64)

    def per(weights):
        return np.bincount(ids_all, weights=weights, minlength=n)[ids]

    a = area[ids]
    cy, cx = per(rows) / a, per(cols) / a
    # central second moments; +1/12 treats each pixel as a unit square, so that a disk of
    # radius R gives axes of exactly 2R and a single pixel is not a point
    syy = per(rows * rows) / a - cy * cy + 1.0 / 12
    sxx = per(cols * cols) / a - cx * cx + 1.0 / 12
    sxy = per(rows * cols) / a - cx * cy
    half_tr, det_part = (sxx + syy) / 2, np.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2)
    l1 = np.maximum(half_tr + det_part, 0)
    l2 = np.maximum(half_tr - det_part, 0)
    major, minor = 4 * np.sqrt(l1), 4 * np.sqrt(l2)
    # angle of the major axis from +x; rows grow downwards, so negate to get the angle
    # counter-clockwise as the image is displayed; folded into (-90, 90]
    theta = -np.degrees(0.5 * np.arctan2(2 * sxy, sxx - syy))
    theta = np.where(theta <= -90, theta + 180, theta)
    theta = np.where(np.isclose(l1, l2), 0.0, theta) + 0.0  # a circle has no orientation; no -0
    ecc = np.sqrt(np.clip(1 - np.divide(l2, l1, out=np.ones_like(l1), where=l1 > 0), 0, 1))

    border = np.zeros(n, bool)
    for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
        border[np.unique(edge)] = True
    border[0] = False

    def mean_of(arr):
        if arr is None:
            return np.full(len(ids), np.nan)
        v = np.asarray(arr, dtype=np.float64).ravel()[fg]
        return per(v) / a

    length = np.full(len(ids), np.nan)
    if length_px is not None:
        length = np.asarray([length_px.get(int(i), 0.0) for i in ids]) * s \
            if isinstance(length_px, dict) else np.asarray(length_px, np.float64)[ids] * s

    data = {
        "image": image, "kind": kind, "label": ids.astype(np.int64),
        "centroid_x_nm": cx * s, "centroid_y_nm": cy * s,
        "area_nm2": a * s * s, "equivalent_diameter_nm": 2 * np.sqrt(a / math.pi) * s,
        "major_axis_nm": major * s, "minor_axis_nm": minor * s,
        "orientation_deg": theta, "eccentricity": ecc,
        "length_nm": length,
        "mean_probability": mean_of(probability), "mean_confidence": mean_of(confidence),
        "touches_border": border[ids],
    }
    df = pd.DataFrame(data, columns=OBJECT_COLUMNS)
    if extra:
        for name, values in extra.items():
            df[name] = np.asarray(values)[ids]
    df.columns = column_names(df.columns, calibrated)
    return df


def _stats(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return dict(mean=np.nan, median=np.nan, std=np.nan, p10=np.nan, p90=np.nan)
    return dict(mean=v.mean(), median=np.median(v), std=v.std(ddof=1) if v.size > 1 else 0.0,
                p10=np.percentile(v, 10), p90=np.percentile(v, 90))


def summarize(objects: pd.DataFrame, *, kind: str, image: str, shape, pixel_size_nm,
              foreground_px: int, thickness_nm=None, min_size_px=None, threshold=None,
              grain_convex=None, excluded_px: int = 0) -> pd.DataFrame:
    """One-row summary of an object table (columns :data:`SUMMARY_COLUMNS`).

    ``excluded_px`` pixels (marked ignore) are outside the measured field."""
    calibrated = pixel_size_nm is not None
    s = float(pixel_size_nm) if calibrated else 1.0
    to_um = 1e-3 if calibrated else 1.0  # nm → µm, or px stays px
    image_px = float(shape[0]) * float(shape[1])
    field_px = image_px - float(excluded_px)
    field = field_px * (s * to_um) ** 2  # µm² or px²
    col = (lambda c: c) if calibrated else px_name
    d_col = col("equivalent_diameter_nm")
    border = objects["touches_border"].to_numpy(bool) if len(objects) else np.zeros(0, bool)
    count, inner = len(objects), int((~border).sum())
    st = _stats(objects[d_col].to_numpy() if len(objects) else [])
    row = {
        "image": image, "kind": kind, "pixel_size_nm": s if calibrated else np.nan,
        "field_area_um2": field, "ignored_fraction": float(excluded_px) / image_px,
        "count": count, "count_excluding_border": inner,
        "number_density_per_um2": count / field,
        "number_density_excluding_border_per_um2": inner / field,
        "area_fraction": foreground_px / field_px,
        "mean_equivalent_diameter_nm": st["mean"], "median_equivalent_diameter_nm": st["median"],
        "std_equivalent_diameter_nm": st["std"], "p10_equivalent_diameter_nm": st["p10"],
        "p90_equivalent_diameter_nm": st["p90"],
        "total_line_length_um": np.nan, "line_density_per_um": np.nan,
        "thickness_nm": np.nan, "dislocation_density_m2": np.nan,
        "grain_count": np.nan, "grain_count_including_border": np.nan,
        "convex_grain_count": np.nan, "mean_grain_diameter_nm": np.nan,
        "min_size_px": min_size_px if min_size_px is not None else np.nan,
        "threshold": threshold if threshold is not None else np.nan,
    }
    if kind == "lines":
        total = float(np.nansum(objects[col("length_nm")].to_numpy())) * to_um if count else 0.0
        row["total_line_length_um"] = total
        row["line_density_per_um"] = total / field
        if thickness_nm is not None:
            row["thickness_nm"] = float(thickness_nm)
            if calibrated:
                # rho = L / (A t), all in metres: (um * 1e-6) / (um2 * 1e-12 * nm * 1e-9)
                row["dislocation_density_m2"] = (total * 1e-6) / (
                    field * 1e-12 * float(thickness_nm) * 1e-9)
    if kind == "grains":
        row["grain_count"] = inner
        row["grain_count_including_border"] = count
        if grain_convex is not None:
            row["convex_grain_count"] = int(np.count_nonzero(np.asarray(grain_convex) & ~border))
        row["mean_grain_diameter_nm"] = (
            float(objects[d_col].to_numpy()[~border].mean()) if inner else np.nan)
    df = pd.DataFrame([row], columns=SUMMARY_COLUMNS)
    if not calibrated:
        # density in m^-2 needs a length unit; without calibration it cannot exist
        df = df.drop(columns=["dislocation_density_m2"])
    df.columns = column_names(df.columns, calibrated)
    return df


def write_csv(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False):
    """Write ``df`` as a plain UTF-8 comma CSV (no index; empty cells for missing values).

    Goes through :func:`files.atomic_write`: never overwrites unless ``overwrite=True`` and
    never leaves half a file.
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        df.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n", na_rep="",
                  float_format="%.10g")
    return path
