"""Label editing operations behind the Corrections widget (numpy only, no Qt, no napari).

Every function takes a 2D integer labels array (0 background, 1..N instance ids,
:data:`~napari_temdefect.constants.IGNORE_LABEL` for pixels to leave out of training) and
returns a *new* array; the input is never modified. Ignore pixels are kept as they are by every
operation except :func:`delete_object` asked for the ignore label itself.

Re-thresholding keeps the user's manual work by storing it as a difference from the model's
mask (:class:`Edits`: pixels added, pixels removed, pixels marked ignore)::

    edits = edits_from(model_mask_at_old_threshold, labels)
    labels = apply_edits(mask_from_probability(probability, new_threshold), edits, labels)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .constants import IGNORE_LABEL
from .errors import TemDefectError

_STRUCT4 = ndi.generate_binary_structure(2, 1)   # 4-connectivity: touching along an edge
_STRUCT8 = ndi.generate_binary_structure(2, 2)   # 8-connectivity: also diagonal neighbours


def _check(labels, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise TemDefectError(f"The {name} have shape {arr.shape}; give one 2D labels array.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TemDefectError(
            f"The {name} have dtype {arr.dtype}; give integer labels (0 background, ids > 0)."
        )
    return arr


def _out_dtype(arr: np.ndarray, max_id: int) -> np.dtype:
    """A dtype that holds ``max_id`` and IGNORE_LABEL (labels arrays are kept as they came)."""
    need = max(int(max_id), IGNORE_LABEL)
    if np.iinfo(arr.dtype).max >= need:
        return arr.dtype
    return np.dtype(np.uint16) if need <= 65535 else np.dtype(np.int32)


def split_ignore(labels) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(defects, ignore)``: the labels with ignore pixels set to 0, and the ignore mask."""
    arr = _check(labels)
    ignore = arr == IGNORE_LABEL
    defects = arr.copy()
    defects[ignore] = 0
    return defects, ignore


def object_ids(labels) -> np.ndarray:
    """Sorted instance ids present (not 0, not the ignore label)."""
    ids = np.unique(_check(labels))
    return ids[(ids != 0) & (ids != IGNORE_LABEL)]


def instances_from_mask(mask, connectivity: int = 2, dtype=np.uint32) -> np.ndarray:
    """Instance ids (1..N) of the connected components of a binary mask (8-connected by default)."""
    lab, _ = ndi.label(np.asarray(mask) > 0, structure=_STRUCT8 if connectivity == 2 else _STRUCT4)
    return lab.astype(dtype, copy=False)


def instances_by_class(class_map, label=None, dtype=np.int32) -> np.ndarray:
    """Instance ids (1..N) of the objects of every class of ``class_map`` (0 background,
    k = class k), numbered apart so that objects of two classes that touch never share an id.
    ``label(binary)`` labels one class's objects 1..n (default: 8-connected components)."""
    class_map = np.asarray(class_map)
    label = label or (lambda binary: instances_from_mask(binary, dtype=dtype))
    top = int(class_map.max(initial=0))
    if top <= 1:
        return np.asarray(label(class_map > 0)).astype(dtype, copy=False)
    out = np.zeros(class_map.shape, dtype=dtype)
    offset = 0
    for k in range(1, top + 1):
        binary = class_map == k
        if not binary.any():  # e.g. the classes between 0 and 255 of a 0/255 mask
            continue
        lab = np.asarray(label(binary))
        n = int(lab.max(initial=0))
        out[lab > 0] = lab[lab > 0] + offset
        offset += n
    return out


def remove_small(labels, min_size: int) -> np.ndarray:
    """Delete every object with fewer than ``min_size`` pixels."""
    arr = _check(labels)
    defects, _ = split_ignore(arr)
    counts = np.bincount(defects.ravel().astype(np.int64))
    small = np.flatnonzero((counts > 0) & (counts < int(min_size)))
    small = small[small != 0]
    out = arr.copy()
    if small.size:
        out[np.isin(arr, small)] = 0
    return out


def fill_holes(labels) -> np.ndarray:
    """Fill the holes inside each object with that object's id (ids are kept).

    A hole is background enclosed by one object; pixels of other objects or of the ignore label
    are never overwritten.
    """
    arr = _check(labels)
    out = arr.copy()
    for obj_id, sl in enumerate(ndi.find_objects(split_ignore(arr)[0]), start=1):
        if sl is None:
            continue
        sub = arr[sl]
        obj = sub == obj_id
        holes, n = ndi.label(ndi.binary_fill_holes(obj) & ~obj)
        if n == 0:
            continue
        # only holes made purely of background; a hole holding another object is left alone
        occupied = np.unique(holes[(sub != 0) & (holes > 0)])
        fill = (holes > 0) & ~np.isin(holes, occupied)
        out[sl][fill] = obj_id
    return out


def label_at(labels, position) -> int:
    """The label value at ``(row, col)`` (0 outside the image)."""
    arr = _check(labels)
    r, c = (int(np.floor(float(v) + 0.5)) for v in position[-2:])
    if not (0 <= r < arr.shape[0] and 0 <= c < arr.shape[1]):
        return 0
    return int(arr[r, c])


def delete_object(labels, position=None, label: int | None = None) -> np.ndarray:
    """Delete the object at ``position`` (row, col) or with id ``label``.

    Deleting where there is background changes nothing. At a position on an ignore region,
    only that connected region is cleared (the other ignore marks stay); ``label=IGNORE_LABEL``
    is refused, since it would clear every ignore mark in the image.
    """
    arr = _check(labels)
    if (position is None) == (label is None):
        raise TemDefectError("Give either a position or a label id of the object to delete.")
    target = label_at(arr, position) if position is not None else int(label)
    out = arr.copy()
    if target == IGNORE_LABEL:
        if position is None:
            raise TemDefectError(
                "The selected label is the ignore label; to clear one ignore region, press "
                "'d' over it (or erase it), so the other ignore marks stay.")
        regions, _ = ndi.label(arr == IGNORE_LABEL, structure=_STRUCT8)
        r, c = (int(np.floor(float(v) + 0.5)) for v in position[-2:])
        out[regions == regions[r, c]] = 0
    elif target != 0:
        out[arr == target] = 0
    return out


def merge_touching(labels, ids=None) -> np.ndarray:
    """Merge objects into one.

    ``ids=None`` merges every group of objects that touch (share an edge or a corner), each
    group taking its smallest id. With ``ids``, those objects become one (the smallest id)
    whether they touch or not.
    """
    arr = _check(labels)
    out = arr.copy()
    if ids is not None:
        ids = [int(i) for i in ids if int(i) not in (0, IGNORE_LABEL)]
        present = [i for i in ids if np.any(arr == i)]
        if len(present) >= 2:
            out[np.isin(arr, present)] = min(present)
        return out
    defects, _ = split_ignore(arr)
    groups, n = ndi.label(defects > 0, structure=_STRUCT8)
    if n == 0:
        return out
    fg = groups > 0
    # smallest object id inside each touching group
    min_id = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(min_id, groups[fg], defects[fg].astype(np.int64))
    out[fg] = min_id[groups[fg]].astype(out.dtype)
    return out


def relabel_sequential(labels) -> np.ndarray:
    """Renumber objects 1..N in order of their current ids (ignore pixels stay ignore)."""
    arr = _check(labels)
    ids = object_ids(arr)
    lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=np.int64)
    lut[ids] = np.arange(1, ids.size + 1)
    out = arr.copy()
    fg = (arr != 0) & (arr != IGNORE_LABEL)
    out[fg] = lut[arr[fg]]
    return out


# ------------------------------------------------------------------------------------------
# Re-thresholding that keeps manual edits

def mask_from_probability(probability, threshold: float = 0.5) -> np.ndarray:
    """Class map (uint8, 0 background, k = class k) from a (C, H, W) or (H, W) probability map.

    A pixel is class k when class k has the highest probability and it is above ``threshold``
    (the rule inference.predict uses).
    """
    prob = np.asarray(probability, dtype=np.float32)
    if prob.ndim == 2:
        prob = prob[None]
    if prob.ndim != 3:
        raise TemDefectError(
            f"The probability map has shape {prob.shape}; give (H, W) or (classes, H, W)."
        )
    best = prob.argmax(axis=0)
    keep = prob.max(axis=0) > float(threshold)
    return np.where(keep, best + 1, 0).astype(np.uint8)


@dataclass
class Edits:
    """The user's changes to a model's mask: what they painted, erased and marked ignore."""

    added: np.ndarray     # bool: defect in the labels, not in the model's mask
    removed: np.ndarray   # bool: in the model's mask, erased by the user
    ignore: np.ndarray    # bool: marked ignore

    @property
    def edited(self) -> np.ndarray:
        """Every pixel where the user's labels differ from the model's mask."""
        return self.added | self.removed | self.ignore

    @property
    def count(self) -> int:
        return int(self.edited.sum())


def edits_from(model_mask, labels) -> Edits:
    """The difference between a model's mask (>0 defect) and the user's current labels."""
    arr = _check(labels)
    model = np.asarray(model_mask) > 0
    if model.shape != arr.shape:
        raise TemDefectError(
            f"The model mask {model.shape} and the labels {arr.shape} differ in shape; "
            "re-run inference on this image."
        )
    ignore = arr == IGNORE_LABEL
    defect = (arr > 0) & ~ignore
    return Edits(added=defect & ~model, removed=~defect & ~ignore & model, ignore=ignore)


def apply_edits(model_mask, edits: Edits, previous=None) -> np.ndarray:
    """Labels from a (new) model mask with the user's edits re-applied.

    The mask becomes ``(model | added) & ~removed``; its connected components are the objects.
    With ``previous`` labels, every pixel they labelled keeps its id and new pixels join the
    nearest object (so splits, merges, selected ids and colours survive); new objects get
    fresh ids (:func:`_components_keeping_ids`).
    """
    model = np.asarray(model_mask) > 0
    if model.shape != edits.added.shape:
        raise TemDefectError("The new mask and the stored edits differ in shape.")
    final = (model | edits.added) & ~edits.removed & ~edits.ignore
    prev = _check(previous, "previous labels") if previous is not None else None
    if prev is not None and prev.shape == final.shape:
        out = _components_keeping_ids(final, prev, edits.removed)
        dtype = _out_dtype(prev, int(out.max()) if out.size else 0)
    else:
        out = instances_from_mask(final, dtype=np.int64)
        dtype = np.dtype(np.uint32)
    out = out.astype(dtype)
    out[edits.ignore] = IGNORE_LABEL
    return out


def _components_keeping_ids(final: np.ndarray, prev: np.ndarray,
                            removed: np.ndarray | None = None) -> np.ndarray:
    """Objects of ``final`` with the ids of ``prev`` kept where they were drawn.

    * A component of ``final`` that overlaps one previous object takes its id; one with none
      is a new object with a fresh id.
    * A component that overlaps several (touching objects the user separated, or objects that
      a lower threshold makes touch) keeps every labelled pixel's id, and its new pixels join
      the nearest object (a watershed inside the component).
    * An id found in several components keeps them together when they come from different
      previous pieces (objects the user merged); when a higher threshold cuts one previous
      piece in two, the larger part keeps the id and the others get fresh ids.
    * A new component next to pixels the user ``removed`` and with no labelled pixel is the
      rim that a lower threshold adds around a deleted object: it stays deleted.
    """
    from skimage.segmentation import watershed

    comps, n = ndi.label(final, structure=_STRUCT8)
    out = np.zeros(final.shape, dtype=np.int64)
    if n == 0:
        return out
    prev_def, _ = split_ignore(prev)
    prev_def = prev_def.astype(np.int64)
    next_id = int(prev_def.max(initial=0)) + 1

    def fresh() -> int:
        nonlocal next_id
        if next_id == IGNORE_LABEL:
            next_id += 1
        next_id += 1
        return next_id - 1

    both = (comps > 0) & (prev_def > 0)
    pairs = np.unique(np.stack([comps[both], prev_def[both]], axis=1), axis=0)
    per_comp = np.bincount(pairs[:, 0], minlength=n + 1) if pairs.size else np.zeros(n + 1, int)
    lut = np.zeros(n + 1, dtype=np.int64)
    single = per_comp[pairs[:, 0]] == 1 if pairs.size else np.zeros(0, bool)
    lut[pairs[single, 0]] = pairs[single, 1]
    unlabelled = np.flatnonzero(per_comp[1:] == 0) + 1
    if unlabelled.size and removed is not None and removed.any():
        rim = ndi.binary_dilation(removed, structure=_STRUCT8) & (comps > 0)
        deleted = np.isin(unlabelled, np.unique(comps[rim]))
        unlabelled = unlabelled[~deleted]
    for comp in unlabelled:
        lut[comp] = fresh()
    out = lut[comps]
    shared = np.flatnonzero(per_comp > 1)
    comps_of = np.bincount(pairs[:, 1]) if pairs.size else np.zeros(1, int)
    multi = np.flatnonzero(comps_of > 1)
    slices = ndi.find_objects(comps) if shared.size or multi.size else []
    if shared.size:
        for comp in shared.tolist():
            sl = slices[comp - 1]
            own = comps[sl] == comp
            part = watershed(np.zeros(own.shape, np.uint8), connectivity=2, mask=own,
                             markers=np.where(own, prev_def[sl], 0))
            out[sl][own] = part[own]
    # ids now in several components: merged by the user, or cut by a higher threshold
    if multi.size:
        in_multi = np.isin(prev_def, multi)
        pieces = _pieces(np.where(in_multi, prev_def, 0))
        sel = both & (out == prev_def) & in_multi
        triples, counts = np.unique(np.stack([prev_def[sel], comps[sel], pieces[sel]], axis=1),
                                    axis=0, return_counts=True)
        origin: dict[tuple[int, int], int] = {}  # (id, component) -> main previous piece
        best: dict[tuple[int, int], int] = {}
        size: dict[tuple[int, int], int] = {}  # the id's kept pixels in the component
        for (i, comp, piece), k in zip(triples.tolist(), counts.tolist()):
            size[(i, comp)] = size.get((i, comp), 0) + k
            if k > best.get((i, comp), 0):
                best[(i, comp)], origin[(i, comp)] = k, piece
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for (i, comp), piece in origin.items():
            groups.setdefault((i, piece), []).append((size[(i, comp)], comp))
        for (i, _), members in groups.items():
            for _, comp in sorted(members, reverse=True)[1:]:
                sl = slices[comp - 1]
                region = out[sl]
                region[(comps[sl] == comp) & (region == i)] = fresh()
    return out


def _pieces(labels: np.ndarray) -> np.ndarray:
    """A distinct number for every 8-connected piece of every id (each id in its box)."""
    out = np.zeros(labels.shape, np.int64)
    nxt = 1
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        lab, k = ndi.label(labels[sl] == i, structure=_STRUCT8)
        region = out[sl]
        region[lab > 0] = lab[lab > 0] + (nxt - 1)
        nxt += k
    return out


def rethreshold(probability, threshold: float, labels, model_mask) -> np.ndarray:
    """New labels at ``threshold`` keeping the edits the user made on top of ``model_mask``."""
    edits = edits_from(model_mask, labels)
    return apply_edits(mask_from_probability(probability, threshold), edits, previous=labels)


# ------------------------------------------------------------------------------------------
# Training entries

def class_map(labels, model_mask=None, num_classes: int = 1) -> np.ndarray:
    """Training targets from instance labels: 0 background, k = class k (1 for one class).

    With several classes each object takes the class the model's mask gives most of its pixels
    (class 1 where the model saw nothing). Ignore pixels stay IGNORE_LABEL.
    """
    defects, ignore = split_ignore(labels)
    out = (defects > 0).astype(np.uint16)
    if num_classes > 1 and model_mask is not None:
        model = np.asarray(model_mask).astype(np.int64)
        for obj_id, sl in enumerate(ndi.find_objects(defects), start=1):
            if sl is None:
                continue
            obj = defects[sl] == obj_id
            votes = np.bincount(model[sl][obj], minlength=num_classes + 1)[1:num_classes + 1]
            out[sl][obj] = int(votes.argmax()) + 1 if votes.sum() else 1
    out[ignore] = IGNORE_LABEL
    return out


def to_training_entry(image, labels, probability=None, *, threshold: float = 0.5,
                      model_mask=None, name: str = "", pixel_size_nm: float | None = None,
                      invert: bool = False):
    """One :class:`~napari_temdefect.training.TrainingEntry` from a corrected image.

    ``labels`` are the user's corrected instance labels (IGNORE_LABEL marks ignore pixels).
    When the model's output is known (``model_mask``, or ``probability`` at ``threshold``),
    the entry also carries an ``edited`` mask of the pixels the user changed, which the patch
    sampler favours. The labels are copied, never modified. ``invert``: the prediction was
    made with the contrast inverted (``predict(..., invert=True)``), so the entry holds the
    inverted image, and fine-tuning keeps teaching the model the contrast it already knows.
    """
    from .preprocess import as_2d_image, invert_image
    from .training.dataset import TrainingEntry

    img = as_2d_image(image)
    arr = _check(labels)
    if arr.shape != img.shape:
        raise TemDefectError(
            f"The labels {arr.shape} and the image {img.shape} differ in shape; "
            "correct the labels layer made for this image."
        )
    defects, ignore = split_ignore(arr)
    if not np.any(defects):
        raise TemDefectError(
            "The labels contain no defects; paint at least one defect before adding the "
            "image to the training set."
        )
    num_classes = 1
    if model_mask is None and probability is not None:
        prob = np.asarray(probability)
        num_classes = prob.shape[0] if prob.ndim == 3 else 1
        model_mask = mask_from_probability(prob, threshold)
    elif model_mask is not None:
        num_classes = max(1, int(np.max(model_mask)))
    target = class_map(arr, model_mask, num_classes)
    target[ignore] = 0
    kwargs = {}
    if model_mask is not None:
        if np.shape(model_mask) != arr.shape:
            raise TemDefectError(
                "The prediction and the labels differ in shape; re-run inference on this image."
            )
        kwargs["edited"] = edits_from(model_mask, arr).edited
    import inspect

    accepted = inspect.signature(TrainingEntry).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    if invert:  # exactly what predict's invert feeds the network
        img = invert_image(img)
    return TrainingEntry(image=np.array(img, copy=True), labels=target, ignore=ignore,
                         name=name, pixel_size_nm=pixel_size_nm, **kwargs)
