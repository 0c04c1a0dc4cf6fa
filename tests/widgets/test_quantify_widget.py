"""Quantification widget: table, camera, features, histogram, comparison and CSV export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_temdefect.widgets.quantify import QuantifyWidget, viewer_camera

pytestmark = pytest.mark.gui

SPEC = ((30, 40, 16), (60, 150, 24), (150, 90, 20), (200, 200, 30))


def disk_labels(shape=(256, 256), spec=SPEC):
    lab = np.zeros(shape, np.int32)
    y, x = np.ogrid[:shape[0], :shape[1]]
    for i, (r, c, d) in enumerate(spec, start=1):
        lab[(y - r) ** 2 + (x - c) ** 2 <= (d / 2) ** 2] = i
    return lab


def run(widget, qtbot):
    worker = widget.run()
    assert worker is not None
    # _on_finished was connected before the start, so this cannot miss the end
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30000)


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(disk_labels(), name="img defects", scale=(0.5, 0.5))
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    return viewer, layer, widget


def test_table_features_and_row_click_centres(setup, qtbot):
    viewer, layer, widget = setup
    assert widget.layer_combo.currentText() == "img defects"
    assert widget.pixel_size.text() == "0.5"  # from the layer's scale
    run(widget, qtbot)
    assert widget.proxy.rowCount() == 4
    obj = widget.result.objects
    np.testing.assert_allclose(np.sort(obj["equivalent_diameter_nm"]),
                               np.sort([d for _, _, d in SPEC]) * 0.5, rtol=0.02)
    # the labels were measured as they are: features go on the input layer, keyed by id
    assert widget.result_layer is layer
    assert list(layer.features["index"]) == [1, 2, 3, 4]
    assert "equivalent_diameter_nm" in layer.features.columns
    # sort by diameter (descending) and click the first row: the biggest disk (id 4)
    col = list(obj.columns).index("equivalent_diameter_nm")
    widget.table.sortByColumn(col, pytest.importorskip("qtpy.QtCore").Qt.SortOrder.DescendingOrder)
    widget.select_row(0)
    assert layer.selected_label == 4
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], (200 * 0.5, 200 * 0.5), atol=0.05)
    widget.select_row(3)
    assert layer.selected_label == 1
    np.testing.assert_allclose(viewer_camera(viewer).center[-2:], (30 * 0.5, 40 * 0.5), atol=0.05)
    # summary and histogram
    assert widget.summary_model.rowCount() > 10
    assert widget.axes.patches  # histogram bars were drawn


def test_measuring_keeps_the_features_the_layer_already_had(setup, qtbot):
    """Columns the user (or another plugin) put on the labels are kept, matched by label id;
    a second run replaces the measurements, not them."""
    viewer, layer, widget = setup
    layer.features = pd.DataFrame({"index": [4, 2, 1, 3], "phase": ["d", "b", "a", "c"],
                                   "equivalent_diameter_nm": [0.0, 0.0, 0.0, 0.0]})
    run(widget, qtbot)
    feats = layer.features
    assert widget.result_layer is layer
    by_id = dict(zip(feats["index"], feats["phase"]))
    assert by_id == {1: "a", 2: "b", 3: "c", 4: "d"}
    assert "equivalent_diameter_nm" in feats.columns
    assert (feats["equivalent_diameter_nm"] > 0).all()  # a measured column is replaced
    run(widget, qtbot)
    assert dict(zip(layer.features["index"], layer.features["phase"])) == by_id
    assert list(layer.features.columns).count("phase") == 1


def test_features_whose_index_names_no_label_do_not_break_the_merge():
    """An "index" column with text or NaN (another plugin's table) matches no label; the
    measurements still go on the layer instead of an exception on the GUI thread."""
    from napari_temdefect.widgets.quantify import _merged_features

    new = pd.DataFrame({"index": [1, 2, 3], "area_px": [5.0, 6.0, 7.0]})
    for old in (pd.DataFrame({"index": ["x", "2"], "phase": ["a", "b"]}),
                pd.DataFrame({"index": [2.0, np.nan, 1.5], "phase": ["b", "a", "c"]})):
        merged = _merged_features(old, new)
        assert merged["index"].tolist() == [1, 2, 3]
        assert merged["area_px"].tolist() == [5.0, 6.0, 7.0]
        assert merged["phase"].isna().tolist() == [True, False, True]
        assert merged.loc[1, "phase"] == "b"


def test_uncalibrated_layer_reports_pixels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_labels((disk_labels() > 0).astype(np.uint8), name="m defects")
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.pixel_size.text() == ""
    run(widget, qtbot)
    assert "equivalent_diameter_px" in widget.result.objects.columns
    # a binary mask is labelled anew: a separate layer holds the ids and the features
    assert widget.result_layer.name == "m blobs"
    assert widget.result_layer.features["index"].tolist() == [1, 2, 3, 4]
    assert "px" in widget.status.text()


def test_export_writes_two_files_and_asks_before_overwrite(setup, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer, layer, widget = setup
    run(widget, qtbot)
    target = tmp_path / "out.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(target), "CSV files (*.csv)")))
    paths = widget.export_csv()
    assert paths == (target, tmp_path / "out_summary.csv")
    assert len(pd.read_csv(target)) == 4
    assert pd.read_csv(tmp_path / "out_summary.csv")["count"].iloc[0] == 4
    target.write_text("keep me")
    asked = []
    monkeypatch.setattr(widget, "ask_overwrite", lambda p: asked.append(p) or False)
    assert widget.export_csv() is None
    assert asked and target.read_text() == "keep me"
    monkeypatch.setattr(widget, "ask_overwrite", lambda p: True)
    assert widget.export_csv() is not None
    assert len(pd.read_csv(target)) == 4


def test_reference_comparison_adds_confusion_overlay(setup, qtbot):
    viewer, layer, widget = setup
    truth = disk_labels()
    truth[truth == 2] = 0  # the reference lacks disk 2: one false positive
    viewer.add_labels(truth, name="annotation", scale=(0.5, 0.5))
    widget.layer_combo.setCurrentText("img defects")
    widget.reference_combo.setCurrentText("annotation")
    run(widget, qtbot)
    m = widget.comparison.metrics.iloc[0]
    assert m["false_positives"] == 1 and m["matched"] == 3
    overlay = viewer.layers["img confusion"]
    assert overlay.rgb and tuple(overlay.scale) == (0.5, 0.5)
    assert tuple(np.asarray(overlay.data)[60, 150]) == (0, 0, 255, 255)
    assert "object F1" in widget.status.text()
    assert "count 4 vs 3 (0 missed, 1 extra, 0 merged, 0 split)" in widget.status.text()


def test_lines_probability_layer_and_bad_input(make_napari_viewer, qtbot, monkeypatch):
    import napari_temdefect.widgets.quantify as mod

    viewer = make_napari_viewer()
    prob = np.zeros((64, 240), np.float32)
    prob[30:33, 10:210] = 0.9  # centre line from column 10 to 209
    viewer.add_image(prob, name="x probability", scale=(2.0, 2.0), units=("nm", "nm"))
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_combo.setCurrentText("x probability")
    widget.kind_combo.setCurrentText("lines")
    assert widget.pixel_size.text() == "2"
    run(widget, qtbot)
    assert widget.result.objects["length_nm"].iloc[0] == pytest.approx(199 * 2, rel=0.03)
    assert "x lines" in viewer.layers
    # the result layer has the image's units, so the canvas keeps showing nm (a layer in
    # pixels beside one in nm makes napari drop units with an "Inconsistent units" notice)
    assert tuple(viewer.layers["x lines"].units) == tuple(viewer.layers["x probability"].units)
    assert tuple(viewer.layers["x lines"].scale) == (2.0, 2.0)
    errors = []
    monkeypatch.setattr(mod, "show_error", errors.append)
    widget.pixel_size.setText("-1")
    assert widget.run() is None  # refused before any work
    assert len(errors) == 1 and "positive" in str(errors[0])
    # an error inside the worker is shown once, through show_error, not as a traceback
    errors.clear()
    widget.pixel_size.setText("2")
    viewer.layers["x probability"].data = np.full((64, 240), 1.5, np.float32)
    run(widget, qtbot)
    assert len(errors) == 1 and "outside 0..1" in str(errors[0])


def test_kind_is_preset_from_the_layer_classes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    b = np.zeros((128, 128), np.uint8)
    b[:, 63:65] = b[63:65, :] = 1  # a cross of boundaries: four grains
    viewer.add_labels(b, name="g defects", scale=(0.5, 0.5),
                      metadata={"temdefect": {"classes": ["boundary"]}})
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.kind_combo.currentText() == "grains"
    assert widget.min_size.value() == 20
    run(widget, qtbot)
    s = widget.result.summary.iloc[0]
    assert s["grain_count_including_border"] == 4 and s["grain_count"] == 0
    assert "g grains" in viewer.layers


def test_threshold_follows_the_probability_layer(make_napari_viewer, qtbot):
    """A probability layer predicted at the model's threshold is cut there, not at 0.5."""
    viewer = make_napari_viewer()
    prob = np.zeros((64, 64), np.float32)
    prob[10:20, 10:20] = 0.9
    prob[40:50, 40:50] = 0.4  # a blob only above the grain-boundary-style cut
    viewer.add_image(prob, name="a probability", metadata={"temdefect": {"threshold": 0.3}})
    viewer.add_image(prob, name="b plain")
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    widget.kind_combo.setCurrentText("blobs")
    widget.layer_combo.setCurrentText("a probability")
    assert widget.threshold.value() == pytest.approx(0.3)
    run(widget, qtbot)
    assert len(widget.result.objects) == 2
    widget.layer_combo.setCurrentText("b plain")  # nothing recorded: the box keeps its value
    widget.threshold.setValue(0.5)
    run(widget, qtbot)
    assert len(widget.result.objects) == 1


def test_docked_from_the_plugin_menu_it_sees_layer_kinds_through_napari_proxies(
        make_napari_viewer, qtbot):
    """Docked through napari's plugin machinery, the widget's viewer is a PublicOnlyProxy whose
    layers[name] are proxies; the Threshold box must still follow a probability layer."""
    from napari_temdefect.widgets._common import layer_kind

    viewer = make_napari_viewer()
    prob = np.zeros((64, 64), np.float32)
    prob[10:20, 10:20] = 0.9
    prob[40:50, 40:50] = 0.4
    viewer.add_image(prob, name="a probability", metadata={"temdefect": {"threshold": 0.3}})
    viewer.add_labels((prob > 0.5).astype(np.uint8), name="a defects")
    _, widget = viewer.window.add_plugin_dock_widget("napari-temdefect", "Quantification")
    assert layer_kind(widget.viewer.layers["a probability"]) == "image"
    assert layer_kind(widget.viewer.layers["a defects"]) == "labels"
    widget.kind_combo.setCurrentText("blobs")
    widget.layer_combo.setCurrentText("a probability")
    assert widget.threshold.isEnabled() and widget.threshold.value() == pytest.approx(0.3)
    run(widget, qtbot)
    assert len(widget.result.objects) == 2
    widget.layer_combo.setCurrentText("a defects")
    assert not widget.threshold.isEnabled()  # a labels layer is already cut


def test_ignore_painted_on_the_layer_is_left_out_of_the_field(make_napari_viewer, qtbot):
    """The Corrections panel's ignore brush (65535) on the measured layer: the disk under it is
    not counted, the field shrinks, the status says how much was left out, and the layer's own
    labels (ignore included) are untouched."""
    from napari_temdefect.constants import IGNORE_LABEL

    viewer = make_napari_viewer()
    labels = disk_labels()
    labels[128:, 128:] = IGNORE_LABEL  # over the disk at (200, 200)
    layer = viewer.add_labels(labels.copy(), name="img defects", scale=(0.5, 0.5))
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    run(widget, qtbot)
    s = widget.result.summary.iloc[0]
    assert s["count"] == 3 and s["ignored_fraction"] == pytest.approx(0.25)
    assert s["field_area_um2"] == pytest.approx(0.75 * 256 ** 2 * 0.25 * 1e-6)
    assert "25.0 % of the image is marked ignore" in widget.status.text()
    np.testing.assert_array_equal(layer.data, labels)


@pytest.mark.parametrize("scale, units, expected", [
    (0.002, "µm", "2"), (5.0, "angstrom", "0.5"), (0.5, "nm", "0.5"), (0.5, None, "0.5"),
    (1.0, None, ""),
])
def test_pixel_size_follows_the_layer_unit(make_napari_viewer, qtbot, scale, units, expected):
    """A layer calibrated in µm (or Å) is converted to nm, not read as nm (1000× off); a scale
    without a length unit is taken as nm, and 1 without a unit means uncalibrated."""
    viewer = make_napari_viewer()
    kwargs = {"scale": (scale, scale)}
    if units:
        kwargs["units"] = (units, units)
    viewer.add_labels(disk_labels(), name="img defects", **kwargs)
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.pixel_size.text() == expected
    if expected:
        run(widget, qtbot)
        d = np.sort(widget.result.objects["equivalent_diameter_nm"].to_numpy())
        np.testing.assert_allclose(d, np.sort([s[2] for s in SPEC]) * float(expected), rtol=0.02)


def test_ignore_on_a_lines_layer_is_not_taken_for_line_pixels(make_napari_viewer, qtbot):
    """For lines and grains a Labels layer is read as a mask; the ignore brush must not turn
    into line (boundary) pixels there."""
    from napari_temdefect.constants import IGNORE_LABEL

    viewer = make_napari_viewer()
    labels = np.zeros((128, 128), np.int32)
    labels[63:66, 10:118] = 1          # one horizontal line, 108 px long
    labels[90:120, 20:110] = IGNORE_LABEL  # an ignored patch away from it
    viewer.add_labels(labels, name="img defects")
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    widget.kind_combo.setCurrentText("lines")
    run(widget, qtbot)
    s = widget.result.summary.iloc[0]
    assert s["count"] == 1
    assert s["total_line_length_px"] == pytest.approx(107, abs=3)
    assert s["ignored_fraction"] == pytest.approx(30 * 90 / 128 ** 2)


def test_blobs_painted_with_one_label_are_measured_and_explained(make_napari_viewer, qtbot):
    """A user who paints several missed bubbles with one label gets them measured (not refused
    as "not instance labels") and told that each label counts as one object."""
    viewer = make_napari_viewer()
    labels = disk_labels()
    y, x = np.ogrid[:256, :256]
    for cy, cx in ((100, 30), (120, 220), (230, 40)):  # three more blobs, all painted as 9
        labels[(y - cy) ** 2 + (x - cx) ** 2 <= 36] = 9
    viewer.add_labels(labels, name="img defects")
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    run(widget, qtbot)
    assert len(widget.result.objects) == 5  # the 4 disks and label 9, as painted
    assert "label 9: 3 pieces" in widget.status.text()
    assert widget.result_layer.name == "img defects"  # features on the layer itself


def test_a_labels_layer_records_its_probability_maps_threshold(make_napari_viewer, qtbot):
    """Labels cut from a map at 0.3: the summary says 0.3, not the disabled box's 0.5."""
    viewer = make_napari_viewer()
    prob = np.zeros((64, 64), np.float32)
    prob[10:20, 10:20] = 0.9
    viewer.add_image(prob, name="a probability", metadata={"temdefect": {"threshold": 0.3}})
    viewer.add_labels((prob > 0.3).astype(np.uint8), name="a defects")
    viewer.add_image(prob, name="b probability")  # nothing recorded
    viewer.add_labels((prob > 0.3).astype(np.uint8), name="b defects")
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    widget.kind_combo.setCurrentText("blobs")
    widget.threshold.setValue(0.5)
    for name, expected in (("a defects", 0.3), ("b defects", 0.5)):
        widget.layer_combo.setCurrentText(name)
        run(widget, qtbot)
        assert widget.result.summary.iloc[0]["threshold"] == pytest.approx(expected)


def test_non_square_pixels_are_named_in_the_status(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_labels(disk_labels(), name="img defects", scale=(1.0, 0.5))
    viewer.add_labels(disk_labels(), name="sq defects", scale=(0.5, 0.5))
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_combo.setCurrentText("img defects")
    run(widget, qtbot)
    assert "pixels are not square (x 0.5, y 1)" in widget.status.text()
    widget.layer_combo.setCurrentText("sq defects")
    run(widget, qtbot)
    assert "not square" not in widget.status.text()


def test_split_follows_the_model_that_made_the_layer_until_the_user_chooses(
        make_napari_viewer, qtbot):
    """Two touching disks predicted by a model that counts touching blobs apart (metadata
    written by the Inference widget): Split is preset and they count as two; a layer from
    another model leaves it clear; once the user clicks the box, their choice stays."""
    pair = np.zeros((128, 128), np.int32)
    y, x = np.ogrid[:128, :128]
    for c in (48, 76):
        pair[(y - 64) ** 2 + (x - c) ** 2 <= 15 ** 2] = 1
    viewer = make_napari_viewer()
    viewer.add_labels(pair, name="a defects",
                      metadata={"temdefect": {"classes": ["bubble"], "split_touching": True}})
    viewer.add_labels(pair, name="b defects",
                      metadata={"temdefect": {"classes": ["bubble"], "split_touching": False}})
    widget = QuantifyWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_combo.setCurrentText("a defects")
    assert widget.split.isChecked()
    run(widget, qtbot)
    assert widget.result.summary["count"].iloc[0] == 2
    widget.layer_combo.setCurrentText("b defects")
    assert not widget.split.isChecked()
    run(widget, qtbot)
    assert widget.result.summary["count"].iloc[0] == 1
    # a layer that records nothing (drawn by hand) does not inherit the last model's choice
    viewer.add_labels(pair, name="drawn")
    widget.layer_combo.setCurrentText("a defects")
    assert widget.split.isChecked()
    widget.layer_combo.setCurrentText("drawn")
    assert not widget.split.isChecked()
    widget.split.click()  # the user's choice now holds for every layer
    widget.layer_combo.setCurrentText("a defects")
    widget.layer_combo.setCurrentText("b defects")
    assert widget.split.isChecked()
