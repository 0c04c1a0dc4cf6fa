"""Fine-tune widget on a real napari viewer with a tiny model (a few CPU steps)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _scene(seed=0, size=128):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), bool)
    for _ in range(10):
        cy, cx = rng.integers(8, size - 8, 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(9, 30)
    image = (np.where(mask, 0.3, 0.7) + rng.normal(0, 0.05, mask.shape)).astype(np.float32)
    return image, mask


@pytest.fixture
def setup(make_napari_viewer, qtbot, tiny_model):
    from napari_temdefect import corrections as core
    from napari_temdefect.inference import predict
    from napari_temdefect.training import TrainingSet
    from napari_temdefect.widgets._session import get_session
    from napari_temdefect.widgets.finetune import FinetuneWidget

    from napari_temdefect.widgets._results import prepare_labels, show_prediction

    viewer = make_napari_viewer()
    image, mask = _scene()
    img = viewer.add_image(image, name="img", scale=(2.0, 2.0), units=("nm", "nm"))
    result = predict(tiny_model, image, threshold=0.5, device="cpu")
    show_prediction(viewer, img, result, "tiny", *prepare_labels(result),
                    ask_replace=lambda name: pytest.fail(f"asked to replace {name}"))
    session = get_session(viewer)
    session.model, session.model_key = tiny_model, "tiny"
    session.predictions["img"] = result
    session.inference_settings.update(threshold=0.5, device="cpu")
    labels = core.instances_from_mask(mask).astype(np.uint16)
    # as the Corrections panel adds it: with the layer's calibration (2 nm/px)
    session.training_set = TrainingSet([core.to_training_entry(image, labels, name="img",
                                                               pixel_size_nm=2.0)])
    widget = FinetuneWidget(viewer)
    qtbot.addWidget(widget)
    widget.batch.setValue(2)
    widget.patch.setCurrentText("128")
    return viewer, widget, session


def test_finetune_runs_in_worker_plots_and_updates_layers(setup, qtbot):
    viewer, widget, session = setup
    model = session.model
    before = model.copy_weights()
    prob_before = viewer.layers["img probability"].data.copy()
    assert "tiny" in widget.model_label.text() and "1 image" in widget.set_label.text()
    widget.budget_steps.setValue(6)

    worker = widget.start()
    assert worker is not None and widget.stop_btn.isEnabled() and not widget.train_btn.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.result is not None, timeout=10_000)
    assert widget.result.steps == 6 and not widget.result.stopped
    assert widget.plot.n_points >= 6 and len(widget.plot.val_steps) >= 2
    changed = any(not np.array_equal(v, model.module.state_dict()[k]) for k, v in before.items())
    assert changed and model.history and model.history[-1]["kind"] == "finetune"
    assert model.parent == "tiny"
    # inference re-ran on the current image and the layers updated in place
    assert widget.inference_worker is not None
    with qtbot.waitSignal(widget.inference_worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: session.predictions["img"] is not None
                    and not np.array_equal(viewer.layers["img probability"].data, prob_before),
                    timeout=10_000)
    assert sorted(ly.name for ly in viewer.layers) == [
        "img", "img confidence", "img defects", "img probability"]  # updated, not piled up
    assert widget.train_btn.isEnabled() and widget.revert_btn.isEnabled()
    # without the Inference widget the layers still carry the image's geometry and the
    # threshold the mask was cut at (the Quantify panel reads it)
    for suffix in (" probability", " confidence", " defects"):
        layer = viewer.layers["img" + suffix]
        assert tuple(layer.units) == tuple(viewer.layers["img"].units)
        assert tuple(layer.scale) == (2.0, 2.0)
        assert layer.metadata["temdefect"]["threshold"] == 0.5


@pytest.mark.parametrize("replace", [True, False])
def test_rerun_without_inference_widget_asks_before_replacing_edits(setup, qtbot, monkeypatch,
                                                                    replace,
                                                                    finetune_and_repredict):
    viewer, widget, session = setup
    layer = viewer.layers["img defects"]
    edited = np.asarray(layer.data).copy()
    edited[:20, :20] = 77  # the user paints a new object
    layer.data = edited
    asked = []
    monkeypatch.setattr(widget, "ask_replace_edited",
                        lambda name: asked.append(name) or replace)
    widget.budget_steps.setValue(2)
    finetune_and_repredict(widget)
    qtbot.waitUntil(lambda: bool(asked), timeout=10_000)
    assert asked == ["img defects"]
    if replace:  # replaced in place, one undo step brings the edit back
        qtbot.waitUntil(lambda: 77 not in np.asarray(layer.data), timeout=10_000)
        assert "img defects (2)" not in viewer.layers
        layer.undo()
        assert np.array_equal(layer.data, edited)
    else:        # the user's labels stay untouched, the new result goes next to them
        qtbot.waitUntil(lambda: "img defects (2)" in viewer.layers, timeout=10_000)
        assert np.array_equal(layer.data, edited)
        new = viewer.layers["img defects (2)"]
        assert new.metadata["temdefect"]["model"] == session.model.name
        assert new.metadata["temdefect"]["threshold"] == 0.5
        assert tuple(new.units) == tuple(viewer.layers["img"].units)
        assert tuple(new.scale) == (2.0, 2.0)


def test_stop_keeps_best_weights_and_revert_restores_exactly(setup, qtbot):
    viewer, widget, session = setup
    model = session.model
    before = model.copy_weights()
    n_hist = len(model.history)
    widget.budget_steps.setValue(100_000)
    worker = widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.steps) >= 2, timeout=120_000)
    widget.stop_btn.click()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.result is not None, timeout=10_000)
    assert widget.result.stopped and widget.result.steps < 100_000
    if widget.inference_worker is not None:
        with qtbot.waitSignal(widget.inference_worker.finished, timeout=60_000):
            pass

    assert widget.revert()
    after = model.module.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].cpu().numpy()) for k in before)
    assert len(model.history) == n_hist and model.name == "tiny"
    assert not widget.revert_btn.isEnabled()
    if widget.inference_worker is not None:
        with qtbot.waitSignal(widget.inference_worker.finished, timeout=60_000):
            pass


def test_a_failed_first_round_leaves_the_model_untuned(setup, qtbot, monkeypatch):
    from napari_temdefect.widgets import finetune as mod

    viewer, widget, session = setup
    model = session.model
    parent, before = model.parent, model.copy_weights()
    shown = []
    monkeypatch.setattr(mod, "show_error", lambda exc: shown.append(str(exc)))

    import napari_temdefect.training as training

    real = training.finetune

    def failing(model, ts, config, progress=None, cancel=None):
        def fail(event):
            if event.get("event") == "step":
                raise RuntimeError("disk full")
        return real(model, ts, config, progress=fail, cancel=cancel)

    monkeypatch.setattr(training, "finetune", failing)
    worker = widget.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert shown and "disk full" in shown[-1]
    assert "unchanged" in widget.status.text()
    assert "fine-tuned" not in widget.model_label.text()
    assert not widget.revert_btn.isEnabled() and model.parent == parent
    after = model.module.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].cpu().numpy()) for k in before)


def test_save_model_writes_history_and_refuses_overwrite(setup, qtbot, tmp_path, monkeypatch):
    from napari_temdefect.models import load_model

    viewer, widget, session = setup
    widget.budget_steps.setValue(3)
    worker = widget.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.result is not None, timeout=10_000)
    session.inference_settings["threshold"] = 0.35  # the user's choice in the Inference panel
    path = widget.save_model(tmp_path / "tuned.safetensors")
    assert path is not None and path.exists()
    loaded = load_model(path, device="cpu")
    assert loaded.parent == "tiny" and loaded.history[-1]["kind"] == "finetune"
    assert loaded.threshold == 0.35 and "operating threshold 0.35" in widget.status.text()
    assert loaded.history[-1]["steps"] == 3
    content = path.read_bytes()
    asked = []
    monkeypatch.setattr(widget, "_confirm", lambda text: asked.append(text) or False)
    assert widget.save_model(path) is None
    assert asked and path.read_bytes() == content
    dotted = widget.save_model(tmp_path / "tuned_t0.35")  # a name typed without the suffix
    assert dotted == tmp_path / "tuned_t0.35.safetensors" and dotted.exists()
    if widget.inference_worker is not None:
        with qtbot.waitSignal(widget.inference_worker.finished, timeout=60_000):
            pass


def test_save_records_the_panels_threshold_and_revert_forgets_the_saved_file(
        setup, qtbot, tmp_path):
    """Save uses the Inference panel's Threshold box as it is now (the user set 0.3 without
    re-running), and a Revert after the save no longer presents the reverted weights as the
    saved file."""
    from napari_temdefect.models import load_model

    viewer, widget, session = setup
    model = session.model
    source, key, threshold = model.source, session.model_key, model.threshold
    assert model.spec.pixel_size_nm is None
    widget.budget_steps.setValue(3)
    worker = widget.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.result is not None, timeout=10_000)
    if widget.inference_worker is not None:
        with qtbot.waitSignal(widget.inference_worker.finished, timeout=60_000):
            pass
    session.panel_threshold = 0.3  # what the Inference panel's box now shows
    # the model knew no scale; it learned that of the corrected image (2 nm/px)
    assert model.spec.pixel_size_nm == 2.0
    path = widget.save_model(tmp_path / "tuned.safetensors")
    saved = load_model(path, device="cpu")
    assert saved.threshold == 0.3 and saved.spec.pixel_size_nm == 2.0
    assert session.model_key == str(path) and model.source == str(path)
    assert widget.revert()
    assert session.model_key == key and model.source == source
    assert model.spec.pixel_size_nm is None
    assert model.threshold == threshold and model.name == "tiny"
    if widget.inference_worker is not None:
        with qtbot.waitSignal(widget.inference_worker.finished, timeout=60_000):
            pass


def test_bad_input_is_a_message_and_nothing_starts(make_napari_viewer, qtbot, monkeypatch,
                                                   tiny_model):
    from napari_temdefect.widgets import finetune as mod
    from napari_temdefect.widgets._session import get_session

    shown = []
    monkeypatch.setattr(mod, "show_error", lambda exc: shown.append(str(exc)))
    viewer = make_napari_viewer()
    widget = mod.FinetuneWidget(viewer)
    qtbot.addWidget(widget)
    assert "Inference" in widget.model_label.text()
    assert widget.start() is None and "No model" in shown[-1]
    get_session(viewer).model = tiny_model
    assert widget.start() is None and "empty" in shown[-1]
    widget.lr.setCurrentText("fast")
    from napari_temdefect.training import TrainingSet
    image, mask = _scene()
    get_session(viewer).training_set = TrainingSet()
    get_session(viewer).training_set.add(image, mask.astype(np.uint8), name="a")
    assert widget.start() is None and "not a number" in shown[-1]
    assert widget.revert() is False and "nothing to revert" in shown[-1]
    assert widget.worker is None


@pytest.mark.parametrize("widget", [True, False], ids=["widget", "console"])
def test_model_loads_after_a_shown_viewer(tmp_path, widget):
    """On software OpenGL (Mesa llvmpipe), importing triton after napari's canvas segfaults;
    the widgets package prevents that, and so does the model builder when no widget was ever
    imported (a model built from napari's console or a script). Run in a fresh process: the
    crash kills the process."""
    import os
    import subprocess
    import sys

    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a display (pytest-xvfb provides one)")
    script = tmp_path / "late_torch.py"
    script.write_text(
        "import numpy as np, napari\n"
        "v = napari.Viewer(show=True)\n"
        "v.add_image(np.zeros((64, 64)))\n"
        "from qtpy.QtWidgets import QApplication\n"
        "QApplication.processEvents()\n"
        + ("from napari_temdefect.widgets.finetune import FinetuneWidget\n"
           "w = FinetuneWidget(v)\n" if widget else "")
        + "from napari_temdefect.models import create_model\n"
        "create_model(arch='unet', encoder='resnet18', device='cpu',\n"
        "             options={'encoder_depth': 3, 'decoder_channels': (32, 16, 8)})\n"
        "print('model ok')\n"
        "v.close()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "model ok" in proc.stdout, proc.stderr[-2000:]


def test_loop_with_the_inference_widget(make_napari_viewer, qtbot, tiny_checkpoint, monkeypatch,
                                        finetune_and_repredict):
    """predict (Inference widget) -> correct -> add to training set -> fine-tune -> the
    Inference widget re-predicts the same image and its layers update in place."""
    from napari_temdefect.widgets._session import get_session
    from napari_temdefect.widgets.corrections import CorrectionsWidget
    from napari_temdefect.widgets.finetune import FinetuneWidget
    from napari_temdefect.widgets.inference import InferenceWidget

    viewer = make_napari_viewer()
    image, mask = _scene(seed=3)
    img_layer = viewer.add_image(image, name="img")
    inf, corr, fine = InferenceWidget(viewer), CorrectionsWidget(viewer), FinetuneWidget(viewer)
    for w, title in ((inf, "Inference"), (corr, "Corrections"), (fine, "Fine-tune")):
        viewer.window.add_dock_widget(w, name=title)
    inf.set_model_path(tiny_checkpoint)
    worker = inf.run_inference(img_layer)
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    session = get_session(viewer)
    qtbot.waitUntil(lambda: "img defects" in viewer.layers and session.model is not None,
                    timeout=10_000)
    assert "tiny" in fine.model_label.text()

    layer = viewer.layers["img defects"]
    corr._refresh_layers()
    corr.layer_combo.setCurrentText("img defects")
    from napari_temdefect import corrections as core
    layer.data = core.instances_from_mask(mask).astype(layer.data.dtype)  # the user's fix
    assert corr.add_to_training_set() is not None
    assert "1 image" in fine.set_label.text()

    asked = []
    monkeypatch.setattr(inf, "ask_replace_edited", lambda name: asked.append(name) or True)
    prob_before = viewer.layers["img probability"].data.copy()
    fine.budget_steps.setValue(4)
    fine.batch.setValue(2)
    fine.patch.setCurrentText("128")
    finetune_and_repredict(fine)
    qtbot.waitUntil(lambda: not np.array_equal(viewer.layers["img probability"].data,
                                               prob_before), timeout=10_000)
    assert asked == ["img defects"]           # the edited labels were not replaced silently
    assert sorted(ly.name for ly in viewer.layers) == [
        "img", "img confidence", "img defects", "img probability"]
    assert session.model.history[-1]["kind"] == "finetune"


def test_train_and_revert_wait_while_the_model_predicts(setup, qtbot, monkeypatch):
    """The panel's own re-prediction (no Inference panel docked) marks the model busy, as the
    Inference panel does: a second round would train it on another thread, and Revert would
    swap its weights in the middle of the tiles."""
    from napari_temdefect.widgets import finetune as finetune_widget

    viewer, widget, session = setup
    errors = []
    monkeypatch.setattr(finetune_widget, "show_error", errors.append)
    widget._before = (session.model, len(session.model.history), None, "tiny", None, "tiny",
                      dict(session.model.metadata))
    session.weights_before_finetune = session.model.copy_weights()  # as after a round
    widget.refresh()
    assert widget.revert_btn.isEnabled() and widget.train_btn.isEnabled()
    worker = widget._predict_in_worker("img")
    assert session.predicting  # set before the thread runs; cleared on the GUI thread
    assert not widget.train_btn.isEnabled() and not widget.revert_btn.isEnabled()
    assert widget.start() is None and "Inference is running" in str(errors[-1])
    assert widget.revert() is not True and "Inference is running" in str(errors[-1])
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert not session.predicting
    assert widget.train_btn.isEnabled() and widget.revert_btn.isEnabled()


def test_switching_models_lets_the_old_tuned_model_go(setup, tiny_model,
                                                      finetune_and_repredict):
    import copy

    viewer, widget, session = setup
    widget.budget_steps.setValue(2)
    finetune_and_repredict(widget)
    assert widget._before is not None and widget.revert_btn.isEnabled()
    other = copy.deepcopy(tiny_model)
    session.model, session.weights_before_finetune = other, None  # as the Inference panel does
    widget.signals.model_changed.emit(session)
    assert widget._before is None and not widget.revert_btn.isEnabled()  # no reference kept
