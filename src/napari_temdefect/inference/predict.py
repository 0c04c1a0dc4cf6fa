"""Tiled inference of one 2D micrograph: probability, confidence and class mask.

``predict`` normalises the image once (image-wide statistics, as in training), cuts it into
overlapping tiles (:mod:`.tiling`), runs the network on batches of tiles and blends the
probabilities straight into the preallocated output, so memory beyond the input and the outputs
stays at a few tiles. On CUDA it uses AMP (bf16 where supported, else fp16), channels-last
memory and ``torch.inference_mode``, and overlaps the preparation of the next batch with the GPU
work on the current one. The confidence map is defined in :mod:`.confidence`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import CancelledError, TemDefectError
from ..preprocess import apply_normalization, as_2d_image, inverted_stats
from ..preprocess import normalization_stats as _image_stats
from .confidence import combine, entropy_confidence
from .tiling import (AUTO_SETTINGS, WINDOWS, extract_tile, plan_tiles, required_multiple,
                     resolve_overlap)

_FINISH_ROWS = 1024  # rows per chunk when computing confidence and mask at the end


@dataclass
class PredictionResult:
    """What :func:`predict` returns. Arrays have the input image's (H, W)."""

    probability: np.ndarray      # float32 (C, H, W) in [0, 1], one channel per class
    confidence: np.ndarray       # float32 (H, W) in [0, 1], see inference.confidence
    mask: np.ndarray             # uint8 (H, W): 0 background, k = class k (1-based)
    classes: list
    threshold: float = 0.5
    tta: bool = False
    inverted: bool = False       # the image's contrast was inverted before the network
    model_name: str = ""
    device: str = "cpu"
    amp: str | None = None       # "bfloat16" / "float16" on CUDA, None otherwise
    tile: tuple = (0, 0)         # tile shape actually used (rows, cols)
    overlap: int = 0             # minimum overlap between tiles, px
    n_tiles: int = 0
    batch_size: int = 1
    normalization: tuple = (0.0, 1.0)   # (offset, scale) applied to the image (scale < 0: inverted)
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return self.mask.shape

    @property
    def megapixels_per_s(self) -> float:
        return self.mask.size / 1e6 / max(self.elapsed_s, 1e-9)

    def summary(self) -> str:
        h, w = self.shape
        return (f"{w}×{h} px in {self.elapsed_s:.1f} s on {self.device}"
                f"{' (' + self.amp + ')' if self.amp else ''}: {self.n_tiles} tile(s) of "
                f"{self.tile[1]}×{self.tile[0]}, overlap {self.overlap} px, "
                f"{'TTA ×8' if self.tta else 'no TTA'}"
                f"{', contrast inverted' if self.inverted else ''}")


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _cuda_batch_size(device, tile_shape) -> int:
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    per_tile = tile_shape[0] * tile_shape[1] * 1500  # bytes: generous for U-Net-sized models
    return int(max(1, min(32, 0.5 * free // per_tile)))


def _amp_dtype(device):
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _forward(module, x, amp_dtype):
    import contextlib

    import torch

    # no autocast context at all without AMP: older torch refuses autocast(device_type="mps")
    # even disabled
    amp = contextlib.nullcontext() if amp_dtype is None else torch.autocast(
        device_type=x.device.type, dtype=amp_dtype)
    with amp:
        logits = module(x)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return torch.sigmoid(logits.float())


# D4 group: k quarter turns, optionally after a horizontal flip; each with its inverse.
_D4 = [(k, flip) for flip in (False, True) for k in range(4)]


def _run(module, x, amp_dtype, tta: bool, threshold: float):
    """Probabilities (B, C, h, w) and, with TTA, agreement (B, h, w), still on the device."""
    import torch

    if not tta:
        return _forward(module, x, amp_dtype), None
    members = []
    for k, flip in _D4:
        xt = torch.flip(x, dims=(-1,)) if flip else x
        yt = _forward(module, torch.rot90(xt, k, dims=(-2, -1)), amp_dtype)
        yt = torch.rot90(yt, -k, dims=(-2, -1))
        members.append(torch.flip(yt, dims=(-1,)) if flip else yt)
    members = torch.stack(members)                     # (T, B, C, h, w)
    mean = members.mean(0)
    agree = ((members > threshold) == (mean > threshold)[None]).float().mean(0)
    return mean, agree.amin(1)


def _run_splitting(module, x, amp_dtype, tta, threshold):
    """Like :func:`_run`, halving the batch when the GPU runs out of memory."""
    import torch

    try:
        return _run(module, x, amp_dtype, tta, threshold)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        if x.shape[0] == 1:
            raise TemDefectError(
                f"The GPU ran out of memory on a single {x.shape[-1]}×{x.shape[-2]} tile; "
                "use a smaller tile size or the CPU."
            ) from None
        half = x.shape[0] // 2
        a = _run_splitting(module, x[:half], amp_dtype, tta, threshold)
        b = _run_splitting(module, x[half:], amp_dtype, tta, threshold)
        prob = torch.cat([a[0], b[0]])
        agree = None if a[1] is None else torch.cat([a[1], b[1]])
        return prob, agree


def _resolve_model(model, device):
    from ..models import Model, load_model

    if isinstance(model, Model):
        return model
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        return load_model(model, device=device)
    raise TemDefectError(
        f"predict() needs a model from load_model() or create_model(), not {type(model).__name__}."
    )


def _number(value, name: str, kind):
    """``kind(value)``, or one line naming the option (Python callers pass anything)."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise TemDefectError(f"{name} must be a number (got {value!r}).") from None


def predict(model, image, *, tile=None, overlap=None, tta=False, threshold=None, device=None,
            batch_size=None, normalization_stats=None, progress=None, cancel=None,
            window="cosine", invert=False) -> PredictionResult:
    """Run ``model`` over a 2D ``image`` of any size and dtype, tile by tile.

    Parameters
    ----------
    model : Model (or a bundled name / checkpoint path, loaded on the fly)
    image : 2D array (grayscale saved as RGB is accepted; colour is converted to luminance)
    tile : largest tile side in px (rounded up to the network's multiple); None = automatic
    overlap : minimum overlap between tiles, a fraction (< 0.5) of the tile or pixels (≥ 1);
        None = automatic
    tta : average the eight flips/rotations (D4), ~8× slower, sharper confidence
    threshold : a pixel gets class k when class k has the highest probability and it is above
        this value; None = the model's operating threshold (``model.threshold``: the value its
        checkpoint records, chosen by cross-validation for the bundled models, else 0.5)
    device : "auto"/None (cuda → mps → cpu), "cpu", "cuda", "mps"; the model is moved there
    batch_size : tiles per forward pass; None = automatic
    normalization_stats : (offset, scale) to use instead of the image's own statistics (for
        block-wise processing of a montage, compute them once over the whole montage)
    progress : called as ``progress(done, total)`` after each tile batch
    cancel : callable returning True, or a ``threading.Event``; checked before each tile batch,
        raises :class:`CancelledError`
    window : tile blending window, "cosine" (default), "gaussian" or "constant"
    invert : invert the image's contrast before the network (exactly, through the
        normalisation; no copy). For micrographs whose defects have the opposite contrast to
        the model's training images: e.g. over-focus bubbles (dark, bright fringe) with the
        bundled ``bubble`` model, which was trained on under-focus ones (bright, dark fringe)
    """
    import torch

    from ..device import resolve_device

    start = time.perf_counter()
    image = as_2d_image(image)
    if threshold is not None:
        threshold = _number(threshold, "threshold", float)
        if not 0.0 < threshold < 1.0:
            raise TemDefectError(f"Threshold {threshold} is outside (0, 1); use e.g. 0.5.")
    if window not in WINDOWS:
        raise TemDefectError(
            f"Unknown blending window {window!r}; use one of {', '.join(WINDOWS)}.")
    dev = resolve_device(device)
    model = _resolve_model(model, dev)
    if threshold is None:
        threshold = float(model.threshold)
    spec = model.spec
    module = model.module

    auto_tile, auto_overlap, auto_batch = AUTO_SETTINGS.get(dev.type, AUTO_SETTINGS["cpu"])
    tile_max = auto_tile if tile in (None, 0, "auto") else _number(tile, "tile", int)
    if tile_max < 32:
        raise TemDefectError(f"Tile size {tile_max} px is too small; use at least 32 px (or auto).")
    # the automatic overlap shrinks with a small tile the user chose (a quarter of it at most)
    ov = (min(auto_overlap, tile_max // 4) if overlap in (None, "auto")
          else resolve_overlap(overlap, tile_max))
    plan = plan_tiles(image.shape, tile_max, ov, required_multiple(spec), window)
    th, tw = plan.tile_shape

    if normalization_stats is None:
        offset, scale = _image_stats(image, spec.normalization)
    else:
        offset, scale = (float(v) for v in normalization_stats)
        if not np.isfinite(offset) or not np.isfinite(scale) or scale <= 0:
            raise TemDefectError(
                f"normalization_stats {normalization_stats!r} are invalid; "
                "give (offset, scale > 0)."
            )
    if invert:
        offset, scale = inverted_stats(offset, scale, spec.normalization)

    if dev.type == "cuda" and batch_size is None:
        batch = _cuda_batch_size(dev, (th, tw))
    else:
        batch = int(batch_size or auto_batch or 1)
    if batch < 1:
        raise TemDefectError(f"batch_size {batch_size} is invalid; use 1 or more.")
    amp_dtype = _amp_dtype(dev)

    h, w = image.shape
    n_classes = spec.num_classes
    prob = np.zeros((n_classes, h, w), dtype=np.float32)
    conf = np.zeros((h, w), dtype=np.float32)  # holds the blended TTA agreement until the end
    tiles = list(plan.tiles())
    batches = [tiles[k:k + batch] for k in range(0, len(tiles), batch)]
    total = len(batches)

    def accumulate(pending):
        items, p_dev, a_dev = pending
        p = p_dev.cpu().numpy()  # writable: weighted in place below
        a = None if a_dev is None else a_dev.cpu().numpy()
        for n, (i, j, y0, x0) in enumerate(items):
            wy, wx = plan.rows.weights[i][:, None], plan.cols.weights[j][None, :]
            hh, ww = wy.shape[0], wx.shape[1]
            tile = p[n, :, :hh, :ww]
            tile *= wy  # separable weight, applied in place (no 2D weight array)
            tile *= wx
            prob[:, y0:y0 + hh, x0:x0 + ww] += tile
            if a is not None:
                agree = a[n, :hh, :ww]
                agree *= wy
                agree *= wx
                conf[y0:y0 + hh, x0:x0 + ww] += agree

    was_training = module.training
    param = next(module.parameters(), None)
    if param is not None and param.device != dev:
        module.to(dev)
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)
    module.eval()
    try:
        with torch.inference_mode():
            pending = None
            for b, items in enumerate(batches):
                if _is_cancelled(cancel):
                    raise CancelledError("Inference cancelled; nothing was written.")
                arr = np.empty((len(items), spec.in_channels, th, tw), dtype=np.float32)
                for n, (_, _, y0, x0) in enumerate(items):
                    arr[n, 0] = apply_normalization(extract_tile(image, y0, x0, th, tw),
                                                    offset, scale)
                if spec.in_channels > 1:
                    arr[:, 1:] = arr[:, :1]
                x = torch.from_numpy(arr)
                if dev.type == "cuda":
                    x = x.pin_memory().to(dev, non_blocking=True)
                    x = x.contiguous(memory_format=torch.channels_last)
                else:
                    x = x.to(dev)
                p_dev, a_dev = _run_splitting(module, x, amp_dtype, tta, threshold)
                if pending is not None:  # finish the previous batch while this one computes
                    accumulate(pending)
                    if progress is not None:
                        progress(b, total)
                pending = (items, p_dev, a_dev)
            if pending is not None:
                accumulate(pending)
                if progress is not None:
                    progress(total, total)
    finally:
        module.train(was_training)

    mask = np.zeros((h, w), dtype=np.uint8)
    finite = None if np.issubdtype(image.dtype, np.integer) else np.isfinite
    for r in range(0, h, _FINISH_ROWS):
        rows = slice(r, r + _FINISH_ROWS)
        pc = prob[:, rows]
        np.clip(pc, 0.0, 1.0, out=pc)
        conf[rows] = combine(entropy_confidence(pc), conf[rows] if tta else None)
        if finite is not None:
            bad = ~finite(image[rows])
            if bad.any():  # no data there (NaN/inf): no defect, no confidence
                conf[rows][bad] = 0.0
                pc[:, bad] = 0.0
        if n_classes == 1:
            mask[rows] = pc[0] > threshold
        else:
            best = pc.max(axis=0)
            mask[rows] = np.where(best > threshold, pc.argmax(axis=0) + 1, 0).astype(np.uint8)

    return PredictionResult(
        probability=prob, confidence=conf, mask=mask, classes=list(spec.classes),
        threshold=threshold, tta=bool(tta), inverted=bool(invert), model_name=model.name,
        device=str(dev),
        amp=str(amp_dtype).replace("torch.", "") if amp_dtype is not None else None,
        tile=(th, tw), overlap=int(ov), n_tiles=len(tiles), batch_size=batch,
        normalization=(float(offset), float(scale)), elapsed_s=time.perf_counter() - start,
    )
