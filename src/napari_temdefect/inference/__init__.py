"""Tiled inference: ``predict(model, image, ...) -> PredictionResult``.

* :mod:`.tiling` — where tiles go, reflect padding, blending windows (numpy only)
* :mod:`.confidence` — the confidence map and its definition
* :mod:`.predict` — the engine (torch; AMP and channels-last on CUDA)
* :mod:`.scale` — does the image's pixel size match the scale the model learned?
"""

from .predict import PredictionResult, predict
from .scale import scale_mismatch

__all__ = ["PredictionResult", "predict", "scale_mismatch"]
