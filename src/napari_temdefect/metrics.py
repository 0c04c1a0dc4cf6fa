"""Segmentation and calibration metrics, on numpy arrays.

* ``pixel_f1``: F1 of foreground pixels (the seed paper's metric, threshold 0.5).
* ``boundary_f1``: F1 with a distance tolerance, for thin lines: a predicted pixel counts as
  correct if a true pixel lies within ``tolerance_px`` (Euclidean, ≤; and vice versa for
  recall). On the masks as given, so it forgives width as well as position (a line drawn
  twice as wide scores 1); ``centreline=True`` scores the skeletons of both, which forgives
  position only.
* ``object_f1``: F1 over objects matched one-to-one at IoU ≥ ``iou``.
* ``count_errors``: where a count error comes from: objects missed, objects invented, true
  objects merged into one prediction, true objects split into several.
* ``auroc``: area under the ROC curve of a score predicting a binary event (rank formula).
* ``ece``: expected calibration error of foreground probabilities, equal-width bins.

Pixels where ``ignore`` is True are left out everywhere. Conventions: two empty masks give
F1 1 (nothing to find, nothing found), one empty side 0; ``auroc`` is NaN when only one class
is present, ``ece`` NaN when no pixel is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class F1:
    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int


def _f1(tp: int, fp: int, fn: int) -> F1:
    p = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    r = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return F1(float(f), float(p), float(r), int(tp), int(fp), int(fn))


def _keep(shape, ignore):
    return np.ones(shape, bool) if ignore is None else ~np.asarray(ignore, bool)


def pixel_f1(pred, truth, ignore=None) -> F1:
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    keep = _keep(pred.shape, ignore)
    tp = np.count_nonzero(pred & truth & keep)
    fp = np.count_nonzero(pred & ~truth & keep)
    fn = np.count_nonzero(~pred & truth & keep)
    return _f1(tp, fp, fn)


def boundary_f1(pred, truth, tolerance_px: float = 3.0, ignore=None,
                centreline: bool = False) -> F1:
    """Tolerant F1 for line structures: precision counts predicted pixels within
    ``tolerance_px`` of the truth, recall counts true pixels within it of the prediction.

    ``centreline``: thin both masks to their skeletons first (the boundary F1 of edge
    detection, without its one-to-one matching), so a too-wide line is not forgiven."""
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    keep = _keep(pred.shape, ignore)
    # ignored pixels are neither found nor wanted: they must not make a neighbour correct
    pred, truth = pred & keep, truth & keep
    if centreline:
        from skimage.morphology import skeletonize

        pred, truth = skeletonize(pred), skeletonize(truth)
    dist_to_truth = ndi.distance_transform_edt(~truth) if truth.any() else np.full(pred.shape, np.inf)
    dist_to_pred = ndi.distance_transform_edt(~pred) if pred.any() else np.full(pred.shape, np.inf)
    p_ok = np.count_nonzero(pred & keep & (dist_to_truth <= tolerance_px))
    p_all = np.count_nonzero(pred & keep)
    t_ok = np.count_nonzero(truth & keep & (dist_to_pred <= tolerance_px))
    t_all = np.count_nonzero(truth & keep)
    precision = p_ok / p_all if p_all else (1.0 if t_all == 0 else 0.0)
    recall = t_ok / t_all if t_all else (1.0 if p_all == 0 else 0.0)
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return F1(float(f), float(precision), float(recall), p_ok, p_all - p_ok, t_all - t_ok)


def _overlaps(pred_labels, truth_labels):
    """The pairs of labelled objects that share pixels: ``(pairs (2, N) of (pred id, truth
    id), shared pixels (N,), pred area (N,), truth area (N,), pred ids, truth ids)``, the
    areas being each pair member's whole area."""
    pred_labels, truth_labels = np.asarray(pred_labels), np.asarray(truth_labels)
    p_ids, p_area = np.unique(pred_labels[pred_labels > 0], return_counts=True)
    t_ids, t_area = np.unique(truth_labels[truth_labels > 0], return_counts=True)
    both = (pred_labels > 0) & (truth_labels > 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return np.zeros((2, 0), np.int64), empty, empty, empty, p_ids, t_ids
    pairs, inter = np.unique(np.stack([pred_labels[both], truth_labels[both]]), axis=1,
                             return_counts=True)
    return (pairs, inter, p_area[np.searchsorted(p_ids, pairs[0])],
            t_area[np.searchsorted(t_ids, pairs[1])], p_ids, t_ids)


def match_objects(pred_labels, truth_labels, iou: float = 0.5):
    """One-to-one matching of labelled objects at IoU ≥ ``iou`` (greedy by IoU).

    Returns (matches [(pred_id, truth_id, iou)], unmatched_pred_ids, unmatched_truth_ids).
    """
    pairs, inter, pa, ta, p_ids, t_ids = _overlaps(pred_labels, truth_labels)
    cands = []
    for p, t, n, a, b in zip(pairs[0].tolist(), pairs[1].tolist(), inter.tolist(), pa.tolist(),
                             ta.tolist()):
        j = n / (a + b - n)
        if j >= iou:
            cands.append((j, p, t))
    cands.sort(reverse=True)
    used_p, used_t, matches = set(), set(), []
    for j, p, t in cands:
        if p not in used_p and t not in used_t:
            used_p.add(p), used_t.add(t), matches.append((p, t, j))
    return (matches, sorted(set(p_ids.tolist()) - used_p),
            sorted(set(t_ids.tolist()) - used_t))


def object_f1(pred_labels, truth_labels, iou: float = 0.5) -> F1:
    matches, fp, fn = match_objects(pred_labels, truth_labels, iou)
    return _f1(len(matches), len(fp), len(fn))


@dataclass
class CountErrors:
    """Where the predicted count differs from the true one. A predicted and a true object
    correspond when they share at least half of the smaller one's pixels (so a sliver of
    overlap between neighbours, a line or a rim a pixel off, is no correspondence)."""

    truth: int
    pred: int
    #: true objects with no corresponding prediction
    missed: int
    #: predicted objects with no corresponding true object
    extra: int
    #: true objects lost in merges: Σ over predicted objects of (true objects it covers − 1)
    merged: int
    #: objects gained by splits: Σ over true objects of (predictions covering it − 1)
    split: int

    @property
    def error(self) -> int:
        """pred − truth: extra − missed − merged + split, plus whatever half-overlapping
        objects leave out of these four."""
        return self.pred - self.truth


def count_errors(pred_labels, truth_labels) -> CountErrors:
    """Decompose the count error of labelled objects (0 = background) into missed, extra,
    merged and split objects (see :class:`CountErrors` for when two objects correspond)."""
    if np.shape(pred_labels) != np.shape(truth_labels):
        raise ValueError(f"pred {np.shape(pred_labels)} and truth {np.shape(truth_labels)} "
                         "differ in shape")
    pairs, inter, pa, ta, p_ids, t_ids = _overlaps(pred_labels, truth_labels)
    pairs = pairs[:, 2 * inter >= np.minimum(pa, ta)]
    matched_p, per_pred = np.unique(pairs[0], return_counts=True)
    matched_t, per_truth = np.unique(pairs[1], return_counts=True)
    return CountErrors(
        truth=len(t_ids), pred=len(p_ids), missed=len(t_ids) - len(matched_t),
        extra=len(p_ids) - len(matched_p), merged=int((per_pred - 1).sum()),
        split=int((per_truth - 1).sum()))


def auroc(scores, events) -> float:
    """AUROC of ``scores`` predicting boolean ``events`` (NaN if only one class is present)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    e = np.asarray(events, bool).ravel()
    n_pos, n_neg = int(e.sum()), int((~e).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[e].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    # ties share their average rank
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def ece(probability, truth, bins: int = 15, ignore=None) -> float:
    """Expected calibration error of per-pixel foreground probabilities."""
    p = np.asarray(probability, dtype=np.float64)
    t = np.asarray(truth) > 0
    keep = _keep(p.shape, ignore) & np.isfinite(p)  # a NaN probability is no prediction
    p, t = p[keep], t[keep]
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        n = np.count_nonzero(sel)
        if n:
            total += n * abs(p[sel].mean() - t[sel].mean())
    return float(total / p.size)
