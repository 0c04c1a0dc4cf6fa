"""Comparing a result with a reference (annotation).

* Annotation-independent measures of the seed paper (arXiv:2507.16779): the number of objects
  (grains) in each, and the distance between the two size distributions (equivalent
  diameters): Kolmogorov–Smirnov statistic and Wasserstein (earth mover's) distance, the
  latter in nm (px when uncalibrated).
* Pixel F1 (foreground pixels; for grains, boundary pixels), boundary F1 with a tolerance for
  lines and grain boundaries, and object F1 (one-to-one matches at IoU ≥ ``iou``), from
  :mod:`napari_temdefect.metrics`.
* A confusion overlay as in the paper's figures: true positives green, false positives blue,
  false negatives red, true negatives transparent (RGBA uint8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import metrics
from ..errors import TemDefectError

TP_COLOR = (0, 255, 0, 255)
FP_COLOR = (0, 0, 255, 255)
FN_COLOR = (255, 0, 0, 255)


@dataclass
class Comparison:
    metrics: pd.DataFrame   # one row
    overlay: np.ndarray     # (H, W, 4) uint8
    pred: object            # QuantResult
    truth: object           # QuantResult


def confusion_overlay(pred_mask, truth_mask) -> np.ndarray:
    """RGBA uint8 image: TP green, FP blue, FN red, TN transparent."""
    p, t = np.asarray(pred_mask, bool), np.asarray(truth_mask, bool)
    if p.shape != t.shape:
        raise TemDefectError(f"The prediction is {p.shape} px but the reference is {t.shape} "
                             "px; compare images of the same size.")
    out = np.zeros(p.shape + (4,), np.uint8)
    out[p & t] = TP_COLOR
    out[p & ~t] = FP_COLOR
    out[~p & t] = FN_COLOR
    return out


def size_distance(a, b) -> tuple[float, float]:
    """(Kolmogorov–Smirnov statistic, Wasserstein distance) of two samples (NaN if one is empty)."""
    from scipy.stats import ks_2samp, wasserstein_distance

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    return float(ks_2samp(a, b).statistic), float(wasserstein_distance(a, b))


def _scored_mask(result, kind: str) -> np.ndarray:
    """The mask that was measured (a grain label image: the pixels between its grains)."""
    mask = result.extra.get("mask")
    if kind == "grains" and "interiors" not in result.extra:  # grains given as labels
        mask = result.extra.get("boundary")
    if mask is None:
        mask = result.extra.get("boundary") if kind == "grains" else result.labels > 0
    return np.asarray(mask, bool)


def counted_labels(result, kind: str) -> np.ndarray:
    """The labels behind ``count_pred``/``count_truth``: grains cut by the edge are left out,
    as in the count."""
    labels = np.asarray(result.labels)
    if kind != "grains" or result.objects.empty:
        return labels
    cut = result.objects.loc[result.objects["touches_border"], "label"].to_numpy()
    return np.where(np.isin(labels, cut), 0, labels)


def compare(pred, truth, kind: str, pixel_size_nm: float | None = None, *, iou: float = 0.5,
            tolerance_px: float = 3.0, image_name: str = "image", exclude=None,
            **quantify_kwargs) -> Comparison:
    """Quantify ``pred`` and ``truth`` alike (or take given QuantResults) and compare them.

    Pixels that either marks ignore (see :func:`~napari_temdefect.quantify.quantify`), and
    ``exclude`` (bool), are left out of both: each is quantified without them, and no pixel
    there is scored. (A given QuantResult is taken as it is.)"""
    from . import QuantResult, _same_shape, quantify

    def q(x, name, exclude=None):
        if isinstance(x, QuantResult):
            return x
        extra = {} if exclude is None else {"exclude": exclude}
        return quantify(x, kind, pixel_size_nm, image_name=name, **quantify_kwargs, **extra)

    p, t = q(pred, image_name), q(truth, image_name)
    if p.labels.shape != t.labels.shape:
        raise TemDefectError(f"The prediction is {p.labels.shape} px but the reference is "
                             f"{t.labels.shape} px; compare images of the same size.")
    pe, te = p.extra.get("excluded"), t.extra.get("excluded")
    excluded = None
    given = None if exclude is None else \
        _same_shape(exclude, p.labels.shape, "exclude mask").astype(bool)
    for part in (pe, te, given):
        if part is not None and part.any():
            excluded = part if excluded is None else excluded | part
    if excluded is not None:  # the ignore marks of either apply to both
        if pe is None or (excluded & ~pe).any():
            p = q(pred, image_name, exclude=excluded)
        if te is None or (excluded & ~te).any():
            t = q(truth, image_name, exclude=excluded)
    # pixel and boundary F1 on the masks as given (the seed paper's metric), not on what
    # counting kept of them (specks under the minimum size, grain interiors too small)
    pm, tm = (_scored_mask(r, kind) for r in (p, t))
    if excluded is not None:  # given QuantResults may still differ there
        pm, tm = pm & ~excluded, tm & ~excluded
    pix = metrics.pixel_f1(pm, tm)
    bnd = metrics.boundary_f1(pm, tm, tolerance_px=tolerance_px)
    obj = metrics.object_f1(p.labels, t.labels, iou=iou)
    cal = p.pixel_size_nm is not None
    d = "equivalent_diameter_nm" if cal else "equivalent_diameter_px"
    if kind == "grains":  # the paper compares grains inside the field
        pd_ = p.objects.loc[~p.objects["touches_border"], d]
        td_ = t.objects.loc[~t.objects["touches_border"], d]
    else:
        pd_, td_ = p.objects[d], t.objects[d]
    counts = metrics.count_errors(*(counted_labels(r, kind) for r in (p, t)))
    ks, wd = size_distance(pd_, td_)
    unit = "nm" if cal else "px"
    row = {
        "image": image_name, "kind": kind,
        "pixel_size_nm": p.pixel_size_nm if cal else np.nan,
        "pixel_f1": pix.f1, "pixel_precision": pix.precision, "pixel_recall": pix.recall,
        "boundary_f1": bnd.f1, "boundary_tolerance_px": tolerance_px,
        "object_f1": obj.f1, "object_precision": obj.precision, "object_recall": obj.recall,
        "object_iou": iou, "matched": obj.tp, "false_positives": obj.fp,
        "false_negatives": obj.fn,
        # where the count error comes from (objects that share a pixel correspond)
        "count_missed": counts.missed, "count_extra": counts.extra,
        "count_merged": counts.merged, "count_split": counts.split,
        "count_pred": len(pd_), "count_truth": len(td_),
        "count_ratio": len(pd_) / len(td_) if len(td_) else np.nan,
        "size_ks": ks, f"size_wasserstein_{unit}": wd,
        f"mean_diameter_pred_{unit}": float(np.mean(pd_)) if len(pd_) else np.nan,
        f"mean_diameter_truth_{unit}": float(np.mean(td_)) if len(td_) else np.nan,
    }
    return Comparison(metrics=pd.DataFrame([row]), overlay=confusion_overlay(pm, tm),
                      pred=p, truth=t)
