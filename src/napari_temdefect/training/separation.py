"""Where two labelled objects nearly touch: the background pixels that keep them apart.

Where the labels leave a thin strip of background between two touching bubbles, each counts
on its own. A network trained with a plain per-pixel loss pays for that strip only as much as
for any other edge pixel, tends to fill it, and counts two bubbles as one. U-Net's border
weight (Ronneberger et al., MICCAI 2015) makes those pixels count more in the loss:
:func:`gap_mask` marks them; ``TrainConfig.separation`` is the extra weight they get.

It suits labels that always keep touching objects apart. The He-bubble labels join touching
bubbles in some places, and there the weighted network splits what the labels join
(docs/models.md, "Keeping touching bubbles apart in training"), so the bundled models train
without it."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

#: A background pixel is "between" two objects when both lie within this many pixels of it,
#: i.e. the strips of background up to twice as wide as this that separate two objects.
GAP_RADIUS_PX = 3


def gap_mask(objects: np.ndarray, radius: int = GAP_RADIUS_PX) -> np.ndarray:
    """Bool mask of the background pixels (``objects == 0``) that have two different object
    ids within ``radius`` px (Euclidean disk).

    ``objects``: integer ids, 0 for background (instance labels, or connected components of a
    class). One isolated object, however close to the image edge, marks nothing.
    """
    objects = np.asarray(objects)
    if objects.ndim != 2:
        raise ValueError(f"objects must be a 2D id image (got shape {objects.shape})")
    if int(radius) < 1 or not objects.any():
        return np.zeros(objects.shape, bool)
    ids = objects.astype(np.int64)
    foot = disk(int(radius)).astype(bool)
    big = int(ids.max()) + 1  # above every id (scipy takes cval as a float: keep it small)
    high = ndi.maximum_filter(ids, footprint=foot, mode="constant", cval=0)
    low = ndi.minimum_filter(np.where(ids > 0, ids, big), footprint=foot, mode="constant",
                             cval=big)
    return (ids == 0) & (low != big) & (high != low)


def object_ids(class_map: np.ndarray, instances: np.ndarray | None = None) -> np.ndarray:
    """Object ids to separate: the ``instances`` ids where they are instance labels (two or
    more ids; 0 stays background), else the 8-connected components of each class of
    ``class_map``, numbered apart, so two classes that touch count as two objects. A binary
    mask saved as 0/255 is one id, so its objects are its components."""
    from ..corrections import instances_by_class

    class_map = np.asarray(class_map)
    if instances is not None:
        ids = np.where(class_map > 0, np.asarray(instances, np.int64), 0)
        if np.unique(ids[ids > 0]).size > 1:
            return ids
    return instances_by_class(class_map, dtype=np.int64)


def separation_weight(class_map: np.ndarray, weight: float, instances=None,
                      radius: int = GAP_RADIUS_PX) -> np.ndarray | None:
    """Per-pixel loss weight, 1 everywhere and ``1 + weight`` on :func:`gap_mask` pixels
    (float32); None when ``weight`` is 0, so recipes without it change nothing."""
    if not weight:
        return None
    gap = gap_mask(object_ids(class_map, instances), radius)
    return (1.0 + float(weight) * gap).astype(np.float32)
