"""CorrectionsWidget (placeholder until its issue lands)."""

from ._common import Placeholder


def CorrectionsWidget(napari_viewer=None):
    return Placeholder("CorrectionsWidget", "Not available yet: Fix the prediction and build a training set (issue 4).")
