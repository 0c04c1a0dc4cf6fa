"""Blobs (bubbles, voids, loops, precipitates): connected components of a mask.

Touching blobs can be split with a watershed on the distance transform: every maximum of the
distance to the background that rises at least ``split_h_px`` pixels above the saddle joining
it to a neighbour seeds one blob. Two round blobs that overlap by less than about half a
radius are separated; an elongated blob, whose distance ridge falls steadily from its middle,
stays whole.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

EIGHT = np.ones((3, 3), bool)


def remove_small(labels: np.ndarray, min_size_px: int) -> np.ndarray:
    """Zero every label with fewer than ``min_size_px`` pixels (in place; returns labels)."""
    if min_size_px and min_size_px > 1 and labels.any():
        area = np.bincount(labels.ravel())
        small = area < min_size_px
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return labels


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1..N in order of first appearance by raster scan (int32)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[labels]


def label_blobs(mask: np.ndarray, min_size_px: int = 0, split_touching: bool = False,
                split_h_px: float = 2.0) -> np.ndarray:
    """8-connected components of ``mask`` (int32, 1..N), optionally split by watershed."""
    mask = np.asarray(mask, bool)
    labels, _ = ndi.label(mask, structure=EIGHT)
    labels = remove_small(labels.astype(np.int32), min_size_px)
    if split_touching and labels.any():
        labels = split_touching_blobs(labels > 0, split_h_px)
        labels = remove_small(labels, min_size_px)
    return relabel(labels)


def split_touching_blobs(mask: np.ndarray, h_px: float = 2.0) -> np.ndarray:
    """Watershed of the negated distance transform, seeded by its h-maxima."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(mask)
    seeds = h_maxima(dist, h_px).astype(bool) & mask
    markers, n = ndi.label(seeds, structure=EIGHT)
    out = watershed(-dist, markers, mask=mask, connectivity=2).astype(np.int32)
    # blobs too thin to hold a seed keep their connected component
    missed = mask & (out == 0)
    if missed.any():
        extra, _ = ndi.label(missed, structure=EIGHT)
        out[missed] = extra[missed] + n
    return out
