"""QuantifyWidget (placeholder until its issue lands)."""

from ._common import Placeholder


def QuantifyWidget(napari_viewer=None):
    return Placeholder("QuantifyWidget", "Not available yet: Per-defect tables and CSV export (issue 5).")
