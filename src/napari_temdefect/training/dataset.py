"""Training data: corrected images (:class:`TrainingEntry`), a set of them (:class:`TrainingSet`)
saved as TIFFs plus a JSON index, and the patch sampler that feeds the trainer.

Labels are a class map: 0 background, ``k`` = class ``k`` (1..C) of the model; for a one-class
model every value > 0 can be read as "defect" with ``binary=True`` (masks saved as 0/255,
instance labels). Pixels where ``ignore`` is True, or where labels == :data:`IGNORE_LABEL`, are
left out of the loss. ``edited`` marks pixels the user corrected: the sampler picks patches
there more often.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import IGNORE_LABEL
from ..errors import TemDefectError
from ..files import atomic_write, write_text
from ..preprocess import as_2d_image, normalize_image
from .separation import separation_weight

INDEX_NAME = "training_set.json"
FORMAT_VERSION = 1


@dataclass
class TrainingEntry:
    """One corrected micrograph. Arrays are copied: training never changes the caller's data."""

    image: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray | None = None
    name: str = ""
    pixel_size_nm: float | None = None
    #: bool mask of pixels the user corrected (patches are sampled there more often)
    edited: np.ndarray | None = None
    #: True: every label > 0 is class 1 (binary masks, instance labels)
    binary: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        label = f"training image {self.name!r}" if self.name else "training image"
        self.image = np.array(as_2d_image(self.image, label), copy=True)
        if self.labels is None:
            raise TemDefectError(f"The {label} has no labels; paint or load labels first.")
        labels = np.asarray(self.labels)
        if labels.dtype == bool:
            labels = labels.astype(np.uint8)
        if not np.issubdtype(labels.dtype, np.integer):
            if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
                labels = labels.astype(np.int64)
            else:
                raise TemDefectError(
                    f"The labels of the {label} have dtype {labels.dtype}; give integer labels "
                    "(0 background, 1.. defect classes)."
                )
        if labels.ndim != 2:
            raise TemDefectError(
                f"The labels of the {label} have shape {labels.shape}; give one 2D label image."
            )
        if labels.shape != self.image.shape:
            raise TemDefectError(
                f"The labels of the {label} are {labels.shape[0]}×{labels.shape[1]} px but the "
                f"image is {self.image.shape[0]}×{self.image.shape[1]} px; give labels drawn on "
                "this image."
            )
        if np.any(labels < 0):
            raise TemDefectError(f"The labels of the {label} contain negative values; use 0..C.")
        self.labels = np.array(labels, copy=True)
        self.ignore = self._mask(self.ignore, "ignore mask", label)
        self.edited = self._mask(self.edited, "edited mask", label)
        if self.pixel_size_nm is not None:
            self.pixel_size_nm = float(self.pixel_size_nm)
        self.binary = bool(self.binary)
        if not np.any(self.class_map() > 0):
            raise TemDefectError(
                f"The labels of the {label} contain no defects; label at least one defect "
                "(or remove the image from the training set)."
            )

    def _mask(self, mask, what, label):
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != self.image.shape:
            raise TemDefectError(
                f"The {what} of the {label} has shape {mask.shape}, not the image's "
                f"{self.image.shape}; give a mask drawn on this image."
            )
        return np.array(mask != 0, copy=True)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    def ignore_mask(self) -> np.ndarray:
        """Bool mask of pixels left out of the loss (ignore mask or IGNORE_LABEL)."""
        ign = self.labels == IGNORE_LABEL
        if self.ignore is not None:
            ign = ign | self.ignore
        return ign

    def class_map(self) -> np.ndarray:
        """Labels as 0..C with ignored pixels set to 0 (look at :meth:`ignore_mask` for them)."""
        lab = np.where(self.ignore_mask(), 0, self.labels)
        if self.binary:
            lab = (lab > 0).astype(np.int64)
        return lab

    def max_class(self) -> int:
        return int(self.class_map().max())


class TrainingSet:
    """A list of :class:`TrainingEntry` (from one or several images), savable to a folder."""

    def __init__(self, entries=()):
        self.entries: list[TrainingEntry] = []
        for e in entries:
            self.add(e)

    # list-like ---------------------------------------------------------------------------
    def add(self, entry_or_image, labels=None, **kwargs) -> TrainingEntry:
        entry = entry_or_image
        if not isinstance(entry, TrainingEntry):
            entry = TrainingEntry(entry_or_image, labels, **kwargs)
        if not entry.name:
            entry.name = f"image {len(self.entries) + 1}"
        self.entries.append(entry)
        return entry

    append = add

    def remove(self, item) -> TrainingEntry:
        """Remove an entry by index, by name, or the entry itself."""
        if isinstance(item, TrainingEntry):
            idx = next((i for i, e in enumerate(self.entries) if e is item), None)
        elif isinstance(item, str):
            idx = next((i for i, e in enumerate(self.entries) if e.name == item), None)
        else:
            idx = int(item) if -len(self.entries) <= int(item) < len(self.entries) else None
        if idx is None:
            raise TemDefectError(f"{item!r} is not in the training set; nothing was removed.")
        return self.entries.pop(idx)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, i):
        return self.entries[i]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def max_class(self) -> int:
        return max((e.max_class() for e in self.entries), default=0)

    # files -------------------------------------------------------------------------------
    def save(self, folder, overwrite: bool = False) -> Path:
        """Write every entry as TIFFs plus ``training_set.json`` (written last, atomically).

        An existing training set in ``folder`` is replaced only with ``overwrite=True``.
        """
        import tifffile

        if not self.entries:
            raise TemDefectError("The training set is empty; add a corrected image before saving.")
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise TemDefectError(f"{folder} is a file; give a folder for the training set.")
        index_path = folder / INDEX_NAME
        if index_path.exists() and not overwrite:
            raise TemDefectError(
                f"{folder} already holds a training set; choose another folder or pass "
                "overwrite=True."
            )
        old_files = _listed_files(index_path) if index_path.exists() else set()
        # a new generation's files never replace the ones the old index lists: a save that
        # fails part-way (disk full) leaves the old set whole, and its index still true
        generation = _generation(index_path) + 1 if index_path.exists() else 0
        tag = f"_g{generation}" if generation else ""
        folder.mkdir(parents=True, exist_ok=True)
        records, written = [], set()
        for i, e in enumerate(self.entries):
            stem = f"{i:03d}_{_slug(e.name)}{tag}"
            rec = {"name": e.name, "pixel_size_nm": e.pixel_size_nm, "binary": e.binary,
                   "shape": list(e.shape), "meta": e.meta}
            arrays = {"image": e.image, "labels": _label_dtype(e.labels),
                      "ignore": None if e.ignore is None else e.ignore.astype(np.uint8),
                      "edited": None if e.edited is None else e.edited.astype(np.uint8)}
            for key, arr in arrays.items():
                if arr is None:
                    rec[key] = None
                    continue
                fname = f"{stem}_{key}.tif"
                with atomic_write(folder / fname, overwrite=True) as tmp:
                    tifffile.imwrite(tmp, arr, compression="zlib")
                rec[key] = fname
                written.add(fname)
            records.append(rec)
        index = {"format": "napari-temdefect training set", "version": FORMAT_VERSION,
                 "generation": generation, "entries": records}
        write_text(index_path, json.dumps(index, indent=1), overwrite=True)
        for stale in old_files - written:
            (folder / stale).unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder) -> "TrainingSet":
        import tifffile

        folder = Path(folder)
        index_path = folder / INDEX_NAME if folder.is_dir() else folder
        if not index_path.is_file():
            raise TemDefectError(
                f"{folder} holds no training set ({INDEX_NAME} is missing); pick the folder "
                "the training set was saved to."
            )
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            records = index["entries"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TemDefectError(f"{index_path} is damaged ({exc}); save the training set again.") from exc
        base = index_path.parent
        out = cls()
        for rec in records:
            def read(key):
                if not rec.get(key):
                    return None
                path = base / rec[key]
                if not path.is_file():
                    raise TemDefectError(f"{path} listed in {index_path.name} is missing; "
                                         "save the training set again.")
                return tifffile.imread(path)
            out.add(TrainingEntry(
                image=read("image"), labels=read("labels"), ignore=read("ignore"),
                name=rec.get("name", ""), pixel_size_nm=rec.get("pixel_size_nm"),
                edited=read("edited"), binary=rec.get("binary", False), meta=rec.get("meta") or {},
            ))
        return out


def _generation(index_path: Path) -> int:
    try:
        return int(json.loads(index_path.read_text(encoding="utf-8")).get("generation", 0))
    except Exception:
        return 0


def _listed_files(index_path: Path) -> set[str]:
    try:
        records = json.loads(index_path.read_text(encoding="utf-8"))["entries"]
    except Exception:
        return set()
    return {rec[k] for rec in records for k in ("image", "labels", "ignore", "edited") if rec.get(k)}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:40] or "image"


def _label_dtype(labels: np.ndarray) -> np.ndarray:
    if labels.max(initial=0) <= np.iinfo(np.uint16).max:
        return labels.astype(np.uint16)
    return labels.astype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Patch sampling


@dataclass
class _Prepared:
    """An entry turned into network-ready arrays, padded to at least one patch."""

    image: np.ndarray      # float32 (H, W), normalised
    target: np.ndarray     # uint8 (C, H, W) one-hot of the class map
    valid: np.ndarray      # bool (H, W): counts in the loss
    train_ok: np.ndarray   # bool (H, W): allowed for training (not held back for validation)
    weights: np.ndarray    # float64 cumulative sampling weights on a coarse grid
    grid: int              # grid step of the weights
    name: str
    #: float32 (H, W) per-pixel weight of the BCE (separation of touching objects); None: 1
    loss_weight: np.ndarray | None = None


def prepare_entries(training_set, num_classes: int, normalization: dict | None,
                    patch_size: int, val_fraction: float, rng: np.random.Generator,
                    edited_weight: float = 4.0, defect_weight: float = 2.0,
                    separation: float = 0.0):
    """Normalise images, build one-hot targets, hold back validation tiles; with
    ``separation`` > 0, also the per-pixel loss weight of :func:`.separation.separation_weight`
    (the background between touching objects counts ``1 + separation`` times).

    Returns (prepared entries, validation patches as (images (N,1,P,P), targets (N,C,P,P),
    valid (N,1,P,P)) or None when the data are too small to hold anything back).
    """
    prepared, val_items = [], []
    for e in training_set:
        img = normalize_image(e.image, normalization)
        cmap = e.class_map()
        valid = ~e.ignore_mask()
        edited = e.edited
        loss_weight = separation_weight(
            cmap, separation, instances=np.where(valid, e.labels, 0) if e.binary else None)
        # pad to at least one patch (padding is ignored)
        ph, pw = max(0, patch_size - img.shape[0]), max(0, patch_size - img.shape[1])
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw)), mode="reflect" if min(img.shape) > 1 else "edge")
            cmap = np.pad(cmap, ((0, ph), (0, pw)))
            valid = np.pad(valid, ((0, ph), (0, pw)))
            edited = None if edited is None else np.pad(edited, ((0, ph), (0, pw)))
            if loss_weight is not None:
                loss_weight = np.pad(loss_weight, ((0, ph), (0, pw)), constant_values=1.0)
        target = np.stack([(cmap == k + 1) for k in range(num_classes)]).astype(np.uint8)
        train_ok = valid.copy()
        for (y, x, t) in _val_tiles(cmap > 0, valid, patch_size, val_fraction, rng):
            sl = (slice(y, y + t), slice(x, x + t))
            val_items.append((img[sl], target[(slice(None),) + sl], valid[sl]))
            train_ok[sl] = False
        if not np.any(train_ok & (cmap > 0)):
            raise TemDefectError(
                f"After holding back validation tiles, {e.name!r} has no labelled defect left "
                "to train on; label more defects or lower the validation fraction."
            )
        grid = max(1, patch_size // 16)
        w = 1.0 + defect_weight * (cmap > 0) + (0.0 if edited is None else edited_weight * edited)
        w = np.where(train_ok, w, 0.0)
        coarse = _block_sum(w, grid)
        prepared.append(_Prepared(img, target, valid, train_ok, np.cumsum(coarse.ravel()),
                                  grid, e.name, loss_weight))
    val = None
    if val_items:
        size = max(max(v[0].shape) for v in val_items)
        imgs, tgts, vals = [], [], []
        for im, tg, va in val_items:
            py, px = size - im.shape[0], size - im.shape[1]
            imgs.append(np.pad(im, ((0, py), (0, px)))[None])
            tgts.append(np.pad(tg, ((0, 0), (0, py), (0, px))))
            vals.append(np.pad(va, ((0, py), (0, px)))[None])
        val = (np.stack(imgs).astype(np.float32), np.stack(tgts), np.stack(vals))
    return prepared, val


def _block_sum(w: np.ndarray, g: int) -> np.ndarray:
    h, wd = (w.shape[0] // g) * g, (w.shape[1] // g) * g
    return w[:h, :wd].reshape(h // g, g, wd // g, g).sum((1, 3))


def _val_tiles(fg, valid, patch, fraction, rng):
    """Square tiles held back for validation: ~``fraction`` of the image, one with defects."""
    if fraction <= 0:
        return []
    h, w = fg.shape
    # the largest tile (a multiple of 32, which every network accepts, up to the patch) that
    # gives at least 4 tiles of mostly real pixels: padding and ignored pixels are no
    # validation, and a tile grid over the padding of a strip image would score nothing
    tiles, tile = [], 32
    for size in range(max(32, patch // 32 * 32), 31, -32):
        ok = [(i * size, j * size) for i in range(h // size) for j in range(w // size)
              if valid[i * size:(i + 1) * size, j * size:(j + 1) * size].mean() >= 0.5]
        if len(ok) >= 4 or size == 32:
            tiles, tile = ok, size
            break
    n = len(tiles)
    if n < 2:
        return []
    n_val = min(n - 1, max(1, int(round(fraction * n))))
    has_fg = [bool(fg[y:y + tile, x:x + tile][valid[y:y + tile, x:x + tile]].any()) for y, x in tiles]
    order = list(rng.permutation(n))
    fg_idx = [i for i in order if has_fg[i]]
    chosen = []
    if len(fg_idx) >= 2:  # one defect tile for validation, keep at least one for training
        chosen.append(fg_idx[0])
    keep_for_train = fg_idx[-1] if fg_idx else None
    for i in order:
        if len(chosen) >= n_val:
            break
        if i not in chosen and i != keep_for_train:
            chosen.append(i)
    return [(tiles[i][0], tiles[i][1], tile) for i in chosen]


class PatchSampler:
    """Random patches, centred more often on defects and on the user's corrections.

    ``scale_range=(lo, hi)``: each patch is cut from a window ``s`` times the patch size, with
    ``s`` log-uniform in ``[lo, hi]``, and resampled to the patch size (image bilinear, masks
    bilinear then cut at 0.5, the train/ignore mask nearest): the network sees the defects at
    magnifications a factor ``1/hi``..``1/lo`` of the training images' own.
    """

    def __init__(self, prepared, patch_size: int, rng: np.random.Generator,
                 scale_range: tuple[float, float] | None = None):
        self.prepared = prepared
        self.patch = patch_size
        self.rng = rng
        self.scale_range = None if scale_range is None else (float(scale_range[0]),
                                                             float(scale_range[1]))
        # a resampled window never exceeds the smallest image
        self.largest_window = min(min(p.image.shape) for p in prepared) if prepared else 0
        totals = np.array([p.weights[-1] if len(p.weights) else 0.0 for p in prepared])
        # each image is drawn about equally often, whatever its size
        self.image_p = (totals > 0) / max(1, np.count_nonzero(totals > 0))

    def position(self, size: int | None = None) -> tuple[int, int, int]:
        """(entry index, top, left) of a random ``size``-square window (default: the patch)."""
        rng, P = self.rng, int(size or self.patch)
        k = int(rng.choice(len(self.prepared), p=self.image_p))
        p = self.prepared[k]
        cell = int(np.searchsorted(p.weights, rng.uniform(0, p.weights[-1]), side="right"))
        gw = p.image.shape[1] // p.grid
        cy = (cell // gw) * p.grid + int(rng.integers(p.grid))
        cx = (cell % gw) * p.grid + int(rng.integers(p.grid))
        h, w = p.image.shape
        return k, int(np.clip(cy - P // 2, 0, max(0, h - P))), int(np.clip(cx - P // 2, 0,
                                                                             max(0, w - P)))

    def _window(self) -> int:
        if self.scale_range is None:
            return self.patch
        lo, hi = self.scale_range
        s = float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
        return int(max(8, min(round(self.patch * s), self.largest_window)))

    def sample(self):
        """(image, target, ok) of one patch. ``ok`` is the bool mask of pixels that count in
        the loss, or, when the entry has a loss weight, that weight (float32, 0 where the
        pixel does not count)."""
        size = self._window()
        k, y, x = self.position(size)
        p = self.prepared[k]
        sl = (slice(y, y + size), slice(x, x + size))
        image, target, ok = p.image[sl], p.target[(slice(None),) + sl], p.train_ok[sl]
        if p.loss_weight is not None:
            ok = np.where(ok, p.loss_weight[sl], 0.0).astype(np.float32)
        if size != self.patch:
            image, target, ok = _resample(image, target, ok, self.patch)
        return image, target, ok

    def batch(self, n: int):
        items = [self.sample() for _ in range(n)]
        return ([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])


def _resample(image, target, ok, size: int):
    """Resample a square window (image, (C, h, w) target, ok mask) to ``size`` × ``size``."""
    from scipy import ndimage

    f = size / image.shape[0]

    def fit(a):  # zoom's rounding can miss by a pixel
        a = a[..., :size, :size]
        pad = [(0, 0)] * (a.ndim - 2) + [(0, size - a.shape[-2]), (0, size - a.shape[-1])]
        return np.pad(a, pad, mode="edge") if any(q[1] for q in pad) else a

    img = fit(ndimage.zoom(image.astype(np.float32), f, order=1, mode="nearest"))
    tgt = np.stack([fit(ndimage.zoom(t.astype(np.float32), f, order=1, mode="nearest")) >= 0.5
                    for t in target]).astype(target.dtype)
    if ok.dtype == bool:
        okr = fit(ndimage.zoom(ok.astype(np.uint8), f, order=0, mode="nearest")).astype(bool)
    else:  # a loss weight: nearest, so weights stay the values they were
        okr = fit(ndimage.zoom(ok, f, order=0, mode="nearest")).astype(ok.dtype)
    return img, tgt, okr
