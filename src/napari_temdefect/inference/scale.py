"""Does an image's pixel size match the scale the model learned?

A network learns defects at the pixel size of its training images: at another magnification
the same bubble covers more or fewer pixels than anything it has seen. A model whose spec
records ``pixel_size_nm`` (the median calibration of its training set; see
``training.train``/``finetune``) can say so when it meets an image far from that scale.
"""

from __future__ import annotations

import math

#: Tolerated ratio between the image's and the model's pixel size (either way).
TOLERANCE = 1.5


def scale_mismatch(model_pixel_nm, image_pixel_nm, tolerance: float = TOLERANCE) -> str | None:
    """One sentence when the two pixel sizes differ by more than ``tolerance``×, else None
    (also None when either is unknown)."""
    try:
        m, i = float(model_pixel_nm), float(image_pixel_nm)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(m) and math.isfinite(i) and m > 0 and i > 0):
        return None
    ratio = max(m, i) / min(m, i)
    if ratio <= tolerance:
        return None
    look = "larger" if i < m else "smaller"
    return (f"the model learned its defects at {m:g} nm/px and this image is {i:g} nm/px, so "
            f"they look {ratio:.1f}× {look} than in its training images; resample the image "
            f"to about {m:g} nm/px, or fine-tune the model on this magnification")
