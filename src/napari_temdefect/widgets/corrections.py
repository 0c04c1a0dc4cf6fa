"""Corrections dock widget: fix the ``<image> defects`` labels and build the training set.

napari's own paint / erase / fill tools stay the main tools. This panel adds one-click
operations (each one undoable with Ctrl-Z, through the layer's history), an *ignore* brush,
re-thresholding from the ``<image> probability`` layer that keeps manual edits, and the
training set (add, list, remove, save, load). The operations themselves live in
:mod:`napari_temdefect.corrections`.

Keys on the labels layer: ``d`` deletes the object under the cursor, ``i`` picks the ignore
brush, ``m`` (napari's "new label") picks the largest object id + 1, never the ignore value.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
    QLineEdit, QListWidget, QMessageBox, QPushButton, QSlider, QSpinBox, QVBoxLayout, QWidget,
)

from .. import corrections as core
from ..constants import IGNORE_LABEL
from ..errors import TemDefectError
from ._common import follow_layer_list, layer_event_choice, layer_pixel_size, show_error
from ._results import OUTPUT_KEY
from .._llvm import avoid_llvm_clash
from ._session import get_session, get_signals

DEFECTS_SUFFIX = " defects"
PROBABILITY_SUFFIX = " probability"
#: how the ignore label is drawn: neutral grey, half transparent
IGNORE_COLOR = (0.55, 0.55, 0.55, 0.55)


def image_name_of(labels_name: str) -> str:
    """``"<image> defects"`` -> ``"<image>"`` (other names are returned unchanged)."""
    return labels_name[: -len(DEFECTS_SUFFIX)] if labels_name.endswith(DEFECTS_SUFFIX) else labels_name


def _recorded(layer) -> dict:
    """What Inference recorded on a layer it made (``metadata[OUTPUT_KEY]``), or {}."""
    return (getattr(layer, "metadata", None) or {}).get(OUTPUT_KEY) or {}


def source_image(layer) -> str:
    """The image a labels layer was predicted from: the name that Inference recorded in its
    metadata (also on ``<image> defects (2)``, the result kept beside edited labels), else
    the one its name implies."""
    recorded = _recorded(layer).get("image")
    return str(recorded) if recorded else image_name_of(layer.name)


def is_superseded(layer) -> bool:
    """Labels kept beside a newer prediction (the user chose to keep their edits)."""
    return bool(_recorded(layer).get("superseded"))


def is_defects_layer(layer) -> bool:
    """A layer that Corrections works on: ``<image> defects``, or one Inference made."""
    return layer.name.endswith(DEFECTS_SUFFIX) or source_image(layer) != layer.name


def ignore_colormap(max_id: int):
    """Labels colours: napari's usual cycle for ids 1..max_id (+ headroom), grey for IGNORE."""
    from napari.utils.colormaps import DirectLabelColormap, label_colormap

    cyclic = label_colormap(num_colors=49, seed=0.5)
    top = int(max_id) + 256
    ids = np.arange(1, top + 1)
    ids = ids[ids != IGNORE_LABEL]
    colors = cyclic.map(ids)
    color_dict = {None: np.asarray(cyclic.map(np.array([top + 1]))[0]), 0: np.zeros(4)}
    color_dict.update({int(i): c for i, c in zip(ids, colors)})
    color_dict[IGNORE_LABEL] = np.asarray(IGNORE_COLOR)
    return DirectLabelColormap(color_dict=color_dict)


def _colored_up_to(colormap) -> int | None:
    """Highest id an ignore_colormap colours explicitly (None for any other colormap)."""
    from napari.utils.colormaps import DirectLabelColormap

    if not isinstance(colormap, DirectLabelColormap) or IGNORE_LABEL not in colormap.color_dict:
        return None
    keys = [k for k in colormap.color_dict if k is not None and k != IGNORE_LABEL]
    return max(keys, default=0)


def new_label(layer) -> None:
    """napari's "new label" (M), skipping the ignore value: largest object id + 1."""
    ids = core.object_ids(np.asarray(layer.data))
    nxt = int(ids.max()) + 1 if ids.size else 1
    if nxt == IGNORE_LABEL:
        nxt += 1
    layer.selected_label = nxt
    if layer.mode not in ("paint", "fill", "polygon"):
        layer.mode = "paint"


class CorrectionsWidget(QWidget):
    """Edit the defects labels, then add the corrected image to the training set."""

    def __init__(self, napari_viewer):
        super().__init__()
        avoid_llvm_clash()  # before anything imports torch next to napari's GL
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.signals = get_signals(napari_viewer)
        #: labels layer name -> thresholds whose masks the labels may currently be based on
        #: per labels layer: the thresholds it was cut at since its prediction was shown
        self._thresholds: dict[str, list[float]] = {}
        self._bound: set[int] = set()

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The labels layer to correct (made by Inference as '<image> defects').")
        form.addRow("Labels layer:", self.layer_combo)
        layout.addLayout(form)

        # --- clean-up operations --------------------------------------------------------
        ops = QGroupBox("Clean up (Ctrl-Z undoes each step)")
        ol = QFormLayout(ops)
        row = QHBoxLayout()
        self.min_size = QSpinBox()
        self.min_size.setRange(1, 1_000_000)
        self.min_size.setValue(20)
        self.min_size.setSuffix(" px")
        self.remove_small_btn = QPushButton("Remove smaller than")
        row.addWidget(self.remove_small_btn)
        row.addWidget(self.min_size)
        ol.addRow(row)
        self.fill_holes_btn = QPushButton("Fill holes")
        self.merge_touching_btn = QPushButton("Merge touching")
        row = QHBoxLayout()
        row.addWidget(self.fill_holes_btn)
        row.addWidget(self.merge_touching_btn)
        ol.addRow(row)
        row = QHBoxLayout()
        self.merge_ids = QLineEdit()
        self.merge_ids.setPlaceholderText("ids, e.g. 3, 7")
        self.merge_selected_btn = QPushButton("Merge ids")
        row.addWidget(self.merge_selected_btn)
        row.addWidget(self.merge_ids)
        ol.addRow(row)
        self.delete_selected_btn = QPushButton("Delete selected label")
        self.delete_selected_btn.setToolTip("Delete the layer's selected label; press 'd' on the "
                                            "canvas to delete the object under the cursor.")
        self.ignore_btn = QPushButton("Ignore brush")
        self.ignore_btn.setToolTip("Paint pixels to leave out of training (grey). Key: 'i'.")
        row = QHBoxLayout()
        row.addWidget(self.delete_selected_btn)
        row.addWidget(self.ignore_btn)
        ol.addRow(row)
        layout.addWidget(ops)

        # --- re-threshold ---------------------------------------------------------------
        thr = QGroupBox("Re-threshold (keeps your edits)")
        tl = QHBoxLayout(thr)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(1, 99)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setDecimals(2)
        tl.addWidget(self.threshold_slider)
        tl.addWidget(self.threshold_spin)
        layout.addWidget(thr)

        # --- training set ---------------------------------------------------------------
        ts = QGroupBox("Training set")
        tsl = QVBoxLayout(ts)
        self.add_btn = QPushButton("Add to training set")
        self.add_btn.setToolTip("Store this image, its corrected labels and ignore mask as one "
                                "training entry (replaces an earlier entry of the same image).")
        tsl.addWidget(self.add_btn)
        self.entries = QListWidget()
        self.entries.setMaximumHeight(110)
        self.entries.setWordWrap(True)
        tsl.addWidget(self.entries)
        self.summary = QLabel("Empty: correct an image and press 'Add to training set'.")
        self.summary.setWordWrap(True)
        tsl.addWidget(self.summary)
        row = QHBoxLayout()
        self.remove_entry_btn = QPushButton("Remove")
        self.save_btn = QPushButton("Save…")
        self.load_btn = QPushButton("Load…")
        for b in (self.remove_entry_btn, self.save_btn, self.load_btn):
            row.addWidget(b)
        tsl.addLayout(row)
        layout.addWidget(ts)
        layout.addStretch()

        # --- wiring ---------------------------------------------------------------------
        self.remove_small_btn.clicked.connect(lambda: self.remove_small())
        self.fill_holes_btn.clicked.connect(lambda: self.fill_holes())
        self.merge_touching_btn.clicked.connect(lambda: self.merge_touching())
        self.merge_selected_btn.clicked.connect(lambda: self.merge_selected())
        self.delete_selected_btn.clicked.connect(lambda: self.delete_selected())
        self.ignore_btn.clicked.connect(lambda: self.ignore_brush())
        self.add_btn.clicked.connect(lambda: self.add_to_training_set())
        self.remove_entry_btn.clicked.connect(lambda: self.remove_entry())
        self.save_btn.clicked.connect(lambda: self.save_training_set())
        self.load_btn.clicked.connect(lambda: self.load_training_set())
        self.threshold_slider.valueChanged.connect(
            lambda v: self.threshold_spin.setValue(v / 100.0))
        self.threshold_spin.valueChanged.connect(self._on_threshold_spin)
        # apply after the slider rests, not on every pixel of a drag
        self._thr_timer = QTimer(self)
        self._thr_timer.setSingleShot(True)
        self._thr_timer.setInterval(250)
        self._thr_timer.timeout.connect(lambda: self.rethreshold())
        self.layer_combo.currentTextChanged.connect(self._on_layer_changed)
        follow_layer_list(self.viewer, self._refresh_layers)
        self.signals.training_set_changed.connect(self._refresh_entries)
        self.signals.prediction_shown.connect(self._on_prediction_shown)

        self._setting_threshold = False
        self._refresh_layers()
        self._refresh_entries()

    # ---------------------------------------------------------------------- layer handling
    def _labels_layers(self):
        from napari.layers import Labels

        return [ly for ly in self.viewer.layers if isinstance(ly, Labels)]

    def _refresh_layers(self, event=None):
        current = self.layer_combo.currentText()
        names = [ly.name for ly in self._labels_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        preferred = layer_event_choice(event, names, current, DEFECTS_SUFFIX) or (
            current if current in names else next(
                (n for n in reversed(names) if n.endswith(DEFECTS_SUFFIX)),
                names[-1] if names else ""))
        self.layer_combo.setCurrentText(preferred)
        self.layer_combo.blockSignals(False)
        for ly in self._labels_layers():
            if id(ly) not in self._bound:
                self._prepare_layer(ly)
        self._on_layer_changed(self.layer_combo.currentText())

    def _prepare_layer(self, layer) -> None:
        """Key bindings, and colours that show the ignore label, on a defects layer."""
        self._bound.add(id(layer))
        if not is_defects_layer(layer):
            return
        layer.bind_key("d", self._delete_under_cursor, overwrite=True)
        layer.bind_key("i", lambda ly: self.ignore_brush(ly), overwrite=True)
        layer.bind_key("m", new_label, overwrite=True)
        self._ensure_colormap(layer)

    def _ensure_colormap(self, layer) -> None:
        data = np.asarray(layer.data)
        defects = data[data != IGNORE_LABEL]
        max_id = int(defects.max()) if defects.size else 0
        top = _colored_up_to(layer.colormap)
        if top is None or max_id > top - 16:
            layer.colormap = ignore_colormap(max_id)

    def _on_layer_changed(self, name: str) -> None:
        layer = self.layer()
        if layer is None:
            return
        self._set_threshold_display(self._thresholds_for(layer)[-1])

    def layer(self):
        """The labels layer being corrected (None when there is none)."""
        name = self.layer_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def _require_layer(self):
        layer = self.layer()
        if layer is None:
            raise TemDefectError("There is no labels layer to correct; run Inference first "
                                 "(it makes '<image> defects') or add a Labels layer.")
        if np.ndim(layer.data) != 2:
            raise TemDefectError(f"The layer {layer.name!r} is not 2D; correct one 2D image at a time.")
        return layer

    # ---------------------------------------------------------------------- applying edits
    def _apply(self, layer, new: np.ndarray) -> int:
        """Write ``new`` into the layer as one undoable step; returns the pixels changed."""
        old = np.asarray(layer.data)
        new = np.asarray(new)
        if new.dtype != old.dtype and int(new.max(initial=0)) > np.iinfo(old.dtype).max:
            raise TemDefectError(f"The layer {layer.name!r} cannot hold label {int(new.max())}.")
        changed = np.nonzero(new != old)
        if changed[0].size == 0:
            return 0
        with layer.block_history():
            layer.data_setitem(changed, new[changed].astype(old.dtype))
        self._ensure_colormap(layer)
        return int(changed[0].size)

    def _run(self, fn, *args, **kwargs):
        """Run an operation, showing user errors as notifications (never a traceback)."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure goes to show_error
            show_error(exc)
            return None

    def remove_small(self, min_size: int | None = None) -> int | None:
        def go():
            layer = self._require_layer()
            n = self.min_size.value() if min_size is None else int(min_size)
            return self._apply(layer, core.remove_small(layer.data, n))
        return self._run(go)

    def fill_holes(self) -> int | None:
        def go():
            layer = self._require_layer()
            return self._apply(layer, core.fill_holes(layer.data))
        return self._run(go)

    def merge_touching(self) -> int | None:
        def go():
            layer = self._require_layer()
            return self._apply(layer, core.merge_touching(layer.data))
        return self._run(go)

    def merge_selected(self, ids=None) -> int | None:
        def go():
            layer = self._require_layer()
            chosen = ids
            if chosen is None:
                text = self.merge_ids.text().replace(",", " ").split()
                try:
                    chosen = [int(t) for t in text]
                except ValueError:
                    raise TemDefectError(
                        f"'{self.merge_ids.text()}' is not a list of label ids; type ids such as '3, 7'."
                    ) from None
            if len(chosen) < 2:
                raise TemDefectError("Give at least two label ids to merge, e.g. '3, 7'.")
            return self._apply(layer, core.merge_touching(layer.data, ids=chosen))
        return self._run(go)

    def delete_selected(self) -> int | None:
        def go():
            layer = self._require_layer()
            return self._apply(layer, core.delete_object(layer.data, label=layer.selected_label))
        return self._run(go)

    def delete_at(self, position) -> int | None:
        """Delete the object at a (row, col) data position."""
        def go():
            layer = self._require_layer()
            return self._apply(layer, core.delete_object(layer.data, position=position))
        return self._run(go)

    def _delete_under_cursor(self, layer):
        pos = layer.world_to_data(self.viewer.cursor.position)
        if self.layer() is not layer:
            self.layer_combo.setCurrentText(layer.name)
        self.delete_at(pos)

    def ignore_brush(self, layer=None) -> None:
        """Select the ignore label and napari's paint brush on the layer."""
        def go():
            ly = layer if layer is not None else self._require_layer()
            if np.iinfo(np.asarray(ly.data).dtype).max < IGNORE_LABEL:
                # 8-bit labels cannot hold the ignore value: widen once
                ly.data = np.asarray(ly.data).astype(np.uint16)
            self._ensure_colormap(ly)
            ly.selected_label = IGNORE_LABEL
            ly.mode = "paint"
            self.viewer.layers.selection.active = ly
        self._run(go)

    # ---------------------------------------------------------------------- re-threshold
    def _thresholds_for(self, layer) -> list[float]:
        """The thresholds the layer's labels were cut at: the one its prediction was made at
        (recorded on the layer by Inference), then each re-threshold since. Every prediction
        written into the layer starts the list again (:meth:`_on_prediction_shown`)."""
        if layer.name not in self._thresholds:
            recorded = _recorded(layer).get("threshold")
            if recorded is None:
                recorded = (self.session.inference_settings or {}).get("threshold", 0.5)
            self._thresholds[layer.name] = [float(recorded)]
        return self._thresholds[layer.name]

    def _on_prediction_shown(self, image_name: str) -> None:
        # the layer now holds a fresh prediction (even one identical to the last): start again
        # from the threshold it was made at
        self._thresholds.pop(image_name + DEFECTS_SUFFIX, None)
        layer = self.layer()
        if layer is not None and source_image(layer) == image_name:
            self._set_threshold_display(self._thresholds_for(layer)[-1])

    def _set_threshold_display(self, value: float) -> None:
        self._setting_threshold = True
        self.threshold_spin.setValue(value)
        self.threshold_slider.setValue(int(round(value * 100)))
        self._setting_threshold = False

    def _on_threshold_spin(self, value: float) -> None:
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round(value * 100)))
        self.threshold_slider.blockSignals(False)
        if not self._setting_threshold:
            self._thr_timer.start()

    def _probability(self, layer):
        if is_superseded(layer):  # its prediction was replaced by a newer run's
            return None
        image = source_image(layer)
        pred = self.session.predictions.get(image)
        if pred is not None and getattr(pred, "probability", None) is not None:
            return np.asarray(pred.probability)
        name = image + PROBABILITY_SUFFIX
        if name in self.viewer.layers:
            return np.asarray(self.viewer.layers[name].data)
        return None

    def _model_mask(self, layer, prob):
        """The model mask the labels are based on: the remembered threshold whose mask is
        closest to the current labels (robust to Ctrl-Z undoing a re-threshold)."""
        labels = np.asarray(layer.data)
        fg = (labels > 0) & (labels != IGNORE_LABEL)
        best, best_err = None, None
        for t in dict.fromkeys(self._thresholds_for(layer)):
            mask = core.mask_from_probability(prob, t)
            err = int(np.count_nonzero((mask > 0) != fg))
            if best_err is None or err < best_err:
                best, best_err = mask, err
        return best

    def rethreshold(self, threshold: float | None = None) -> int | None:
        """Re-threshold the probability map, keeping the manual edits (one undoable step)."""
        def go():
            layer = self._require_layer()
            t = float(self.threshold_spin.value() if threshold is None else threshold)
            prob = self._probability(layer)
            if prob is None and is_superseded(layer):
                raise TemDefectError(
                    f"{layer.name!r} was predicted before the latest run, whose map replaced "
                    "its own, so it cannot be re-thresholded; edit it by hand, or work on the "
                    "latest result's layer.")
            if prob is None:
                raise TemDefectError(
                    f"No probability map for {source_image(layer)!r}; run Inference on "
                    "this image first (it makes the '<image> probability' layer)."
                )
            if prob.shape[-2:] != np.shape(layer.data):
                raise TemDefectError("The probability map and the labels differ in shape; "
                                     "re-run Inference on this image.")
            new = core.rethreshold(prob, t, layer.data, self._model_mask(layer, prob))
            changed = self._apply(layer, new)
            thresholds = self._thresholds_for(layer)
            thresholds.append(t)
            del thresholds[:-16]
            if threshold is not None:
                self._set_threshold_display(t)
            return changed
        return self._run(go)

    # ---------------------------------------------------------------------- training set
    def training_set(self):
        from ..training.dataset import TrainingSet

        if self.session.training_set is None:
            self.session.training_set = TrainingSet()
        return self.session.training_set

    def add_to_training_set(self):
        """Add (image, corrected labels, ignore mask) of the current layer as one entry."""
        def go():
            layer = self._require_layer()
            image_name = source_image(layer)
            if image_name not in self.viewer.layers or image_name == layer.name:
                raise TemDefectError(
                    f"No image layer {image_name!r} for the labels {layer.name!r}; keep the "
                    "image and its '<image> defects' layer (as made by Inference)."
                )
            image_layer = self.viewer.layers[image_name]
            prob = self._probability(layer)
            mask = self._model_mask(layer, prob) if prob is not None else None
            entry = core.to_training_entry(
                np.asarray(image_layer.data), np.asarray(layer.data), model_mask=mask,
                name=image_name, pixel_size_nm=layer_pixel_size(image_layer),
                invert=bool(_recorded(layer).get("inverted")),
            )
            ts = self.training_set()
            if image_name in ts.names:
                ts.remove(image_name)
            ts.add(entry)
            self.signals.training_set_changed.emit(self.session)
            return entry
        return self._run(go)

    def remove_entry(self, index: int | None = None):
        def go():
            ts = self.session.training_set
            i = self.entries.currentRow() if index is None else index
            if ts is None or not (0 <= i < len(ts)):
                raise TemDefectError("Select a training entry in the list to remove it.")
            ts.remove(i)
            self.signals.training_set_changed.emit(self.session)
        self._run(go)

    def _refresh_entries(self, *_):
        self.entries.clear()
        ts = self.session.training_set
        if ts is None or len(ts) == 0:
            self.summary.setText("Empty: correct an image and press 'Add to training set'.")
            return
        total_obj = 0
        for e in ts:
            cm = e.class_map()
            n_obj = int(core.instances_from_mask(cm > 0).max(initial=0))
            total_obj += n_obj
            ignore = e.ignore_mask()
            ign = int(ignore.sum())
            # painted or erased; the ignored pixels are counted once, as ignored
            edited = "" if e.edited is None else \
                f" · {int((np.asarray(e.edited, bool) & ~ignore).sum())} px edited"
            h, w = e.shape
            self.entries.addItem(f"{e.name} · {w}×{h} · {n_obj} defects · {ign} px ignored{edited}")
        self.summary.setText(f"{len(ts)} image(s), {total_obj} defects in all.")

    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "napari-temdefect", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def save_training_set(self, folder=None):
        from ..training.dataset import INDEX_NAME

        def go():
            ts = self.session.training_set
            if ts is None or len(ts) == 0:
                raise TemDefectError("The training set is empty; add a corrected image first.")
            target = folder
            if target is None:
                target = QFileDialog.getExistingDirectory(self, "Save training set to folder")
                if not target:
                    return None
            from pathlib import Path

            overwrite = False
            if (Path(target) / INDEX_NAME).exists():
                if not self._confirm(f"{target} already holds a training set. Replace it?"):
                    return None
                overwrite = True
            path = ts.save(target, overwrite=overwrite)
            from napari.utils.notifications import show_info

            show_info(f"Saved {len(ts)} training image(s) to {path}.")
            return path
        return self._run(go)

    def load_training_set(self, folder=None):
        from ..training.dataset import TrainingSet

        def go():
            target = folder
            if target is None:
                target = QFileDialog.getExistingDirectory(self, "Load training set from folder")
                if not target:
                    return None
            loaded = TrainingSet.load(target)
            current = self.session.training_set
            if current is not None and len(current) and not self._confirm(
                    f"Replace the current training set ({len(current)} image(s)) with the "
                    f"{len(loaded)} image(s) in {target}?"):
                return None
            self.session.training_set = loaded
            self.signals.training_set_changed.emit(self.session)
            return loaded
        return self._run(go)
