"""Fine-tune dock widget: retrain the session's model on the training set, with a live plot.

Training runs in a napari ``thread_worker`` (never on the GUI thread) through
:func:`napari_temdefect.training.finetune`; its progress events travel to the main thread over
a Qt signal and feed the loss / validation plot. **Stop** ends at the next step and keeps the
best weights. When training ends, inference re-runs on the current image (through the
Inference widget when it is docked, else with the same core call and layer names).
**Revert** restores the weights from before the first fine-tuning round; **Save model…**
writes a checkpoint with the fine-tune history and the parent model.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
    QMessageBox, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from ..constants import as_threshold
from ..errors import TemDefectError
from ._common import show_error
from ._results import ask_replace_edited, prepare_labels, show_prediction
from .inference import layer_image
from .._llvm import avoid_llvm_clash
from ._session import get_session, get_signals, set_predicting

DEPTHS = ("deep", "decoder", "all")
DEPTH_TIPS = {
    "deep": "decoder + deepest encoder stages (recommended)",
    "decoder": "decoder and head only (fastest, smallest change)",
    "all": "every layer (needs more data)",
}


class _Relay(QObject):
    """Carries progress events from the training thread to the GUI thread (queued signal)."""

    event = Signal(object)


class LossPlot(QWidget):
    """Training loss per step, validation loss and validation F1 per evaluation."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6), dpi=90, facecolor="#262930")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.ax = self.figure.add_subplot(111)
        self.ax_f1 = self.ax.twinx()
        for ax in (self.ax, self.ax_f1):
            ax.set_facecolor("#262930")
            ax.tick_params(colors="#d0d0d0", labelsize=7)
            for s in ax.spines.values():
                s.set_color("#808080")
        self.ax.set_xlabel("step", color="#d0d0d0", fontsize=8)
        self.ax.set_ylabel("loss", color="#d0d0d0", fontsize=8)
        self.ax_f1.set_ylabel("validation F1", color="#f0c05a", fontsize=8)
        self.ax_f1.set_ylim(0, 1)
        (self.train_line,) = self.ax.plot([], [], color="#5aa0f0", lw=0.8, alpha=0.8,
                                          label="train loss")
        (self.val_line,) = self.ax.plot([], [], "o-", color="#f06a5a", ms=3, lw=1.2,
                                        label="val loss")
        (self.f1_line,) = self.ax_f1.plot([], [], "s--", color="#f0c05a", ms=3, lw=1,
                                          label="val F1")
        self.best_marker = self.ax.axvline(0, color="#7ad07a", lw=1, ls=":", visible=False)
        (self.smooth_line,) = self.ax.plot([], [], color="#5aa0f0", lw=1.6,
                                           label="train loss (smoothed)")
        self.train_line.set_alpha(0.35)
        handles = [self.smooth_line, self.val_line, self.f1_line]
        self.figure.legend(handles=handles, loc="upper center", ncol=3, fontsize=7,
                           frameon=False, labelcolor="#d0d0d0")
        self.figure.tight_layout(rect=(0, 0, 1, 0.9))
        self.clear()

    def clear(self):
        self.steps, self.train = [], []
        self.val_steps, self.val, self.f1 = [], [], []
        self.best_marker.set_visible(False)
        self._redraw()

    def add(self, event: dict):
        if event.get("event") == "step" and event.get("train_loss") is not None:
            self.steps.append(event["step"])
            self.train.append(event["train_loss"])
        elif event.get("event") == "eval":
            if event.get("val_loss") is not None:
                self.val_steps.append(event["step"])
                self.val.append(event["val_loss"])
                self.f1.append(event.get("val_f1") if event.get("val_f1") is not None else np.nan)
            if event.get("best_step") is not None and self.val_steps:
                self.best_marker.set_xdata([event["best_step"]] * 2)
                self.best_marker.set_visible(True)
        self._redraw()

    def _redraw(self):
        self.train_line.set_data(self.steps, self.train)
        self.smooth_line.set_data(self.steps, _ema(self.train))
        self.val_line.set_data(self.val_steps, self.val)
        self.f1_line.set_data(self.val_steps, self.f1)
        ys = [v for v in self.train + self.val if v is not None and np.isfinite(v)]
        xs = self.steps + self.val_steps
        self.ax.set_xlim(0, max(xs + [1]))
        if ys:
            lo, hi = min(ys), max(ys)
            pad = 0.05 * (hi - lo or 1.0)
            self.ax.set_ylim(lo - pad, hi + pad)
        self.canvas.draw_idle()

    @property
    def n_points(self) -> int:
        return len(self.steps) + len(self.val_steps)


def _ema(values, alpha: float = 0.15) -> list:
    """Exponential moving average (the per-step loss of small batches is noisy)."""
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


class FinetuneWidget(QWidget):
    """Retrain the deep layers of the loaded model on the corrected images."""

    def __init__(self, napari_viewer):
        super().__init__()
        avoid_llvm_clash()  # before anything imports torch next to napari's GL
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.signals = get_signals(napari_viewer)
        self.worker = None
        self.result = None
        self.inference_worker = None
        self._cancel = threading.Event()
        self._relay = _Relay()
        self._relay.event.connect(self._on_progress)
        #: what Revert goes back to, besides the weights: (model, history length, parent, name,
        #: source, the session's model key, metadata, training pixel size)
        self._before: tuple | None = None
        self._first_round = False

        layout = QVBoxLayout(self)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.set_label = QLabel()
        self.set_label.setWordWrap(True)
        layout.addWidget(self.model_label)
        layout.addWidget(self.set_label)

        form = QFormLayout()
        self.depth = QComboBox()
        for d in DEPTHS:
            self.depth.addItem(d)
            self.depth.setItemData(self.depth.count() - 1, DEPTH_TIPS[d], 3)  # ToolTipRole
        self.depth.setToolTip("Which layers train. " + "; ".join(f"{k}: {v}" for k, v in DEPTH_TIPS.items()))
        form.addRow("Layers to train:", self.depth)
        row = QHBoxLayout()
        self.budget_kind = QComboBox()
        self.budget_kind.addItems(["steps", "minutes"])
        self.budget_steps = QSpinBox()
        self.budget_steps.setRange(1, 100_000)
        self.budget_steps.setValue(200)
        self.budget_minutes = QDoubleSpinBox()
        self.budget_minutes.setRange(0.1, 600)
        self.budget_minutes.setValue(5.0)
        self.budget_minutes.setSingleStep(1.0)
        self.budget_minutes.setVisible(False)
        row.addWidget(self.budget_steps)
        row.addWidget(self.budget_minutes)
        row.addWidget(self.budget_kind)
        form.addRow("Budget:", row)
        self.lr = QComboBox()
        self.lr.setEditable(True)
        self.lr.addItems(["1e-4", "3e-4", "1e-3", "3e-3"])
        self.lr.setCurrentText("1e-3")
        form.addRow("Learning rate:", self.lr)
        row = QHBoxLayout()
        self.l2 = QComboBox()
        self.l2.setEditable(True)
        self.l2.addItems(["0", "1e-4", "3e-4", "1e-3"])
        self.l2.setCurrentText("1e-4")
        self.l2.setToolTip("L2 penalty on the weights (the seed paper used 1e-4 to 1e-3).")
        self.l2_sp = QCheckBox("L2-SP")
        self.l2_sp.setToolTip("Pull toward the starting weights instead of toward zero.")
        row.addWidget(self.l2)
        row.addWidget(self.l2_sp)
        form.addRow("L2 strength:", row)
        row = QHBoxLayout()
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(8)
        self.patch = QComboBox()
        self.patch.addItems(["128", "256", "512"])
        self.patch.setCurrentText("256")
        row.addWidget(self.batch)
        row.addWidget(QLabel("patch"))
        row.addWidget(self.patch)
        form.addRow("Batch:", row)
        self.monitor = QComboBox()
        self.monitor.addItem("validation loss", "val_loss")
        self.monitor.addItem("validation F1", "val_f1")
        self.monitor.setToolTip("Which validation score picks the weights that are kept.")
        form.addRow("Keep best by:", self.monitor)
        layout.addLayout(form)

        row = QHBoxLayout()
        self.train_btn = QPushButton("Fine-tune")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.setToolTip("End at the next step and keep the best weights so far.")
        row.addWidget(self.train_btn)
        row.addWidget(self.stop_btn)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        layout.addWidget(self.progress)
        self.plot = LossPlot(self)
        layout.addWidget(self.plot)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        row = QHBoxLayout()
        self.save_btn = QPushButton("Save model…")
        self.revert_btn = QPushButton("Revert")
        self.revert_btn.setToolTip("Restore the weights the model had before fine-tuning.")
        row.addWidget(self.save_btn)
        row.addWidget(self.revert_btn)
        layout.addLayout(row)
        layout.addStretch()

        self.budget_kind.currentTextChanged.connect(self._on_budget_kind)
        self.train_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(self.stop)
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.revert_btn.clicked.connect(lambda: self.revert())
        self.signals.model_changed.connect(self.refresh)
        self.signals.training_set_changed.connect(self.refresh)
        self.signals.predicting_changed.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ state display
    def _on_budget_kind(self, kind):
        self.budget_steps.setVisible(kind == "steps")
        self.budget_minutes.setVisible(kind == "minutes")

    def refresh(self, *_):
        model = self.session.model
        if self._before is not None and self._before[0] is not model \
                and self.session.weights_before_finetune is None:
            # another model is loaded and the old one's revert state is gone: let the old
            # model (and its memory, on a GPU) go
            self._before = None
        if model is None:
            self.model_label.setText("<b>Model:</b> none loaded. Run the Inference widget first "
                                     "(it loads the model this panel retrains).")
        else:
            tuned = " (fine-tuned in this session)" if self._is_tuned(model) else ""
            self.model_label.setText(f"<b>Model:</b> {model.name}{tuned}")
        ts = self.session.training_set
        n = 0 if ts is None else len(ts)
        if n == 0:
            self.set_label.setText("<b>Training set:</b> empty. In Corrections, fix the "
                                   "prediction and press 'Add to training set'.")
        else:
            names = ", ".join(ts.names[:4]) + (" …" if n > 4 else "")
            self.set_label.setText(f"<b>Training set:</b> {n} image(s): {names}")
        busy = self.worker is not None
        predicting = self.session.predicting  # the model is in use on another thread
        self.train_btn.setEnabled(not busy and not predicting)
        self.stop_btn.setEnabled(busy)
        self.save_btn.setEnabled(not busy and model is not None)
        self.revert_btn.setEnabled(not busy and not predicting and self._is_tuned(model))

    def _is_tuned(self, model) -> bool:
        return (model is not None and self._before is not None and self._before[0] is model
                and self.session.weights_before_finetune is not None)

    def config(self):
        from ..training import TrainConfig

        def number(box, what):
            try:
                return float(box.currentText())
            except ValueError:
                raise TemDefectError(f"The {what} {box.currentText()!r} is not a number; "
                                     "type e.g. 1e-3.") from None

        steps = self.budget_steps.value() if self.budget_kind.currentText() == "steps" else None
        minutes = self.budget_minutes.value() if steps is None else None
        device = (self.session.inference_settings or {}).get("device")
        cfg = TrainConfig(depth=self.depth.currentText(), steps=steps, minutes=minutes,
                          lr=number(self.lr, "learning rate"), l2=number(self.l2, "L2 strength"),
                          l2_sp=self.l2_sp.isChecked(), batch_size=self.batch.value(),
                          patch_size=int(self.patch.currentText()),
                          monitor=self.monitor.currentData(),
                          device=None if device in (None, "auto") else device)
        return cfg.validate()

    # ------------------------------------------------------------------ training
    def start(self):
        """Start fine-tuning in a worker thread; returns the worker (None on bad input)."""
        from napari.qt.threading import thread_worker

        from ..training import finetune
        from ..training.trainer import check_training_inputs

        if self.worker is not None:
            return self.worker
        try:
            if self.session.predicting:
                raise TemDefectError("Inference is running on this model; wait for it to "
                                     "finish (or press Cancel there), then fine-tune.")
            model = self.session.model
            if model is None:
                raise TemDefectError("No model is loaded; run the Inference widget first "
                                     "(it loads the model to fine-tune).")
            ts = self.session.training_set
            if ts is None or len(ts) == 0:
                raise TemDefectError("The training set is empty; correct an image and press "
                                     "'Add to training set' in the Corrections widget.")
            config = self.config()
            check_training_inputs(model, ts, config)  # bad input: clear message, nothing starts
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return None

        self._first_round = not self._is_tuned(model)
        if self._first_round:
            self.session.weights_before_finetune = model.copy_weights()
            self._before = (model, len(model.history), model.parent, model.name,
                            model.source, self.session.model_key, dict(model.metadata),
                            model.spec.pixel_size_nm)
            model.parent = self.session.model_key or model.source or model.name
        self._cancel = threading.Event()
        self.plot.clear()
        self.progress.setValue(0)
        self.status.setText("Preparing patches…")
        relay, cancel = self._relay, self._cancel

        @thread_worker(start_thread=False, ignore_errors=True)
        def run():
            return finetune(model, ts, config, progress=relay.event.emit, cancel=cancel)

        worker = run()
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.session.training = True
        self.refresh()
        worker.start()
        return worker

    def stop(self):
        """End training at the next step (the best weights so far are kept)."""
        self._cancel.set()
        self.status.setText("Stopping after this step…")

    def _on_progress(self, event: dict):
        self.plot.add(event)
        if event.get("fraction") is not None:
            self.progress.setValue(int(1000 * event["fraction"]))
        if event.get("event") == "eval" and event.get("val_f1") is not None:
            self.status.setText(f"step {event['step']}: validation loss {event['val_loss']:.4f}, "
                                f"F1 {event['val_f1']:.3f} (best at step {event['best_step']})")
        elif event.get("event") == "step" and not self._cancel.is_set():
            total = event.get("total_steps")
            self.status.setText(f"step {event['step']}" + (f" of {total}" if total else "")
                                + f", loss {event['train_loss']:.4f}")

    def _on_done(self, result):
        self.session.training = False  # before re-predicting with the tuned weights
        self.result = result
        how = {"cancelled": "Stopped", "early_stop": "Stopped early (no more improvement)"}.get(
            result.reason, "Finished")
        f1 = ""
        if result.best_val_f1 is not None and result.start_val_f1 is not None:
            f1 = f"; validation F1 {result.start_val_f1:.3f} → {result.best_val_f1:.3f}"
        self.status.setText(f"{how} after {result.steps} steps in {result.seconds:.0f} s; kept "
                            f"the weights of step {result.best_step}{f1}. Updating the prediction…")
        self.progress.setValue(1000)
        self.signals.model_changed.emit(self.session)
        self.rerun_inference()

    def _on_error(self, exc):
        self.session.training = False
        if self._first_round and self._before is not None:
            # the weights are restored by finetune(); undo the "fine-tuned" bookkeeping too
            model, _, parent = self._before[:3]
            model.parent = parent
            self._before = None
            self.session.weights_before_finetune = None
        show_error(exc)
        self.status.setText("Training failed; the model is unchanged.")

    def _on_finished(self):
        self.session.training = False
        self.worker = None
        self.refresh()

    # ------------------------------------------------------------------ re-run inference
    def current_image_name(self) -> str | None:
        """The image to re-predict: the selected image layer if it was predicted, else the
        last predicted image still open."""
        active = self.viewer.layers.selection.active
        preds = self.session.predictions
        from napari.layers import Image

        if isinstance(active, Image) and active.name in preds:
            return active.name
        for name in reversed(list(preds)):
            if name in self.viewer.layers:
                return name
        return None

    def _inference_widget(self):
        try:
            docks = self.viewer.window.dock_widgets
        except Exception:  # noqa: BLE001 - no window (headless viewer)
            return None
        for widget in docks.values():
            if hasattr(widget, "run_inference"):
                return widget
        return None

    def rerun_inference(self):
        """Predict the current image again with the retrained model; layers update in place."""
        name = self.current_image_name()
        if name is None:
            self.status.setText(self.status.text().replace(" Updating the prediction…", "")
                                + " Run Inference to see the new prediction.")
            return None
        widget = self._inference_widget()
        try:
            if widget is not None:
                worker = widget.run_inference(self.viewer.layers[name])
            else:
                worker = self._predict_in_worker(name)
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return None
        self.inference_worker = worker
        if worker is not None:
            worker.finished.connect(lambda: self.status.setText(
                self.status.text().replace(
                    "Updating the prediction…",
                    f"Prediction of {name!r} updated; your corrected labels stay in the "
                    "training set.")))
        return worker

    def _predict_in_worker(self, name: str):
        """Fallback when the Inference widget is not docked: the same core call, and the same
        layers, metadata and edited-labels question (:func:`._results.show_prediction`)."""
        from napari.qt.threading import thread_worker

        from ..inference import predict

        model = self.session.model
        image_layer = self.viewer.layers[name]
        image = layer_image(image_layer)
        known = ("tile", "overlap", "tta", "threshold", "device", "batch_size", "invert")
        settings = {k: v for k, v in (self.session.inference_settings or {}).items() if k in known}
        defects = f"{name} defects"
        defects_data = self.viewer.layers[defects].data if defects in self.viewer.layers else None

        @thread_worker(start_thread=False, ignore_errors=True)
        def run():
            result = predict(model, image, **settings)
            return (result, *prepare_labels(result, defects_data, model.split_touching))

        worker = run()
        worker.returned.connect(lambda out: self._show_prediction(image_layer, model, *out))
        worker.errored.connect(show_error)
        worker.finished.connect(self._prediction_finished)
        set_predicting(self.viewer, True)  # Train and Revert wait, as for the Inference panel's
        worker.start()
        return worker

    def _prediction_finished(self):
        set_predicting(self.viewer, False)

    def ask_replace_edited(self, layer_name: str) -> bool:
        """True to replace a defects layer the user has edited (one Ctrl-Z brings it back)."""
        return ask_replace_edited(self, layer_name)

    def _show_prediction(self, image_layer, model, result, labels, new_print, old_print):
        if image_layer.name not in self.viewer.layers:  # closed while predicting
            return
        self.session.predictions[image_layer.name] = result
        show_prediction(self.viewer, image_layer, result, model.name, labels, new_print,
                        old_print, self.ask_replace_edited, split_touching=model.split_touching)

    # ------------------------------------------------------------------ save / revert
    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "napari-temdefect", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def save_model(self, path=None):
        """Write the model (weights, fine-tune history, parent) to a .safetensors checkpoint."""
        try:
            model = self.session.model
            if model is None:
                raise TemDefectError("No model is loaded; run Inference and fine-tune first.")
            if path is None:
                path, _ = QFileDialog.getSaveFileName(
                    self, "Save model", f"{model.name}_finetuned.safetensors",
                    "Checkpoints (*.safetensors)",
                    options=QFileDialog.Option.DontConfirmOverwrite)
                if not path:
                    return None
            path = Path(path)
            if path.suffix != ".safetensors":  # append: "bubble_t0.5" keeps its ".5"
                path = path.with_name(path.name + ".safetensors")
            overwrite = False
            if path.exists():
                if not self._confirm(f"{path} exists. Replace it?"):
                    self.status.setText(f"Not saved: {path.name} exists.")
                    return None
                overwrite = True
            name, before = model.name, dict(model.metadata)
            model.name = path.stem
            # the Inference panel's Threshold box, as it is now (else the last run's), becomes
            # the checkpoint's operating threshold (else the parent's stays)
            used = as_threshold(self.session.panel_threshold)
            if used is None:
                used = as_threshold((self.session.inference_settings or {}).get("threshold"))
            if used is not None:
                model.metadata["threshold"] = used
            try:
                out = model.save(path, overwrite=overwrite)
            except Exception:
                model.name, model.metadata = name, before
                raise
            model.source = str(out)
            self.session.model_key = str(out)
            self.status.setText(f"Saved {out} (operating threshold {model.threshold:g}).")
            self.signals.model_changed.emit(self.session)
            return out
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return None

    def revert(self):
        """Restore the weights (and history) from before fine-tuning."""
        try:
            model = self.session.model
            if not self._is_tuned(model):
                raise TemDefectError("There is nothing to revert: this model has not been "
                                     "fine-tuned in this session.")
            if self.worker is not None:
                raise TemDefectError("Training is running; press Stop first, then Revert.")
            if self.session.predicting:  # swapping weights mid-run would mix two models
                raise TemDefectError("Inference is running on this model; wait for it to "
                                     "finish, then Revert.")
            _, n_hist, parent, name, source, key, metadata, pixel_size = self._before
            model.restore_weights(self.session.weights_before_finetune)
            del model.history[n_hist:]
            model.parent, model.name = parent, name
            # a Save in between pointed the panels at the saved file; these weights are not it
            model.source, model.metadata = source, metadata
            model.spec.pixel_size_nm = pixel_size  # the scale the first round taught it
            self.session.model_key = key
            self.session.weights_before_finetune = None
            self._before = None
            self.status.setText("Reverted to the weights from before fine-tuning. "
                                "Updating the prediction…")
            self.signals.model_changed.emit(self.session)
            self.refresh()
            self.rerun_inference()
            return True
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return False
