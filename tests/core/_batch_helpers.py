"""Small synthetic micrographs for the batch tests (tifffile, a few disks on noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def disk_image(seed: int, shape=(64, 80), n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 8, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n):
        cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] += 60
    return img


def write_images(folder: Path, n: int = 3, pixel_size_nm: float | None = 0.5,
                 shape=(64, 80)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.tif"
        kwargs = {}
        if pixel_size_nm is not None:
            kwargs = dict(imagej=True, resolution=(1 / pixel_size_nm, 1 / pixel_size_nm),
                          metadata={"unit": "nm"})
        tifffile.imwrite(path, disk_image(i, shape), **kwargs)
        paths.append(path)
    return paths


def model_threshold(model, path: Path, q: float = 85.0) -> float:
    """A threshold that leaves some foreground for a random (untrained) test model."""
    from napari_temdefect.inference import predict

    prob = predict(model, tifffile.imread(path), tile=128, overlap=16).probability
    return round(float(np.percentile(prob, q)), 6)
