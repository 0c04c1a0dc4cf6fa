"""Test-time BatchNorm adaptation (AdaBN) on the held-out CV images: does re-estimating the
BatchNorm statistics on each new micrograph close the gap between micrographs?

    python scripts/bn_adaptation.py --only grain-boundary bubble --folds 0

For each fold checkpoint (``runs/bundled/cv/<arch>/``) and each image that the fold held out,
the BatchNorm running statistics are re-estimated from that image alone (its non-overlapping
256² tiles, normalised as ``predict`` normalises them, one cumulative average per layer), then
mixed with the training statistics: ``alpha`` = 0 is the model as trained, 1 the image's own
statistics, 0.5 half of each (Li et al. 2016, "Revisiting batch normalization for practical
domain adaptation"). The adapted copy runs through the product's ``predict``; pixel F1 and
boundary F1 (3 px) at 0.5 are printed per image and averaged, and written to
``runs/bundled/bn_adaptation.json``. The shipped model is never changed.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import parse_cv_args, score_held_out  # noqa: E402

ALPHAS = (0.0, 0.5, 1.0)
TILE = 256


def adapted(model, image, alpha: float, tile: int = TILE):
    """A copy of ``model`` whose BatchNorm statistics are (1 − alpha) · trained + alpha · the
    statistics of ``image``'s tiles."""
    import torch

    from napari_temdefect.inference.predict import _image_stats
    from napari_temdefect.preprocess import apply_normalization

    m = copy.deepcopy(model)
    bns = [x for x in m.module.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    trained = [(b.running_mean.clone(), b.running_var.clone(), b.momentum) for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # a cumulative average over the image's tiles
    m.module.eval()
    for b in bns:
        b.train()
    offset, scale = _image_stats(image, m.spec.normalization)
    x = apply_normalization(image, offset, scale).astype(np.float32)
    h, w = x.shape
    tiles = [x[i:i + tile, j:j + tile] for i in range(0, h - tile + 1, tile)
             for j in range(0, w - tile + 1, tile)]
    with torch.no_grad():
        for k in range(0, len(tiles), 4):
            m.module(torch.from_numpy(np.stack(tiles[k:k + 4])[:, None]))
    for b, (mean, var, momentum) in zip(bns, trained):
        b.running_mean.mul_(alpha).add_((1 - alpha) * mean)
        b.running_var.mul_(alpha).add_((1 - alpha) * var)
        b.momentum = momentum
    m.module.eval()
    return m


def main(argv=None) -> int:
    from napari_temdefect import predict
    from napari_temdefect.metrics import boundary_f1, pixel_f1

    def score(kind, image, model):
        row = {}
        for alpha in ALPHAS:
            m = model if alpha == 0 else adapted(model, image["image"], alpha)
            pred = predict(m, image["image"], threshold=0.5, device="cpu").mask > 0
            row[f"pixel_f1_alpha{alpha:g}"] = pixel_f1(pred, image["mask"]).f1
            row[f"boundary_f1_alpha{alpha:g}"] = boundary_f1(pred, image["mask"], 3.0).f1
        return row

    score_held_out(parse_cv_args(__doc__.split("\n\n")[0], argv), "bn_adaptation.json", score)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
