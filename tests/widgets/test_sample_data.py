"""The plugin's sample data open in a real napari viewer, calibrated, with their ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temdefect import sample_data

EXPECTED = {"grains": 0.5, "bubbles": 0.25, "loops": 0.25}


@pytest.mark.gui
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_sample_opens_in_viewer_with_scale_and_truth(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-temdefect", key)
    names = [layer.name for layer in viewer.layers]
    assert names == [f"synthetic {key}", f"synthetic {key} truth"]
    image, truth = viewer.layers
    px = EXPECTED[key]
    assert tuple(image.scale) == pytest.approx((px, px))
    assert tuple(truth.scale) == pytest.approx((px, px))
    assert image.metadata["pixel_size_nm"] == px and image.metadata["calibrated"] is True
    assert image.metadata["unit"] == "nm"
    assert 768 <= image.data.shape[0] <= 1024 and image.data.shape == truth.data.shape
    assert truth.data.max() > 0 and truth.data.dtype == np.int32
    assert image.visible and not truth.visible  # the demo shows the model's answer first
    # the labels mark the defects: there the image differs from elsewhere
    inside = truth.data > 0
    assert abs(float(image.data[inside].mean()) - float(image.data[~inside].mean())) > 0.01


def test_samples_are_deterministic_and_match_the_manifest():
    import yaml
    from pathlib import Path

    import napari_temdefect

    a = sample_data.sample_loops()
    b = sample_data.sample_loops()
    assert np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[1][0], b[1][0])
    manifest = yaml.safe_load(
        (Path(napari_temdefect.__file__).parent / "napari.yaml").read_text(encoding="utf-8"))
    shown = {s["key"]: s["display_name"] for s in manifest["contributions"]["sample_data"]}
    for key, (_, _, px, _) in sample_data.SAMPLES.items():
        assert f"{px:g} nm/px" in shown[key]  # the menu tells the truth about the pixel size
