"""Sliding-window tiling: where the tiles go, how they are cut out, how they are blended.

Plain numpy, no torch. The plan is separable: each image axis gets a tile length and a list of
evenly spread tile positions (:class:`AxisPlan`), and a tile's blending weight is the outer
product of two 1D windows. Because every tile on an axis uses the same window, the sum of the
weights over all tiles is also separable, so the *normalised* weight of each tile is known in
advance. Predictions are therefore accumulated straight into the output array
(``out += p * normalised_weight``); no weight-sum image is ever allocated, and the working memory
beyond the input and the outputs is a few tiles, whatever the image size.

Tile sizes:

* ``tile`` is the *largest* tile side. On each axis the planner takes the fewest tiles of at most
  that size that cover the image with at least ``overlap`` pixels of overlap, then shrinks the
  tile to the smallest multiple of the network's required multiple that still covers it, so no
  compute is wasted on padding.
* An axis shorter than a tile is read with reflect padding (by index, without copying the image)
  up to the network's multiple, and the padded part is dropped.

Windows (``kind``):

* ``"cosine"`` (default): flat top with raised-cosine ramps as long as the overlap (a Tukey
  window). Two overlapping ramps sum to one, so tiles cross-fade smoothly; the ramp never
  reaches exactly zero, so an image border covered by one tile only is still defined.
* ``"gaussian"``: ``exp(-d²/2σ²)`` with ``σ = 0.125·tile`` (MONAI's default), floored at 1e-3.
* ``"constant"``: plain averaging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import TemDefectError

WINDOWS = ("cosine", "gaussian", "constant")
_FLOOR = 1e-3

#: Automatic settings per device type: (largest tile side, overlap in px, tiles per batch)
AUTO_SETTINGS = {
    # CPU: large tiles cost least per pixel (4096² → 3×3 tiles of 1408²; ~1 GB activations
    # for a ResNet-18 U-Net)
    "cpu": (1536, 64, 1),
    "mps": (1024, 64, 2),
    "cuda": (1024, 128, None),  # batch from free GPU memory
}


def round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def required_multiple(spec) -> int:
    """Side multiple the network needs (2**depth of its down-sampling path)."""
    options = getattr(spec, "options", {}) or {}
    arch = getattr(spec, "arch", "unet")
    if arch == "defectsegnet":
        return 2 ** int(options.get("depth", 3))
    if arch in ("unet", "unetplusplus"):
        return 2 ** int(options.get("encoder_depth", 5))
    return 32  # deeplabv3plus: output stride 16, 32 is safe for every encoder


def window_1d(length: int, overlap: int, kind: str = "cosine") -> np.ndarray:
    """Blending window of ``length`` samples (float64, strictly positive)."""
    if kind not in WINDOWS:
        raise TemDefectError(f"Unknown blending window {kind!r}; use one of {', '.join(WINDOWS)}.")
    n = int(length)
    if kind == "constant":
        return np.ones(n)
    x = np.arange(n, dtype=np.float64) + 0.5
    if kind == "gaussian":
        sigma = 0.125 * n
        w = np.exp(-((x - n / 2) ** 2) / (2 * sigma**2))
        return np.maximum(w, _FLOOR)
    ramp = min(int(overlap), n // 2)
    w = np.ones(n)
    if ramp > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * x[:ramp] / ramp)  # rises from ~0 to ~1
        w[:ramp] = r
        w[n - ramp:] = r[::-1]
    return np.maximum(w, _FLOOR)


@dataclass
class AxisPlan:
    length: int            # image length along the axis
    tile: int              # tile length (multiple of the network's multiple)
    positions: list        # tile starts (the last tile may run past the image: reflect padding)
    weights: list          # per tile: normalised weight over the part inside the image


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 32,
              kind: str = "cosine") -> AxisPlan:
    """Place tiles along one axis (see the module docstring)."""
    length, tile, overlap = int(length), int(tile), int(overlap)
    tile = max(multiple, round_up(tile, multiple))
    if overlap < 0 or (length > tile and overlap > tile // 2):
        raise TemDefectError(
            f"Overlap {overlap} px is too large for tiles of {tile} px; use less than half a tile."
        )
    if length <= tile:
        n = 1
        tile = round_up(length, multiple)
        positions = [0]
    else:
        n = int(math.ceil((length - overlap) / (tile - overlap)))
        # smallest tile (multiple-aligned) that covers `length` with n tiles and `overlap`
        tile = min(tile, round_up(math.ceil((length + (n - 1) * overlap) / n), multiple))
        if tile >= length:
            n, tile, positions = 1, round_up(length, multiple), [0]
        else:
            positions = [int(round(p)) for p in np.linspace(0, length - tile, n)]
    win = window_1d(tile, overlap if n > 1 else 0, kind)
    total = np.zeros(length)
    for p in positions:
        end = min(p + tile, length)
        total[p:end] += win[: end - p]
    weights = []
    for p in positions:
        end = min(p + tile, length)
        weights.append((win[: end - p] / total[p:end]).astype(np.float32))
    return AxisPlan(length=length, tile=tile, positions=positions, weights=weights)


@dataclass
class TilePlan:
    rows: AxisPlan
    cols: AxisPlan

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.rows.tile, self.cols.tile

    def __len__(self) -> int:
        return len(self.rows.positions) * len(self.cols.positions)

    def tiles(self):
        """Yield (i, j, y0, x0) for every tile, row by row."""
        for i, y0 in enumerate(self.rows.positions):
            for j, x0 in enumerate(self.cols.positions):
                yield i, j, y0, x0

    def weight(self, i: int, j: int) -> np.ndarray:
        """Normalised 2D weight of tile (i, j) over its part inside the image."""
        return np.multiply.outer(self.rows.weights[i], self.cols.weights[j])


def plan_tiles(shape, tile, overlap, multiple: int = 32, kind: str = "cosine") -> TilePlan:
    """Plan square-limited tiles over a 2D ``shape``."""
    h, w = shape
    return TilePlan(plan_axis(h, tile, overlap, multiple, kind),
                    plan_axis(w, tile, overlap, multiple, kind))


def resolve_overlap(overlap, tile: int) -> int:
    """Overlap as pixels: a float in [0, 0.5) is a fraction of the tile, an int ≥ 1 is pixels."""
    if overlap is None:
        return None
    try:
        value = float(overlap)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise TemDefectError(
            f"Overlap {overlap!r} is invalid; give a fraction in [0, 0.5) or pixels.")
    if value < 1:
        if value >= 0.5:
            raise TemDefectError(f"Overlap {overlap} is half a tile or more; use less than 0.5.")
        return int(round(value * tile))
    return int(value)


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Map any integer index onto [0, n) by mirror reflection (numpy 'reflect' mode)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def extract_tile(image: np.ndarray, y0: int, x0: int, th: int, tw: int) -> np.ndarray:
    """Cut a (th, tw) tile at (y0, x0), reflect-padding past the image edge (no full copy)."""
    h, w = image.shape
    if y0 >= 0 and x0 >= 0 and y0 + th <= h and x0 + tw <= w:
        return image[y0:y0 + th, x0:x0 + tw]
    ys = _reflect(np.arange(y0, y0 + th), h)
    xs = _reflect(np.arange(x0, x0 + tw), w)
    return image[np.ix_(ys, xs)]
