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


#: A component is a split candidate when its area exceeds this many times the area of the
#: largest disk it contains (an isolated round blob is about 1).
SPLIT_CANDIDATE_RATIO = 1.3


def split_touching_blobs(mask: np.ndarray, h_px: float = 2.0) -> np.ndarray:
    """Watershed of the negated distance transform, seeded by its h-maxima.

    Only components that are not disk-like (area > 1.3 × the largest inscribed disk) are
    split. Each component is examined in its own bounding box, one pixel wider, with its own
    distance transform, which equals the whole image's there (the nearest background pixel of
    a component lies inside that box). So memory follows the largest blob, not the image: a
    16k² mask needs no image-sized float arrays, and fields of separate blobs cost little.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    comps, n = ndi.label(mask, structure=EIGHT)
    out = comps.astype(np.int32)
    if n == 0:
        return out
    area = np.bincount(comps.ravel(), minlength=n + 1)
    h, w = mask.shape
    next_id = n + 1
    for i, sl in enumerate(ndi.find_objects(comps), start=1):
        if area[i] < 4:  # no disk of radius 1 fits twice
            continue
        win = (slice(max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)),
               slice(max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)))
        own = comps[win] == i
        d = ndi.distance_transform_edt(own)
        if area[i] <= SPLIT_CANDIDATE_RATIO * np.pi * float(d.max()) ** 2:
            continue  # disk-like: one blob
        seeds = h_maxima(d, h_px).astype(bool) & own
        markers, k = ndi.label(seeds, structure=EIGHT)
        if k < 2:
            continue
        ws = watershed(-d, markers, mask=own, connectivity=2)
        # pixels no seed reached (thin spurs) stay with the first piece
        ws[own & (ws == 0)] = 1
        region = out[win]
        region[own] = np.where(ws[own] == 1, i, ws[own] - 2 + next_id)
        next_id += k - 1
    return out


def split_each_label(labels: np.ndarray, h_px: float = 2.0) -> np.ndarray:
    """:func:`split_touching_blobs` inside each given label: labels that touch stay apart (as
    given), and a label that covers two touching blobs becomes two. Piece 1 keeps the label's
    id; the others get new ids above the largest one."""
    out = np.asarray(labels).copy()
    next_id = int(out.max(initial=0)) + 1
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        own = labels[sl] == i
        pieces = split_touching_blobs(own, h_px)
        k = int(pieces.max(initial=0))
        if k > 1:
            region = out[sl]
            region[own] = np.where(pieces[own] == 1, i, pieces[own] - 2 + next_id)
            next_id += k - 1
    return out
