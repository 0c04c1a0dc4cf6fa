"""Lines (grain boundaries, dislocations): length from the skeleton.

Method (see docs/quantification.md):

1. Each 8-connected component of the mask is one line network (one table row).
2. The mask is thinned to a one-pixel skeleton (``skimage.morphology.skeletonize``).
3. The skeleton is read as a graph whose edges join 8-neighbouring skeleton pixels. Each pixel
   pair is counted once. A diagonal pair is dropped when the two pixels are already joined
   through a shared orthogonal neighbour, so the little triangles at corners and junctions are
   not counted twice.
4. The length is the corner-count estimator of Vossepoel & Smeulders (1982),
   ``L = 0.980 n_e + 1.406 n_o - 0.091 n_c``, with ``n_e`` the orthogonal steps, ``n_o`` the
   diagonal steps and ``n_c`` the corners (skeleton pixels with two neighbours that are not
   opposite each other). The plain chain code (1 and √2 per step) overestimates lines at
   22.5° by 8% and curves by 5.5% on average; this estimator stays within about 2% at any
   angle and curvature.
5. The length is that of the centre line: thinning stops about half the line width short of
   each rounded end of the mask, which is where the centre line of a blurred line ends. An
   isolated dot has length 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .blobs import EIGHT, relabel, remove_small

#: Vossepoel & Smeulders (1982) corner-count weights: orthogonal, diagonal, corner.
W_ORTHO, W_DIAG, W_CORNER = 0.980, 1.406, -0.091


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


def line_lengths(labels: np.ndarray, skel: np.ndarray):
    """Skeleton length in pixels per label id, plus end-point and junction counts.

    Returns three float arrays indexed by label id: length, endpoints, junctions.
    """
    n = int(labels.max()) + 1 if labels.size else 1
    (h, v, d1, d2), deg, corner, ends, junctions = skeleton_graph(skel)

    def count(m, lab=labels):
        return np.bincount(lab[m], minlength=n).astype(np.float64)

    # d2[r, c] joins (r, c+1)-(r+1, c): take the label of (r, c+1)
    n_e, n_o = count(h) + count(v), count(d1) + count(d2, _shift(labels, 0, 1))
    n_c = count(corner)
    length = W_ORTHO * n_e + W_DIAG * n_o + W_CORNER * n_c
    n_end = count(ends)
    return length, n_end, count(junctions)


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
