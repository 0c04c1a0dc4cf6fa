"""Tiled inference: ``predict(model, image, ...) -> PredictionResult``.

* :mod:`.tiling` — where tiles go, reflect padding, blending windows (numpy only)
* :mod:`.confidence` — the confidence map and its definition
* :mod:`.predict` — the engine (torch; AMP and channels-last on CUDA)
"""

from .predict import PredictionResult, predict

__all__ = ["PredictionResult", "predict"]
