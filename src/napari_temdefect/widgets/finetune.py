"""FinetuneWidget (placeholder until its issue lands)."""

from ._common import Placeholder


def FinetuneWidget(napari_viewer=None):
    return Placeholder("FinetuneWidget", "Not available yet: Retrain the deep layers on your corrections (issue 4).")
