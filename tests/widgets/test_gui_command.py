"""`temdefect gui` docks the four widgets and opens a calibrated sample."""

import pytest

from napari_temdefect import TemDefectError
from napari_temdefect.cli.gui import WIDGETS, setup_viewer

pytestmark = pytest.mark.gui


def test_gui_docks_widgets_and_opens_the_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    widgets = setup_viewer(viewer, sample="bubbles")
    assert set(widgets) == set(WIDGETS)
    images = [ly for ly in viewer.layers if ly._type_string == "image"]
    assert images, "the sample micrograph was not opened"
    assert images[0].scale[-1] == pytest.approx(0.25)  # nm per pixel of the bubble sample
    assert viewer.layers.selection.active is images[0]


def test_gui_missing_image_is_one_clear_error(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    with pytest.raises(TemDefectError, match="does not exist"):
        setup_viewer(viewer, images=[str(tmp_path / "nope.tif")])


def test_gui_opens_images_calibrated_and_names_a_file_it_cannot_read(make_napari_viewer,
                                                                     tmp_path, capsys):
    import numpy as np

    from napari_temdefect.cli.main import main
    from napari_temdefect.io import write_tiff

    write_tiff(tmp_path / "a.tif", np.zeros((32, 40), np.float32), pixel_size_nm=0.5)
    viewer = make_napari_viewer()
    setup_viewer(viewer, images=[str(tmp_path / "a.tif")])
    assert viewer.layers["a"].scale[-1] == pytest.approx(0.5)
    assert viewer.layers["a"].metadata["pixel_size_nm"] == pytest.approx(0.5)
    (tmp_path / "bad.tif").write_bytes(b"not a TIFF at all")
    assert main(["gui", str(tmp_path / "bad.tif")]) == 2  # before any window opens
    err = capsys.readouterr().err
    assert "bad.tif is not a readable TIFF file" in err and err.count("\n") == 1
