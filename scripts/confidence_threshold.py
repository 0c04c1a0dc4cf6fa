"""Should the confidence map be centred on the model's operating threshold instead of 0.5?

    python scripts/confidence_threshold.py --only grain-boundary bubble --folds 0

The product's confidence is ``1 − Hₙ(p)``, lowest at p = 0.5 (``inference/confidence.py``),
while the shipped models cut their masks at their own operating threshold ``t`` (0.25 for
grain boundaries, 0.6 for bubbles). The alternative centres the entropy on ``t``
(``logit p̃ = logit p − logit t``, so confidence is 0 exactly where the mask can flip). For
each fold checkpoint (``runs/bundled/cv/<arch>/``) and each image that the fold held out, the
mask is cut at the shipped model's ``t`` and the AUROC of ``1 − confidence`` as a predictor of
that mask's wrong pixels is printed for both definitions, and for ``1 − P(mask right)``
(``p`` where the mask says defect, ``1 − p`` elsewhere), the error probability of a calibrated
model. Results go to ``runs/bundled/confidence_threshold.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import parse_cv_args, score_held_out  # noqa: E402

DEFINITIONS = ("centred_0.5", "centred_t", "p_right")


def error_aurocs(prob: np.ndarray, truth: np.ndarray, t: float) -> dict:
    """AUROC of each confidence definition against the wrong pixels of the mask ``prob > t``."""
    from napari_temdefect.inference.confidence import entropy_confidence
    from napari_temdefect.metrics import auroc

    mask = prob > t
    wrong = mask != truth
    a = prob * (1.0 - t)
    centred = a / (a + (1.0 - prob) * t)
    conf = {"centred_0.5": entropy_confidence(prob[None]),
            "centred_t": entropy_confidence(centred[None]),
            "p_right": np.where(mask, prob, 1.0 - prob)}
    return {k: auroc(1.0 - conf[k], wrong) for k in DEFINITIONS}


def main(argv=None) -> int:
    from napari_temdefect import predict
    from napari_temdefect.models import model_threshold

    def score(kind, image, model):
        prob = predict(model, image["image"], device="cpu").probability[0]
        return error_aurocs(prob, image["mask"], model_threshold(kind))

    score_held_out(parse_cv_args(__doc__.split("\n\n")[0], argv), "confidence_threshold.json",
                   score, keys=DEFINITIONS,
                   about=lambda kind: {"threshold": model_threshold(kind)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
