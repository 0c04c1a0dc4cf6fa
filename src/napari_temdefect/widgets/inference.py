"""Inference dock widget: run a model on an image layer and show the result as layers.

Layers (all with the image's scale and translate):

* ``<image> probability`` — defect probability (magma, additive, half opacity); with several
  classes, the highest class probability;
* ``<image> confidence`` — confidence in [0, 1] (hidden at first; see docs/inference.md);
* ``<image> defects`` — editable Labels, one id per connected object (per blob when the model
  counts touching blobs apart).

A second run updates these layers in place. The defects layer is replaced as one undoable step
(Ctrl-Z brings the previous labels back); if it was edited since the last run, the widget first
asks whether to replace the edits or to write the new result to ``<image> defects (n)``.

The loaded model, the last result per image and the settings live in the viewer's session
(:mod:`._session`), so the Fine-tune widget retrains the same model object and calls
:meth:`InferenceWidget.run_inference` to refresh the layers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
    QMessageBox, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from napari.utils.notifications import show_warning

from ..errors import TemDefectError
from ..inference.scale import scale_mismatch
from ._common import layer_kind, layer_pixel_size, show_error
from ._results import OUTPUT_KEY, ask_replace_edited, prepare_labels, show_prediction
from ._session import get_session, get_signals, set_predicting

FROM_FILE = "From file…"


def layer_image(layer) -> np.ndarray:
    """The 2D array of an image layer (full resolution of a multiscale one), validated."""
    from ..preprocess import as_2d_image

    if layer is None:
        raise TemDefectError("No image layer is selected; open a micrograph first.")
    if layer_kind(layer) != "image":
        raise TemDefectError(f"{layer.name!r} is not an image layer; choose the micrograph.")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if np.ndim(data) == 3 and not getattr(layer, "rgb", False):
        raise TemDefectError(
            f"{layer.name!r} is a stack of {np.shape(data)[0]} frames; "
            "pick a single frame (Layer > Split stack) and run on that."
        )
    return as_2d_image(np.asarray(data), name=f"layer {layer.name!r}")


class _Bridge(QObject):
    """Carries progress from the worker thread to the GUI thread (queued connection)."""

    progress = Signal(int, int)


class InferenceWidget(QWidget):
    """Run a model on a micrograph: probability, confidence and editable defect labels."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        from .._llvm import avoid_llvm_clash
        from ..device import available_devices

        avoid_llvm_clash()  # before the first model load next to napari's GL
        from ..models import default_model_name, list_models

        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.signals = get_signals(napari_viewer)
        self.worker = None
        self._cancel = threading.Event()
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)

        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The micrograph to analyse (a 2D image layer).")
        form.addRow("Image", self.image_combo)

        self.model_combo = QComboBox()
        for info in list_models():
            self.model_combo.addItem(info.name, info.name)
            self.model_combo.setItemData(self.model_combo.count() - 1,
                                         info.description or info.name, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.addItem(FROM_FILE, None)
        default = default_model_name()
        if default is not None:
            self.model_combo.setCurrentIndex(self.model_combo.findData(default))
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.setToolTip("A bundled model, or a .safetensors checkpoint from a file.")
        form.addRow("Model", self.model_combo)

        self.device_combo = QComboBox()
        usable = set(available_devices())
        for name in ("auto", "cpu", "cuda", "mps"):
            self.device_combo.addItem(name)
            if name != "auto" and name not in usable:
                item = self.device_combo.model().item(self.device_combo.count() - 1)
                item.setEnabled(False)
                item.setToolTip(f"{name} is not available on this machine")
        self.device_combo.setToolTip("auto = CUDA GPU, then Apple MPS, then CPU.")
        form.addRow("Device", self.device_combo)

        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Largest tile side (auto: 1536 px on CPU, 1024 px on GPU; "
                                  "rounded up to the multiple the network needs). Smaller "
                                  "tiles use less memory.")
        form.addRow("Tile size", self.tile_spin)

        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(-1, 2048)
        self.overlap_spin.setSingleStep(16)
        self.overlap_spin.setValue(-1)
        self.overlap_spin.setSpecialValueText("auto")
        self.overlap_spin.setSuffix(" px")
        self.overlap_spin.setToolTip("Minimum overlap between tiles; tiles are blended with a "
                                     "cosine ramp across it (auto: 64 px CPU, 128 px GPU).")
        form.addRow("Overlap", self.overlap_spin)

        self.tta_check = QCheckBox("flips and rotations (8×, slower)")
        self.tta_check.setToolTip("Test-time augmentation: average the 8 flips/rotations; the "
                                  "confidence also reflects how much they agree.")
        form.addRow("TTA", self.tta_check)

        self.invert_check = QCheckBox("invert contrast")
        self.invert_check.setToolTip(
            "For defects with the opposite contrast to the model's training images, e.g. "
            "over-focus bubbles (dark, bright fringe) with the bundled bubble model, which "
            "learned under-focus ones (bright, dark fringe).")
        form.addRow("Contrast", self.invert_check)

        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setToolTip(
            "Probability above which a pixel becomes a defect. Choosing a model sets it to the "
            "model's operating threshold (0.5 unless its checkpoint records one).")
        form.addRow("Threshold", self.threshold_spin)
        self.threshold_spin.valueChanged.connect(
            lambda v: setattr(self.session, "panel_threshold", round(float(v), 4)))
        self.model_combo.currentIndexChanged.connect(self._apply_model_threshold)
        self._apply_model_threshold()

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(lambda: self.run_inference())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Choose an image and press Run.")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

        self.signals.model_changed.connect(self._sync_model_choice)
        for event in ("inserted", "removed", "moved", "changed"):
            getattr(napari_viewer.layers.events, event).connect(self._refresh_images)
        self._refresh_images()

    # ------------------------------------------------------------------ inputs
    def _image_layers(self):
        return [layer for layer in self.viewer.layers
                if layer_kind(layer) == "image" and OUTPUT_KEY not in layer.metadata]

    def _refresh_images(self, event=None):
        layers = self._image_layers()
        for layer in layers:  # follow renames (connecting twice is a no-op)
            layer.events.name.connect(self._refresh_images)
        current = self.image_combo.currentText()
        names = [layer.name for layer in layers]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        active = self.viewer.layers.selection.active
        if current in names:
            self.image_combo.setCurrentText(current)
        elif active is not None and active.name in names:
            self.image_combo.setCurrentText(active.name)
        self.image_combo.blockSignals(False)

    def _apply_model_threshold(self, index=None):
        """Set the Threshold box to the chosen model's operating threshold."""
        from ..models import model_threshold

        key = self.model_combo.currentData()
        if key is None:
            return
        try:
            value = model_threshold(key)
        except TemDefectError:  # an unreadable file is reported when the user presses Run
            return
        self.threshold_spin.setValue(value)

    def _on_model_activated(self, index):
        if self.model_combo.itemData(index) is not None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a model checkpoint", "",
                                              "Checkpoints (*.safetensors *.pt *.pth)")
        if path:
            self.set_model_path(path)
        else:
            self.model_combo.setCurrentIndex(0 if self.model_combo.count() > 1 else index)

    def select_model(self, name_or_path) -> None:
        """Preselect a bundled model by name, or a checkpoint file by path."""
        index = self.model_combo.findData(str(name_or_path))
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        elif Path(str(name_or_path)).expanduser().exists():
            self.set_model_path(name_or_path)
        else:
            show_error(TemDefectError(f"Unknown model {str(name_or_path)!r}; pick a bundled "
                                      "model or a checkpoint file (From file…)."))

    def set_model_path(self, path) -> None:
        """Choose a checkpoint file as the model (what "From file…" does)."""
        path = str(Path(path).expanduser())
        index = self.model_combo.findData(path)
        if index < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1, Path(path).name, path)
            index = self.model_combo.count() - 2
            self.model_combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentIndex(index)

    def _sync_model_choice(self, session=None):
        """Show the session's model in the Model box (e.g. after Fine-tune saved it to a file),
        so the next Run uses that same model object instead of reloading the old choice."""
        key = self.session.model_key
        if key is None or self.session.model is None:
            return
        index = self.model_combo.findData(key)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        else:
            self.set_model_path(key)
            self.session.model_key = self.model_combo.currentData()

    def ask_replace_model(self, name: str) -> bool:
        """True to drop the fine-tuned model in memory for another one."""
        answer = QMessageBox.question(
            self, "napari-temdefect",
            f"The model in memory, {name!r}, was fine-tuned in this session. Load "
            f"{self.model_combo.currentText()!r} instead? Fine-tuning you have not saved "
            "(Fine-tune > Save model) will be lost.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def settings(self) -> dict:
        """The predict() keyword arguments chosen in the widget."""
        return {
            "tile": self.tile_spin.value() or None,
            "overlap": None if self.overlap_spin.value() < 0 else self.overlap_spin.value(),
            "tta": self.tta_check.isChecked(),
            "invert": self.invert_check.isChecked(),
            "threshold": round(self.threshold_spin.value(), 4),
            "device": self.device_combo.currentText(),
        }

    # ------------------------------------------------------------------ running
    def run_inference(self, image_layer=None):
        """Start inference on ``image_layer`` (default: the chosen one); returns the worker,
        or None when the input is unusable (the reason is shown as a notification)."""
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            show_error(TemDefectError("Inference is already running; wait or press Cancel."))
            return None
        if self.session.training:
            show_error(TemDefectError("The model is being fine-tuned; wait for it to finish or "
                                      "press Stop in the Fine-tune panel."))
            return None
        try:
            if image_layer is None:
                name = self.image_combo.currentText()
                if not name or name not in self.viewer.layers:
                    raise TemDefectError("No image layer to run on; open a micrograph first.")
                image_layer = self.viewer.layers[name]
            image = layer_image(image_layer)
            if getattr(image_layer, "rgb", False) and np.ndim(image_layer.data) == 3:
                rgb = np.asarray(image_layer.data)[..., :3]
                if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                        and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    show_warning(f"{image_layer.name!r} is a colour image; running on its "
                                 "luminance (grayscale).")
            key = self.model_combo.currentData()
            if key is None:
                raise TemDefectError("No model is chosen; pick a bundled model or a checkpoint "
                                     "file (From file…).")
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return None

        settings = self.settings()
        session = self.session
        model = session.model if session.model is not None and session.model_key == key else None
        tuned = session.model is not None and session.weights_before_finetune is not None
        if model is None and tuned and not self.ask_replace_model(session.model.name):
            self._sync_model_choice()
            return None
        name = image_layer.name
        defects = self.viewer.layers[f"{name} defects"] \
            if f"{name} defects" in self.viewer.layers else None
        defects_data = None if defects is None else defects.data
        self._cancel.clear()
        bridge = self._bridge

        def work():
            from ..models import load_model
            from ..inference import predict

            used = model if model is not None else load_model(key, device=settings["device"])
            result = predict(used, image, progress=bridge.progress.emit, cancel=self._cancel,
                             **settings)
            return (used, result,
                    *prepare_labels(result, defects_data, used.split_touching))

        self.worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        self.worker.returned.connect(
            lambda out: self._on_done(image_layer, key, settings, *out))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        set_predicting(self.viewer, True)
        self.progress_bar.setRange(0, 0)  # busy until the first tile batch reports
        self.status.setText(f"Running {self.model_combo.currentText()!s} on {name!r}…")
        self.worker.start()
        return self.worker

    def cancel(self):
        """Stop the running inference within one tile batch."""
        self._cancel.set()
        self.status.setText("Cancelling…")

    def _on_progress(self, done, total):
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)

    def _on_error(self, exc):
        show_error(exc)
        self.status.setText(str(exc) if isinstance(exc, TemDefectError) else "Inference failed.")

    def _on_finished(self):
        self.worker = None
        set_predicting(self.viewer, False)
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress_bar.maximum() == 0 or self._cancel.is_set():
            self.progress_bar.setRange(0, 1)  # a cancelled run leaves no part-filled bar
            self.progress_bar.setValue(0)

    # ------------------------------------------------------------------ results
    def ask_replace_edited(self, layer_name: str) -> bool:
        """True to replace a defects layer the user has edited (one Ctrl-Z brings it back)."""
        return ask_replace_edited(self, layer_name)

    def _on_done(self, image_layer, key, settings, model, result, labels, new_print, old_print):
        name = image_layer.name
        session = self.session
        if session.model is not model:
            session.model, session.model_key = model, key
            session.weights_before_finetune = None  # Revert state of the previous model
            self.signals.model_changed.emit(session)
        if name not in self.viewer.layers:  # the image was closed while it was predicted
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.status.setText(f"{name!r} was closed during the run; its prediction was "
                                "dropped.")
            return
        session.predictions[name] = result
        session.inference_settings = dict(settings)
        layer = show_prediction(self.viewer, image_layer, result, model.name, labels,
                                new_print, old_print, self.ask_replace_edited,
                                split_touching=model.split_touching)
        n = int(labels.max())
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        text = f"{result.summary()}. {n} defect object(s) in {layer.name!r}."
        mismatch = scale_mismatch(model.spec.pixel_size_nm, layer_pixel_size(image_layer))
        if mismatch:  # a toast fades; the panel's status line keeps saying it
            show_warning(f"{name!r}: {mismatch}.")
            text += f" Magnification: {mismatch[0].upper()}{mismatch[1:]}."
        self.status.setText(text)
