"""napari-temdefect: find and measure nanoscale defects in TEM images.

The public Python API (used by the CLI, the widgets, the tests and users' scripts)::

    import napari_temdefect as td
    model = td.load_model("bubble")
    result = td.predict(model, image)          # .probability, .confidence, .mask

Heavy modules (torch, smp) load on first use, so importing the package stays fast.
"""

from ._version import __version__
from .errors import TemDefectError

__all__ = ["TemDefectError", "__version__", "create_model", "list_models", "load_model",
           "predict", "save_model"]


def __getattr__(name):  # lazy public API
    if name in ("load_model", "save_model", "create_model", "list_models", "ModelSpec", "Model"):
        from . import models

        return getattr(models, name)
    if name in ("predict", "PredictionResult"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'napari_temdefect' has no attribute {name!r}")
