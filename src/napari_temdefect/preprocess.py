"""Turning raw micrograph arrays into network input, identically for training and inference.

Normalisation is per image, from robust percentiles of the *whole* image (estimated on a regular
subsample for large images), so tiled inference of a montage sees the same intensities as
training saw on a crop.
"""

from __future__ import annotations

import numpy as np

from .errors import TemDefectError

DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.0}
_MAX_STAT_PIXELS = 4_000_000


def as_2d_image(image, name: str = "image") -> np.ndarray:
    """Validate and return a 2D numeric array (grayscale saved as RGB is collapsed).

    Raises :class:`TemDefectError` for anything that cannot be one micrograph.
    """
    if image is None:
        raise TemDefectError(f"No {name} was given; open a micrograph first.")
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TemDefectError(
            f"The {name} has dtype {arr.dtype}; give a numeric (integer or float) image."
        )
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = collapse_channels(arr)
    if arr.ndim != 2:
        raise TemDefectError(
            f"The {name} has shape {arr.shape}; give one 2D micrograph "
            "(pick a single frame of a stack first)."
        )
    if min(arr.shape) < 8:
        raise TemDefectError(f"The {name} is {arr.shape[0]}×{arr.shape[1]} px; it needs at least 8×8 px.")
    return arr


#: the start of the note :func:`collapse_channels` leaves for a true-colour image
COLOUR_NOTE = "colour image converted to luminance"


def collapse_channels(data: np.ndarray, notes: list | None = None) -> np.ndarray:
    """Grey saved as RGB(A)/LA → one channel; true colour → luminance.

    The last axis holds the channels. What was done is appended to ``notes`` (the reader keeps
    them in the layer's metadata).
    """
    notes = [] if notes is None else notes
    n = data.shape[-1]
    if n == 2:  # grey + alpha
        notes.append("dropped the alpha channel")
        return data[..., 0]
    rgb = data[..., :3]
    if n == 4:
        notes.append("dropped the alpha channel")
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        notes.append("grayscale saved as RGB: kept one channel")
        return np.ascontiguousarray(r)
    spread = max(np.abs(r.astype(np.float32) - g).max(), np.abs(r.astype(np.float32) - b).max())
    if np.issubdtype(data.dtype, np.integer):
        full = float(np.iinfo(data.dtype).max)
    else:
        full = float(max(np.abs(rgb).max(), 1e-12))
    if spread <= 0.02 * full:  # JPEG chroma noise on a grey image
        notes.append("near-grey RGB (JPEG colour noise): averaged the channels")
        mean = rgb.astype(np.float32).mean(-1)
        if np.issubdtype(data.dtype, np.integer):
            return np.round(mean).astype(data.dtype)
        return mean.astype(data.dtype)
    notes.append(f"{COLOUR_NOTE} (0.299 R + 0.587 G + 0.114 B)")
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return rgb.astype(np.float32) @ weights


def _stat_sample(image: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(image.size / _MAX_STAT_PIXELS))))
    return np.asarray(image[::step, ::step], dtype=np.float64)


def normalization_stats(image: np.ndarray, normalization: dict | None = None) -> tuple[float, float]:
    """Return (offset, scale) such that ``(image - offset) / scale`` is the network input."""
    norm = dict(DEFAULT_NORMALIZATION if normalization is None else normalization)
    sample = _stat_sample(image)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise TemDefectError("The image has no finite pixels (all NaN or inf); check the file.")
    method = norm.get("method", "percentile")
    if method == "percentile":
        lo, hi = np.percentile(finite, [norm.get("low", 1.0), norm.get("high", 99.0)])
        scale = float(hi - lo)
        if not np.isfinite(scale) or scale <= 1e-12:
            scale = float(finite.max() - finite.min()) or 1.0
        return float(lo), scale
    if method == "zscore":
        std = float(finite.std())
        return float(finite.mean()), std if std > 1e-12 else 1.0
    raise TemDefectError(f"Unknown normalisation method {method!r}; use 'percentile' or 'zscore'.")


def inverted_stats(offset: float, scale: float, normalization: dict | None = None):
    """(offset, scale) that normalise an image to the input of its contrast-inverted copy.

    Percentile normalisation (lo + hi = 100, as the default 1–99) of the inverted image is
    exactly ``1 − (x − offset) / scale``; z-score is ``−(x − offset) / scale``. Both are the
    same ``(x − offset') / scale'`` with a negative scale, so inverting costs nothing."""
    method = dict(DEFAULT_NORMALIZATION if normalization is None else normalization).get(
        "method", "percentile")
    if method == "zscore":
        return float(offset), -float(scale)
    return float(offset) + float(scale), -float(scale)


def invert_image(image: np.ndarray) -> np.ndarray:
    """The micrograph with its contrast inverted (``max + min − x``), in its own dtype and
    range; normalised, it is exactly the input ``predict(..., invert=True)`` makes."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = image.min(), image.max()
        return (hi - (image - lo)).astype(image.dtype)
    finite = np.isfinite(image)
    if not finite.any():
        return image.copy()
    lo, hi = image[finite].min(), image[finite].max()  # NaN/inf pixels stay what they are
    return hi + lo - image


def apply_normalization(block: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Normalise a block (tile or whole image) with image-wide stats; NaN/inf become 0."""
    block = np.asarray(block)
    if block.dtype == np.float64 and np.nanmax(np.abs(block), initial=0.0) > 1e38:
        # beyond float32's range: normalise in float64 first, or every pixel would overflow
        out = ((block - offset) / scale).astype(np.float32)
    else:
        out = (np.asarray(block, dtype=np.float32) - np.float32(offset)) / np.float32(scale)
    if not np.all(np.isfinite(out)):
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def normalize_image(image: np.ndarray, normalization: dict | None = None) -> np.ndarray:
    """Per-image normalisation of a whole 2D image to float32."""
    offset, scale = normalization_stats(image, normalization)
    return apply_normalization(image, offset, scale)
