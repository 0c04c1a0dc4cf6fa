"""Augmentation of training patches: the eight flips/rotations of the square (D4) plus mild
intensity jitter (gamma, contrast, brightness, Gaussian noise) of the image only, and, when
asked for, the appearance changes that differ between micrographs: defocus/resolution blur and
uneven illumination (a smooth background ramp).

Geometry is applied identically to the image and to every label/mask array; intensity changes
touch the image only. Works on numpy arrays or torch tensors whose last two axes are (H, W).
"""

from __future__ import annotations

import numpy as np

#: D4 element k: rotate by k % 4 quarter turns, then flip left-right if k >= 4.
D4 = tuple(range(8))


def d4(array, k: int):
    """Apply D4 element ``k`` (0..7) to the last two axes of a numpy array or torch tensor."""
    k = int(k) % 8
    try:
        import torch

        if isinstance(array, torch.Tensor):
            out = torch.rot90(array, k % 4, dims=(-2, -1))
            return torch.flip(out, dims=(-1,)) if k >= 4 else out
    except ImportError:  # pragma: no cover
        pass
    out = np.rot90(array, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if k >= 4 else out)


def d4_inverse(array, k: int):
    """Undo :func:`d4` with the same ``k``."""
    k = int(k) % 8
    if k >= 4:  # flips are their own inverse; undo the flip first, then the rotation
        array = d4(array, 4)  # flip only (rotation 0)
    return d4(array, (4 - k % 4) % 4)


def jitter_intensity(image, rng: np.random.Generator, strength: float = 1.0):
    """Mild random gamma/contrast/brightness/noise on a normalised image patch (numpy)."""
    img = np.asarray(image, dtype=np.float32)
    if strength <= 0:
        return img.copy()
    s = float(strength)
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    span = float(hi - lo) or 1.0
    u = np.clip((img - lo) / span, 0.0, 1.0)
    gamma = float(np.exp(rng.uniform(-0.2, 0.2) * s))
    out = lo + span * u ** gamma + (img - np.clip(img, lo, hi))  # keep the tails outside lo..hi
    contrast = 1.0 + rng.uniform(-0.15, 0.15) * s
    mean = float(out.mean())
    out = (out - mean) * contrast + mean
    out = out + rng.uniform(-0.1, 0.1) * s * span
    sigma = rng.uniform(0.0, 0.03) * s * span
    if sigma > 0:
        out = out + rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
    return out.astype(np.float32)


def blur_and_shade(image, rng: np.random.Generator, blur: float = 0.0, shading: float = 0.0):
    """Appearance changes between micrographs, applied to the image only (numpy).

    * ``blur``: half the patches are smoothed with a Gaussian of σ drawn from 0..``blur`` px
      (a softer focus, a lower resolution);
    * ``shading``: every patch gets a smooth background ramp, a random plane plus a random
      quadratic surface (a bowl, a dome or a saddle), whose peak-to-peak height is drawn from
      0..``shading`` of the patch's 1–99 % intensity span (uneven illumination, a thickness gradient across the foil).

    Both 0 (the default) returns the image unchanged without drawing from ``rng``, so recipes
    that do not use them stay reproducible."""
    img = np.asarray(image, dtype=np.float32)
    if blur > 0 and rng.random() < 0.5:
        from scipy.ndimage import gaussian_filter

        sigma = float(rng.uniform(0.0, blur))
        if sigma > 0.05:
            img = gaussian_filter(img, sigma, mode="reflect").astype(np.float32)
    if shading > 0 and img.ndim >= 2 and img.size:
        lo, hi = np.percentile(img, [1.0, 99.0])
        span = float(hi - lo) or 1.0
        h, w = img.shape[-2:]
        y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
        x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
        a, b, c, d, e = rng.normal(0.0, 1.0, size=5)
        ramp = a * y + b * x + c * y * y + d * x * x + e * x * y
        ramp = ramp - ramp.mean()
        ptp = float(ramp.max() - ramp.min())
        if ptp > 0:
            height = float(rng.uniform(0.0, shading)) * span
            img = (img + ramp * (height / ptp)).astype(np.float32)
    return img


def invert_contrast(image, normalization: dict | None = None):
    """The network input of the contrast-inverted micrograph, from a normalised patch
    (``1 − input`` for percentile normalisation, ``−input`` for z-score; see
    :func:`..preprocess.inverted_stats`). This is how bubbles and voids look on the other side
    of focus (dark core, bright Fresnel fringe, instead of bright core, dark fringe)."""
    from ..preprocess import apply_normalization, inverted_stats

    return apply_normalization(image, *inverted_stats(0.0, 1.0, normalization))


def augment_patch(image, arrays, rng: np.random.Generator, intensity: float = 1.0,
                  invert: float = 0.0, normalization: dict | None = None,
                  blur: float = 0.0, shading: float = 0.0):
    """Random D4 element for ``image`` and every array in ``arrays`` (same element), then
    intensity jitter of the image; with probability ``invert``, the contrast is inverted first
    (:func:`invert_contrast`); ``blur``/``shading`` (:func:`blur_and_shade`) come before the
    jitter. Returns (image, [arrays...], k)."""
    k = int(rng.integers(8))
    image = d4(image, k)
    arrays = [d4(a, k) for a in arrays]
    if invert > 0 and rng.random() < invert:  # no draw when off: old recipes stay reproducible
        image = invert_contrast(image, normalization)
    image = blur_and_shade(image, rng, blur=blur, shading=shading)
    image = jitter_intensity(image, rng, intensity)
    return image, arrays, k
