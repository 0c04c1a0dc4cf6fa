"""Lines (grain boundaries, dislocations): length from the skeleton.

Method (see docs/quantification.md):

1. Each 8-connected component of the mask is one line network (one table row).
2. The mask is thinned to a one-pixel skeleton (``skimage.morphology.skeletonize``): a thin
   8-connected curve with one pixel per column where it runs closer to horizontal than 45°,
   one per row otherwise.
3. Each skeleton pixel therefore stands for one step along x (or y), whose length along the
   curve is ``1 / max(|cos θ|, |sin θ|)`` with θ the local direction of the curve. θ is the
   principal axis of the skeleton pixels around it (Gaussian weights, σ = 2.5 px, window
   9 × 9 px). Every pixel is counted once, so a junction never counts a branch twice.
4. A free end stands for half a step, so each end point counts half. An isolated dot has
   length 0.
5. The length is that of the centre line: thinning ends about half a line width before the
   rounded ends of the mask, which is where the centre line of a blurred line ends.

Accuracy (tested): straight lines at any angle and arcs of radius ≥ 15 px within about 1%
(exact for 1-px digital straight lines); the plain chain code (1 per orthogonal, √2 per
diagonal step) reads lines at 22.5° 8% long and curves 5.5% long, and the corner-count
estimator of Vossepoel & Smeulders (1982) axis-parallel lines 2–3% short.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .blobs import EIGHT, relabel, remove_small

def skeleton_edges(skel: np.ndarray):
    """Boolean edge maps of the skeleton graph, each padded to the image shape.

    ``h[r, c]`` joins (r, c)–(r, c+1); ``v[r, c]`` joins (r, c)–(r+1, c); ``d1[r, c]`` joins
    (r, c)–(r+1, c+1); ``d2[r, c]`` joins (r, c+1)–(r+1, c).
    """
    s = np.asarray(skel, bool)
    h = np.zeros_like(s)
    v = np.zeros_like(s)
    d1 = np.zeros_like(s)
    d2 = np.zeros_like(s)
    h[:, :-1] = s[:, :-1] & s[:, 1:]
    v[:-1] = s[:-1] & s[1:]
    a, b, c, d = s[:-1, :-1], s[:-1, 1:], s[1:, :-1], s[1:, 1:]  # 2x2 window: a b / c d
    d1[:-1, :-1] = a & d & ~b & ~c
    d2[:-1, :-1] = b & c & ~a & ~d
    return h, v, d1, d2


def _shift(x, dr, dc):
    """out[r, c] = x[r + dr, c + dc] (zero outside)."""
    out = np.zeros_like(x)
    H, W = x.shape
    out[max(0, -dr):H - max(0, dr), max(0, -dc):W - max(0, dc)] = \
        x[max(0, dr):H - max(0, -dr), max(0, dc):W - max(0, -dc)]
    return out


def skeleton_graph(skel: np.ndarray):
    """Per-pixel counts of the skeleton graph: (edges, degree, corner, endpoint, junction)."""
    h, v, d1, d2 = skeleton_edges(skel)
    left, right = _shift(h, 0, -1), h
    up, down = _shift(v, -1, 0), v
    ul, dr = _shift(d1, -1, -1), d1
    ur, dl = _shift(d2, -1, 0), _shift(d2, 0, -1)
    deg = sum(x.astype(np.uint8) for x in (left, right, up, down, ul, dr, ur, dl))
    straight = (left & right) | (up & down) | (ul & dr) | (ur & dl)
    corner = (deg == 2) & ~straight
    s = np.asarray(skel, bool)
    return (h, v, d1, d2), deg, corner, s & (deg == 1), s & (deg >= 3)


#: Local direction window: Gaussian sigma and half-width (px).
ORIENT_SIGMA_PX, ORIENT_RADIUS_PX = 2.5, 4


def local_direction(skel: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Angle (radians, from +x with rows downwards) of the curve at skeleton pixels (ys, xs):
    the principal axis of the Gaussian-weighted skeleton pixels around each one."""
    R, sig = ORIENT_RADIUS_PX, ORIENT_SIGMA_PX
    pad = np.pad(np.asarray(skel, bool), R)
    yy, xx = ys + R, xs + R
    m = np.zeros((6, len(ys)), np.float64)  # c0, cx, cy, cxx, cyy, cxy
    for dy in range(-R, R + 1):
        for dx in range(-R, R + 1):
            w = np.exp(-(dx * dx + dy * dy) / (2 * sig * sig))
            hit = pad[yy + dy, xx + dx]
            if not hit.any():
                continue
            v = hit * w
            m += np.outer((1, dx, dy, dx * dx, dy * dy, dx * dy), v)
    c0 = np.maximum(m[0], 1e-12)
    mx, my = m[1] / c0, m[2] / c0
    sxx, syy, sxy = m[3] / c0 - mx * mx, m[4] / c0 - my * my, m[5] / c0 - mx * my
    return 0.5 * np.arctan2(2 * sxy, sxx - syy)


def line_lengths(labels: np.ndarray, skel: np.ndarray):
    """Skeleton length in pixels per label id, plus end-point and junction counts.

    Returns three float arrays indexed by label id: length, endpoints, junctions.
    """
    n = int(labels.max()) + 1 if labels.size else 1
    skel = np.asarray(skel, bool)
    _edges, deg, _corner, ends, junctions = skeleton_graph(skel)
    ys, xs = np.nonzero(skel)
    theta = local_direction(skel, ys, xs)
    step = 1.0 / np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))
    step = np.where(ends[ys, xs], 0.5 * step, step)
    step = np.where(deg[ys, xs] == 0, 0.0, step)  # an isolated dot has no length
    length = np.bincount(labels[ys, xs], weights=step, minlength=n)

    def count(m):
        return np.bincount(labels[m], minlength=n).astype(np.float64)

    return length, count(ends), count(junctions)


def label_lines(mask: np.ndarray, min_size_px: int = 0):
    """Label the line networks of ``mask`` and measure them.

    Returns (labels int32, skeleton bool, length_px, endpoints, junctions), the last three
    indexed by label id. ``min_size_px`` drops networks whose skeleton is shorter.
    """
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, bool)
    labels, _ = ndi.label(mask, structure=EIGHT)
    skel = skeletonize(mask)
    length, ends, junctions = line_lengths(labels, skel)
    if min_size_px and min_size_px > 0:
        short = length < min_size_px
        short[0] = False
        if short.any():
            labels[short[labels]] = 0
    labels = remove_small(labels, 1)
    keep_ids = np.unique(labels)
    keep_ids = keep_ids[keep_ids > 0]
    new = relabel(labels)
    # carry the per-id measures over to the new ids
    order = np.zeros(len(keep_ids) + 1, np.int64)
    order[1:] = keep_ids
    skel = skel & (new > 0)
    return new, skel, length[order], ends[order], junctions[order]
