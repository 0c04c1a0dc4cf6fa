"""InferenceWidget (placeholder until its issue lands)."""

from ._common import Placeholder


def InferenceWidget(napari_viewer=None):
    return Placeholder("InferenceWidget", "Not available yet: Run a model on a micrograph (issue 3).")
