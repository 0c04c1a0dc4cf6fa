"""Corrections widget on a real napari viewer: each button edits the labels undoably."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temdefect import corrections as core
from napari_temdefect.constants import IGNORE_LABEL

pytestmark = pytest.mark.gui


def _probability():
    yy, xx = np.mgrid[0:96, 0:96]
    p = np.zeros((96, 96))
    for cy, cx in ((20, 20), (20, 60), (70, 30), (70, 75)):
        p = np.maximum(p, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0))
    return p.astype(np.float32)[None]


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    from napari_temdefect.widgets._session import get_session
    from napari_temdefect.widgets.corrections import CorrectionsWidget

    viewer = make_napari_viewer()
    prob = _probability()
    image = (1.0 - prob[0] + np.random.default_rng(0).normal(0, 0.05, prob.shape[1:])).astype(np.float32)
    viewer.add_image(image, name="img", scale=(0.5, 0.5), metadata={"pixel_size_nm": 0.5})
    viewer.add_image(prob[0], name="img probability")
    labels = core.instances_from_mask(core.mask_from_probability(prob, 0.5)).astype(np.int32)
    labels[5:7, 85:87] = labels.max() + 1   # a 4-px speck
    layer = viewer.add_labels(labels, name="img defects")
    get_session(viewer).inference_settings["threshold"] = 0.5
    widget = CorrectionsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer() is layer
    return viewer, widget, layer


def test_buttons_edit_labels_and_undo_restores(setup):
    viewer, widget, layer = setup
    original = layer.data.copy()
    speck = layer.data[5, 85]

    widget.min_size.setValue(10)
    widget.remove_small_btn.click()
    assert not np.any(layer.data == speck) and np.any(layer.data > 0)
    layer.undo()
    assert np.array_equal(layer.data, original)

    a, b = layer.data[20, 20], layer.data[20, 60]
    widget.merge_ids.setText(f"{a}, {b}")
    widget.merge_selected_btn.click()
    assert layer.data[20, 60] == min(a, b) == layer.data[20, 20]
    layer.undo()
    assert np.array_equal(layer.data, original)

    layer.selected_label = int(layer.data[70, 30])
    widget.delete_selected_btn.click()
    assert layer.data[70, 30] == 0 and layer.data[70, 75] > 0
    widget.delete_at((70, 75))
    assert layer.data[70, 75] == 0
    layer.undo()
    assert layer.data[70, 75] > 0 and layer.data[70, 30] == 0
    layer.undo()
    assert np.array_equal(layer.data, original)


def test_fill_holes_and_merge_touching_buttons(setup):
    viewer, widget, layer = setup
    obj = layer.data[20, 20]
    hole = layer.data.copy()
    hole[19:22, 19:22] = 0
    layer.data = hole
    widget.fill_holes_btn.click()
    assert np.all(layer.data[19:22, 19:22] == obj)
    touching = layer.data.copy()
    touching[20, 20:61] = touching[20, 60]   # a bridge joins two objects
    layer.data = touching
    widget.merge_touching_btn.click()
    assert layer.data[20, 20] == layer.data[20, 60] == min(obj, touching[20, 60])


def test_ignore_brush_selects_ignore_label_with_its_own_colour(setup):
    viewer, widget, layer = setup
    widget.ignore_btn.click()
    assert layer.selected_label == IGNORE_LABEL and layer.mode == "paint"
    grey = np.asarray(layer.colormap.map(np.array([IGNORE_LABEL]))[0])
    assert grey[3] < 1 and np.allclose(grey[:3], grey[0])  # semi-transparent grey
    one = np.asarray(layer.colormap.map(np.array([1]))[0])
    assert not np.allclose(one, grey)


def test_rethreshold_keeps_edits_and_is_undoable(setup, qtbot):
    viewer, widget, layer = setup
    labels = layer.data.copy()
    labels[85:90, 5:10] = 50                 # painted by the user
    labels[20, 55:66] = 0                    # an erased line through an object
    labels[0:3, 40:50] = IGNORE_LABEL        # ignore strip
    layer.data = labels
    blob = layer.data[20, 20]
    size_before = int((layer.data == blob).sum())

    widget.rethreshold(0.2)
    low = layer.data.copy()
    assert (low == blob).sum() > size_before
    assert np.all(low[85:90, 5:10] > 0) and np.all(low[20, 55:66] == 0)
    assert np.all(low[0:3, 40:50] == IGNORE_LABEL)

    widget.rethreshold(0.8)
    assert (layer.data == blob).sum() < size_before
    assert np.all(layer.data[85:90, 5:10] > 0) and np.all(layer.data[0:3, 40:50] == IGNORE_LABEL)

    layer.undo()
    assert np.array_equal(layer.data, low)
    layer.undo()
    assert np.array_equal(layer.data, labels)
    # after undo, going back to 0.5 restores the original mask with the edits
    widget.rethreshold(0.5)
    assert np.array_equal(layer.data, labels)

    # the slider applies after it rests
    widget.threshold_spin.setValue(0.3)
    qtbot.waitUntil(lambda: (layer.data == blob).sum() > size_before, timeout=3000)


def test_add_save_load_training_set(setup, tmp_path, monkeypatch):
    from napari_temdefect.widgets._session import get_session

    viewer, widget, layer = setup
    labels = layer.data.copy()
    labels[85:90, 5:10] = 50
    labels[0:3, 40:50] = IGNORE_LABEL
    layer.data = labels
    entry = widget.add_to_training_set()
    assert entry is not None
    ts = get_session(viewer).training_set
    assert len(ts) == 1 and ts[0].name == "img" and ts[0].pixel_size_nm == 0.5
    assert np.array_equal(ts[0].ignore_mask(), labels == IGNORE_LABEL)
    assert ts[0].edited[85:90, 5:10].all() and not ts[0].edited[20, 20]
    assert np.array_equal(layer.data, labels)            # labels untouched
    widget.add_to_training_set()                         # same image again: replaced
    assert len(ts) == 1 and widget.entries.count() == 1
    assert "img" in widget.entries.item(0).text()
    # edits: the 25 painted pixels and the fixture's 4-px speck; the 30 ignored pixels are
    # counted once, as ignored (they were counted as edited too)
    assert "30 px ignored · 29 px edited" in widget.entries.item(0).text()

    folder = tmp_path / "set"
    assert widget.save_training_set(folder) == folder
    asked = []
    monkeypatch.setattr(widget, "_confirm", lambda text: asked.append(text) or False)
    assert widget.save_training_set(folder) is None      # refused without confirmation
    assert asked and "already holds" in asked[0]

    get_session(viewer).training_set = None
    loaded = widget.load_training_set(folder)
    assert len(loaded) == 1 and np.array_equal(loaded[0].ignore_mask(), labels == IGNORE_LABEL)
    assert widget.entries.count() == 1


def test_errors_are_notifications_not_exceptions(make_napari_viewer, qtbot, monkeypatch):
    from napari_temdefect.widgets import corrections as mod

    shown = []
    monkeypatch.setattr(mod, "show_error", lambda exc: shown.append(str(exc)))
    viewer = make_napari_viewer()
    widget = mod.CorrectionsWidget(viewer)
    qtbot.addWidget(widget)
    widget.fill_holes_btn.click()
    widget.add_btn.click()
    assert len(shown) == 2 and "Inference" in shown[0]
    viewer.add_labels(np.zeros((32, 32), np.int32), name="x defects")
    widget.add_btn.click()
    assert "No image layer" in shown[-1]
    widget.rethreshold(0.4)
    assert "No probability map" in shown[-1]


def test_d_key_deletes_object_under_cursor(setup):
    viewer, widget, layer = setup
    target = layer.data[70, 30]
    viewer.cursor.position = tuple(layer.data_to_world((70, 30)))
    viewer.layers.selection.active = layer
    keys = viewer.window._qt_viewer._key_map_handler
    assert keys.press_key("d")          # the key as napari dispatches it to the active layer
    keys.release_key("d")
    assert not np.any(layer.data == target) and layer.data[20, 20] > 0
    layer.undo()
    assert np.any(layer.data == target)
    # "new label" skips the ignore value once ignore pixels exist
    labels = layer.data.copy()
    labels[0:2, 0:2] = IGNORE_LABEL
    layer.data = labels
    assert keys.press_key("m")
    keys.release_key("m")
    assert layer.selected_label == int(labels[labels != IGNORE_LABEL].max()) + 1


def test_ignore_brush_widens_8bit_labels(make_napari_viewer, qtbot):
    from napari_temdefect.widgets.corrections import CorrectionsWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="a")
    layer = viewer.add_labels(np.ones((32, 32), np.uint8), name="a defects")
    widget = CorrectionsWidget(viewer)
    qtbot.addWidget(widget)
    widget.ignore_btn.click()
    assert layer.data.dtype == np.uint16 and layer.selected_label == IGNORE_LABEL
    assert np.all(layer.data == 1)


def test_labels_predicted_with_inverted_contrast_train_on_the_inverted_image(setup):
    from napari_temdefect.widgets._results import OUTPUT_KEY
    from napari_temdefect.widgets._session import get_session

    viewer, widget, layer = setup
    image = np.asarray(viewer.layers["img"].data)
    widget.add_to_training_set()
    ts = get_session(viewer).training_set
    np.testing.assert_array_equal(ts[0].image, image)
    layer.metadata = {**layer.metadata, OUTPUT_KEY: {"inverted": True}}
    widget.add_to_training_set()  # replaces the entry: the model saw this image inverted
    assert len(ts) == 1
    np.testing.assert_allclose(ts[0].image, image.max() + image.min() - image, atol=1e-6)
    assert np.array_equal(np.asarray(viewer.layers["img"].data), image)  # the layer untouched


def test_panels_move_to_a_new_defects_layer_and_follow_renames(make_napari_viewer, qtbot):
    """A session that opens with a ground-truth Labels layer: once Inference makes
    `<image> defects`, Corrections and Quantification both work on it, not on the truth; and a
    rename of that layer keeps it selected under its new name."""
    from napari_temdefect.widgets.corrections import CorrectionsWidget
    from napari_temdefect.widgets.quantify import QuantifyWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    viewer.add_labels(np.zeros((64, 64), np.int32), name="img truth")
    corr, quant = CorrectionsWidget(viewer), QuantifyWidget(viewer)
    qtbot.addWidget(corr)
    qtbot.addWidget(quant)
    assert corr.layer_combo.currentText() == "img truth"
    viewer.add_image(np.zeros((64, 64), np.float32), name="img probability")
    defects = viewer.add_labels(np.zeros((64, 64), np.int32), name="img defects")
    assert corr.layer_combo.currentText() == "img defects"
    assert quant.layer_combo.currentText() == "img defects"
    assert corr.layer() is defects

    defects.name = "img defects (checked)"
    for combo in (corr.layer_combo, quant.layer_combo):
        names = [combo.itemText(i) for i in range(combo.count())]
        assert "img defects" not in names and combo.currentText() == "img defects (checked)"
    assert corr.layer() is defects
    # another layer added later (not a defects layer) leaves the choice alone
    viewer.add_labels(np.zeros((64, 64), np.int32), name="notes")
    assert corr.layer_combo.currentText() == quant.layer_combo.currentText() == \
        "img defects (checked)"


def test_the_result_kept_beside_edited_labels_can_be_corrected(setup, qtbot):
    """Answering No to "replace edited?" puts the new result in '<image> defects (2)'; the
    panel works on it like on '<image> defects' (keys, re-threshold, training set): it used
    to find neither its image nor its probability map from that name."""
    from napari_temdefect.widgets._results import OUTPUT_KEY

    viewer, widget, layer = setup
    kept = viewer.add_labels(np.asarray(layer.data).copy(), name="img defects (2)",
                             metadata={OUTPUT_KEY: {"image": "img", "threshold": 0.5}})
    widget.layer_combo.setCurrentText("img defects (2)")
    assert widget.layer() is kept
    assert "D" in {str(k) for k in kept.keymap}  # the panel's keys are bound on it
    assert widget.rethreshold(0.3) is not None
    assert (kept.data > 0).sum() > (layer.data > 0).sum()
    widget.add_btn.click()
    ts = widget.session.training_set
    assert ts is not None and len(ts) == 1 and ts.names == ["img"]


def test_labels_kept_beside_a_newer_prediction_are_not_rethresholded_against_it(
        make_napari_viewer, qtbot, monkeypatch, tiny_model):
    """After "keep my edits", the new run's map replaces the probability layer; the kept
    labels rest on the old map, so re-thresholding them against the new one (or marking
    their 'edited' pixels from it) would be wrong: re-threshold says so, and the training
    entry takes them as plain labels."""
    from napari_temdefect.inference import predict
    from napari_temdefect.widgets import corrections as mod
    from napari_temdefect.widgets._results import prepare_labels, show_prediction

    shown = []
    monkeypatch.setattr(mod, "show_error", lambda exc: shown.append(str(exc)))
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).normal(0.5, 0.1, (64, 64)).astype(np.float32)
    img = viewer.add_image(image, name="img")
    result = predict(tiny_model, image, threshold=0.5, device="cpu")
    layer = show_prediction(viewer, img, result, "tiny", *prepare_labels(result),
                            ask_replace=lambda name: True)
    edited = np.asarray(layer.data).copy()
    edited[5:15, 5:15] = edited.max() + 1
    layer.data = edited
    newer = show_prediction(viewer, img, result, "tiny2", *prepare_labels(result, edited),
                            ask_replace=lambda name: False)
    assert newer.name == "img defects (2)" and viewer.layers["img defects"] is layer
    widget = mod.CorrectionsWidget(viewer)
    qtbot.addWidget(widget)
    widget.layer_combo.setCurrentText("img defects")
    assert widget.rethreshold(0.3) is None
    assert "predicted before the latest run" in shown[-1]
    np.testing.assert_array_equal(layer.data, edited)
    widget.add_btn.click()
    entry = widget.session.training_set[0]
    assert entry.edited is None and np.array_equal(entry.labels > 0, edited > 0)
    widget.layer_combo.setCurrentText("img defects (2)")  # the latest result re-thresholds
    assert widget.rethreshold(0.3) is not None
