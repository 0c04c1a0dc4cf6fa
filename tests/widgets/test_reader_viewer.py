"""napari itself opens TEM files through the plugin's reader, with the scale in nm."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_temdefect.io import write_tiff

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from dm3_writer import write_dm3  # noqa: E402  (test helper beside the reader tests)

pytestmark = pytest.mark.gui


def test_viewer_open_dm3_gives_calibrated_layer(make_napari_viewer, tmp_path):
    image = np.random.default_rng(0).integers(0, 4000, (64, 80)).astype(np.uint16)
    path = tmp_path / "gatan.dm3"
    write_dm3(path, image, scale=0.25, units="nm")
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-temdefect")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "gatan" and np.array_equal(layer.data, image)
    assert tuple(layer.scale) == pytest.approx((0.25, 0.25))
    assert layer.metadata["calibrated"] is True and layer.metadata["pixel_size_nm"] == 0.25


def test_viewer_open_uncalibrated_stack(make_napari_viewer, tmp_path):
    stack = np.zeros((3, 40, 40), np.float32)
    stack[1] = 1.0
    path = write_tiff(tmp_path / "frames.tif", stack)
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin="napari-temdefect")[0]
    assert layer.data.shape == (3, 40, 40)
    assert tuple(layer.scale) == (1.0, 1.0, 1.0) and layer.metadata["calibrated"] is False
