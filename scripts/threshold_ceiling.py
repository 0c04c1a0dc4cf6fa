"""How far can a choice of threshold take pixel F1? An oracle bound for the CV models.

    python scripts/threshold_ceiling.py [--only grain-boundary bubble] [--arch TAG]

Each held-out image of every CV fold is predicted by the fold model that never saw it (the
product's ``predict``), and its pixel F1 is taken three ways:

* ``f1_0.5``: the mask at 0.5, the seed paper's metric (the evaluation report's figure);
* ``f1_area``: the mask at the image's *area-matching* threshold, the one whose mask has as
  many pixels as the probabilities sum to (for a calibrated model, the expected number of true
  defect pixels): a threshold chosen per image without the labels, which a product could use;
* ``f1_oracle``: the mask at the threshold of :data:`GRID` that scores best **against the
  image's own labels**. No method can choose it without the labels, so its mean is an upper
  bound on what any threshold rule, global or per image, gets from these probabilities.

Also per image: the labelled, predicted (0.5) and expected (sum of p) defect area fractions.
Rows go to ``runs/bundled/threshold_ceiling.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import parse_cv_args, score_held_out  # noqa: E402

#: Thresholds the oracle chooses from.
GRID = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def area_matching_threshold(prob: np.ndarray) -> float:
    """The threshold whose mask holds ``round(sum(prob))`` pixels (ties aside)."""
    p = np.asarray(prob).ravel()
    n = round(float(p.sum(dtype=np.float64)))
    if n <= 0:
        return 1.0
    if n >= p.size:
        return 0.0
    # the n-th largest value is the lowest kept; cut just below it, in the map's own dtype
    # (``prob > t`` compares in float32 for a float32 map)
    kth = np.partition(p, p.size - n)[p.size - n]
    return float(np.nextafter(kth, p.dtype.type(-np.inf)))


def ceiling_row(prob: np.ndarray, truth: np.ndarray) -> dict:
    """Pixel F1 of one image at 0.5, at its area-matching threshold and at its oracle one."""
    from napari_temdefect.metrics import pixel_f1

    truth = np.asarray(truth) > 0
    t_area = area_matching_threshold(prob)
    scores = {t: pixel_f1(prob > t, truth).f1 for t in GRID}
    t_best = max(scores, key=scores.get)
    return {"f1_0.5": pixel_f1(prob > 0.5, truth).f1,
            "f1_area": pixel_f1(prob > t_area, truth).f1, "t_area": t_area,
            "f1_oracle": scores[t_best], "t_oracle": t_best,
            "area_true": float(truth.mean()), "area_0.5": float((prob > 0.5).mean()),
            "area_expected": float(np.asarray(prob, np.float64).mean())}


def main(argv=None) -> int:
    from napari_temdefect import predict

    def score(kind, image, model):
        prob = predict(model, image["image"], device="cpu").probability[0]
        return ceiling_row(prob, image["mask"])

    args = parse_cv_args(__doc__.split("\n\n")[0], argv)
    score_held_out(args, "threshold_ceiling.json", score,
                   keys=("f1_0.5", "f1_area", "f1_oracle"), about=lambda kind: {"grid": GRID})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
