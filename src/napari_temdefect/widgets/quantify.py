"""Quantification dock widget: object table, summary, size histogram and CSV export.

Input: a Labels layer (instances or a mask, e.g. ``<image> defects``) or an Image layer holding
a probability map. The kind is preset from the classes recorded on the layer (``boundary`` →
grains, ``dislocation`` → lines, others → blobs; ``constants.kind_for_class``) until the user
picks one; *Split touching blobs* likewise follows the model that made the layer (the bundled
bubble model counts touching bubbles apart) until the user ticks or clears it. The pixel size
is pre-filled from the layer (its ``scale`` or
``metadata["pixel_size_nm"]``); an empty field means uncalibrated and results in pixels.
The core is :func:`napari_temdefect.quantify.quantify`, run in a ``thread_worker``.

Results:

* the object table (click a column to sort; click a row to centre the view on that object and
  select its label), the summary, and a histogram of sizes (lengths for lines);
* object properties in the ``features`` of the Labels layer, so napari shows them on hover.
  When the labels are measured as they are, that is the input layer itself; otherwise (a mask,
  a probability map, lines, grains, split blobs) a ``<image> <kind>`` Labels layer is written;
* with a reference Labels layer: pixel/object F1, counts and size-distribution distances, and a
  ``<image> confusion`` overlay (true positives green, false positives blue, false negatives
  red).

**Export CSV** writes ``<name>.csv`` (objects) and ``<name>_summary.csv`` and asks before
replacing either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView,
    QLabel, QLineEdit, QMessageBox, QPushButton, QSpinBox, QTableView, QTabWidget, QVBoxLayout,
    QWidget,
)

from ..constants import KINDS, as_threshold, kind_for_class
from ..errors import TemDefectError
from ._common import (
    follow_layer_list, geometry, layer_event_choice, layer_kind, layer_pixel_size,
    non_square_note, set_layer,
    show_error,
)

NO_REFERENCE = "(none)"
SUFFIXES = (" defects", " probability", " labels")
#: table columns that do not go into layer.features (same for every row)
_NOT_FEATURES = ("image", "kind")


def image_name_of(layer_name: str) -> str:
    for suffix in SUFFIXES:
        if layer_name.endswith(suffix) and len(layer_name) > len(suffix):
            return layer_name[: -len(suffix)]
    return layer_name


def _recorded(layer) -> dict:
    """What this plugin recorded on a layer (``metadata["temdefect"]``: Inference widget,
    reader, sample data), or {}."""
    return (getattr(layer, "metadata", {}) or {}).get("temdefect") or {}


def guess_kind(layer) -> str | None:
    """The kind that fits the classes recorded on a layer (Inference, sample data), if any;
    blobs when the classes do not say (``"defect"``)."""
    classes = _recorded(layer).get("classes") or \
        (getattr(layer, "metadata", {}) or {}).get("classes") or []
    if not classes:
        return None
    kinds = [kind_for_class(c) for c in classes]
    return next((k for k in kinds if k), "blobs")


def _several_ids(labels: np.ndarray) -> bool:
    """More than one non-zero id: instance labels (one id alone is a mask, labelled anew)."""
    ids = labels[labels != 0]
    return bool(ids.size) and int(ids.min()) != int(ids.max())


def _split_ignore(labels: np.ndarray):
    """(labels without the ignore label, the ignored pixels or None) of a Labels layer."""
    from ..corrections import split_ignore

    defects, ignored = split_ignore(labels)
    return (defects, ignored) if ignored.any() else (labels, None)


def layer_threshold(layer) -> float | None:
    """The threshold a probability layer was predicted at (``metadata["temdefect"]``, set by
    the Inference widget and by the reader for maps that ``temdefect predict`` wrote)."""
    if layer_kind(layer) != "image":
        return None
    return as_threshold(_recorded(layer).get("threshold"))


def layer_split_touching(layer) -> bool:
    """Whether the model that made a layer counts touching blobs apart (recorded by the
    Inference widget and the reader, ``Model.split_touching``); False when the layer does
    not say. Read as a checkpoint's record is."""
    from ..models.checkpoint import recorded_split_touching

    return recorded_split_touching(_recorded(layer))


def viewer_camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


class DataFrameModel(QAbstractTableModel):
    """Read-only Qt model of a pandas DataFrame; raw values under UserRole for sorting."""

    def __init__(self, df=None):
        super().__init__()
        import pandas as pd

        self.df = df if df is not None else pd.DataFrame()

    def set_frame(self, df):
        self.beginResetModel()
        self.df = df
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.df)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.df.columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = self.df.iat[index.row(), index.column()]
        if role == Qt.ItemDataRole.UserRole:
            if isinstance(value, (bool, np.bool_)):
                return int(value)
            if isinstance(value, (int, float, np.integer, np.floating)):
                return float(value) if np.isfinite(value) else float("-inf")
            return str(value)
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, (float, np.floating)):
                return "" if not np.isfinite(value) else f"{value:.4g}"
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and not isinstance(value, str):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.df.columns[section])
        return str(section + 1)


def _merged_features(old, new):
    """The measurements ``new`` (one row per object, keyed by ``index``, the label id) plus the
    columns that the user or another plugin had put in the layer's features, matched by label
    id, so measuring a layer never drops them. A re-run replaces the measurement columns."""
    import pandas as pd

    if old is None or len(old.columns) == 0:
        return new
    extra = [c for c in old.columns if c not in new.columns and c != "index"]
    if not extra:
        return new
    if "index" in old.columns:
        keyed = old[["index", *extra]]
    else:  # napari's rule without an "index" column: row n describes label n
        keyed = old[extra].assign(index=np.arange(len(old)))
    # an "index" that is not a whole number (text, NaN) names no label: nothing to match
    ids = pd.to_numeric(keyed["index"], errors="coerce")
    keyed = keyed[ids.notna() & (ids % 1 == 0)].assign(index=ids.astype("float64"))
    keyed = keyed.drop_duplicates("index").astype({"index": new["index"].dtype})
    return new.merge(keyed, on="index", how="left")


class QuantifyWidget(QWidget):
    """Measure the defects of a labels or probability layer; tables, histogram and CSV."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.result = None          # QuantResult of the last run
        self.comparison = None      # compare.Comparison or None
        self.result_layer = None    # Labels layer holding result.labels and the features
        self._min_size_touched = False
        self._kind_touched = False  # the user picked a kind: stop guessing it from the layer
        self._split_touched = False  # the user ticked or cleared Split: stop following the model

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Labels (instances or a mask) or a probability image.")
        form.addRow("Layer:", self.layer_combo)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(KINDS)
        self.kind_combo.setToolTip("blobs: bubbles, voids, loops; lines: dislocations, boundaries "
                                   "(length); grains: regions enclosed by a boundary mask")
        form.addRow("Kind:", self.kind_combo)
        self.pixel_size = QLineEdit()
        self.pixel_size.setPlaceholderText("uncalibrated: results in px")
        self.pixel_size.setToolTip("nm per pixel, from the layer's scale; empty = pixels")
        form.addRow("Pixel size (nm):", self.pixel_size)
        self.thickness = QLineEdit()
        self.thickness.setPlaceholderText("optional, for ρ = L/(A·t)")
        form.addRow("Foil thickness (nm):", self.thickness)
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 10_000_000)
        self.min_size.setSuffix(" px")
        self.min_size.setToolTip("Smaller objects are dropped: area (blobs, grains) or "
                                 "skeleton length (lines) in pixels.")
        self.min_size.valueChanged.connect(self._on_min_size_edited)
        form.addRow("Minimum size:", self.min_size)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip("Probability above which a pixel is a defect (probability "
                                  "layers only). Follows the threshold the layer was predicted "
                                  "at (the model's operating threshold) when it records one.")
        form.addRow("Threshold:", self.threshold)
        self.split = QCheckBox("Split touching blobs (watershed)")
        self.split.setToolTip("Count two touching blobs as two (a watershed on the distance to "
                              "the background). Preset from the model that made the layer: "
                              "the bundled bubble model splits.")
        form.addRow(self.split)
        self.reference_combo = QComboBox()
        self.reference_combo.setToolTip("Optional reference (annotation) labels to compare with.")
        form.addRow("Reference:", self.reference_combo)
        layout.addLayout(form)

        row = QHBoxLayout()
        self.run_button = QPushButton("Quantify")
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        row.addWidget(self.run_button)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.tabs = QTabWidget()
        self.objects_model = DataFrameModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.objects_model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.clicked.connect(lambda index: self.select_row(index.row()))
        self.tabs.addTab(self.table, "Objects")
        self.summary_model = DataFrameModel()
        self.summary_table = QTableView()
        self.summary_table.setModel(self.summary_model)
        self.summary_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.summary_table.verticalHeader().setVisible(False)
        self.summary_table.verticalHeader().setDefaultSectionSize(22)
        self.tabs.addTab(self.summary_table, "Summary")
        self.tabs.addTab(self._make_histogram(), "Histogram")
        layout.addWidget(self.tabs, stretch=1)

        self.run_button.clicked.connect(lambda: self.run())
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.layer_combo.currentTextChanged.connect(self._on_layer_changed)
        self.kind_combo.currentTextChanged.connect(self._on_kind_changed)
        self.kind_combo.activated.connect(lambda _i: setattr(self, "_kind_touched", True))
        self.split.clicked.connect(lambda _c: setattr(self, "_split_touched", True))
        follow_layer_list(napari_viewer, self._refresh_layers)
        self._refresh_layers()
        self._on_kind_changed(self.kind_combo.currentText())

    # ------------------------------------------------------------------ inputs
    def _make_histogram(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 3), tight_layout=True)
        self.axes = self.figure.add_subplot(111)
        self.canvas = FigureCanvasQTAgg(self.figure)
        return self.canvas

    def _input_layers(self):
        out = []
        for layer in self.viewer.layers:
            kind = layer_kind(layer)
            if kind == "labels" and not layer.name.endswith((" confusion",)):
                out.append(layer.name)
            elif kind == "image" and not getattr(layer, "rgb", False) \
                    and np.issubdtype(np.asarray(layer.data).dtype, np.floating) \
                    and layer.name.endswith(" probability"):
                out.append(layer.name)
        return out

    def _refresh_layers(self, event=None):
        names = self._input_layers()
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        chosen = layer_event_choice(event, names, current, " defects")
        if chosen is not None:
            self.layer_combo.setCurrentText(chosen)
        elif current in names:
            self.layer_combo.setCurrentText(current)
        else:
            defects = [n for n in names if n.endswith(" defects")]
            if defects:
                self.layer_combo.setCurrentText(defects[-1])
        self.layer_combo.blockSignals(False)
        ref = self.reference_combo.currentText()
        self.reference_combo.clear()
        labels = [n for n in names if layer_kind(self.viewer.layers[n]) == "labels"]
        self.reference_combo.addItems([NO_REFERENCE] + labels)
        if ref in labels:
            self.reference_combo.setCurrentText(ref)
        if self.layer_combo.currentText() != current:
            self._on_layer_changed(self.layer_combo.currentText())

    def _on_layer_changed(self, name):
        if not name or name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        self.threshold.setEnabled(layer_kind(layer) == "image")  # probability maps only
        recorded = layer_threshold(layer)
        if recorded is not None:  # cut the map where the Inference widget / predict cut it
            self.threshold.setValue(recorded)
        if not self._split_touched:  # the model's way of counting (none recorded: off)
            self.split.setChecked(layer_split_touching(layer))
        kind = guess_kind(layer)
        if kind is not None and not self._kind_touched:
            self.kind_combo.blockSignals(True)
            self.kind_combo.setCurrentText(kind)
            self.kind_combo.blockSignals(False)
            self._on_kind_changed(kind)
        px = layer_pixel_size(layer)
        self.pixel_size.setText("" if px is None else f"{px:g}")

    def _on_kind_changed(self, kind):
        from ..quantify import DEFAULT_MIN_SIZE_PX

        if not self._min_size_touched and kind in DEFAULT_MIN_SIZE_PX:
            self.min_size.blockSignals(True)
            self.min_size.setValue(DEFAULT_MIN_SIZE_PX[kind])
            self.min_size.blockSignals(False)
        self.split.setEnabled(kind == "blobs")

    def _on_min_size_edited(self, _value):
        self._min_size_touched = True

    def _gather(self):
        name = self.layer_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise TemDefectError("No labels or probability layer to measure; run Inference or "
                                 "open a mask first.")
        layer = self.viewer.layers[name]
        data = np.array(layer.data)  # a copy: painting during the run must not race with it
        if data.ndim != 2:
            raise TemDefectError(f"{name!r} has {data.ndim} dimensions; quantify one 2D image "
                                 "(pick a single frame first).")
        image = image_name_of(name)
        kind = self.kind_combo.currentText()
        extras = {}
        if layer_kind(layer) == "labels":
            data, ignored = _split_ignore(data)
            if ignored is not None:  # the ignore brush: outside the measured field
                extras["exclude"] = ignored
            if kind != "blobs":
                # a labels layer of lines or boundaries (e.g. Inference's) is a mask, not grains
                data = data > 0
            elif _several_ids(data):  # a Labels layer of instances: measured as they are
                extras["labels"] = data
        if layer_kind(layer) == "labels":
            for key, suffix in (("probability", " probability"), ("confidence", " confidence")):
                other = self.viewer.layers[image + suffix] \
                    if image + suffix in self.viewer.layers else None
                if other is not None and np.shape(other.data) == data.shape:
                    extras[key] = np.asarray(other.data)
                    if key == "probability" and layer_threshold(other) is not None:
                        # the labels were cut at the map's threshold, not at the (disabled)
                        # threshold box's value: the summary records that one
                        extras["threshold"] = layer_threshold(other)
        else:
            conf = image + " confidence"
            if conf in self.viewer.layers and np.shape(self.viewer.layers[conf].data) == data.shape:
                extras["confidence"] = np.asarray(self.viewer.layers[conf].data)
        reference = None
        ref = self.reference_combo.currentText()
        if ref and ref != NO_REFERENCE and ref in self.viewer.layers:
            if ref == name:
                raise TemDefectError("The reference is the layer being measured; pick the "
                                     "annotation layer as reference.")
            reference, ref_ignored = _split_ignore(np.asarray(self.viewer.layers[ref].data))
            if ref_ignored is not None:
                extras["reference_exclude"] = ref_ignored
            if kind != "blobs":
                reference = reference > 0
        from ..quantify import _check_number

        _check_number(self.pixel_size.text().strip() or None, "pixel size",
                      "give nm per pixel, or leave it empty for an uncalibrated image")
        _check_number(self.thickness.text().strip() or None, "foil thickness",
                      "give it in nm, or leave it empty")
        kwargs = dict(
            kind=kind,
            pixel_size_nm=self.pixel_size.text().strip() or None,
            thickness_nm=self.thickness.text().strip() or None,
            min_size_px=self.min_size.value(),
            threshold=extras.pop("threshold", self.threshold.value()),
            split_touching=self.split.isChecked() and self.split.isEnabled(),
            image_name=image, **extras)
        return layer, data, reference, kwargs

    # ------------------------------------------------------------------ running
    def run(self):
        """Start the quantification; returns the worker (None when inputs are unusable)."""
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            show_error(TemDefectError("Quantification is already running; wait for it."))
            return None
        try:
            layer, data, reference, kwargs = self._gather()
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return None

        ref_exclude = kwargs.pop("reference_exclude", None)

        def work():
            from ..quantify import quantify
            from ..quantify.compare import compare

            result = quantify(data > 0 if "labels" in kwargs else data, **kwargs)
            comparison = None
            if reference is not None:
                ref_kwargs = {k: v for k, v in kwargs.items()
                              if k in ("min_size_px", "threshold", "split_touching")}
                # both sides again, within the field that neither marks ignore
                own = kwargs.get("exclude")
                exclude = own if ref_exclude is None else ref_exclude if own is None \
                    else own | ref_exclude
                comparison = compare(result if ref_exclude is None else data, reference,
                                     kwargs["kind"], result.pixel_size_nm,
                                     image_name=kwargs["image_name"], exclude=exclude,
                                     **ref_kwargs)
            return result, comparison

        # ignore_errors: superqt would otherwise re-raise worker errors in the main thread, and
        # napari relays them to its notification manager (with a traceback); show them once,
        # as one sentence, through show_error instead
        self.worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        relay = getattr(self.worker, "_relay_error", None)
        if relay is not None:
            try:
                self.worker.errored.disconnect(relay)
            except (TypeError, RuntimeError, ValueError):
                pass
        self.worker.returned.connect(lambda out: self._on_done(layer, data, *out))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.status.setText(f"Measuring {layer.name!r}…")
        self.worker.start()
        return self.worker

    def _on_error(self, exc):
        show_error(exc)
        self.status.setText(str(exc) if isinstance(exc, TemDefectError)
                            else "Quantification failed.")

    def _on_finished(self):
        self.worker = None
        self.run_button.setEnabled(True)

    def _on_done(self, layer, data, result, comparison):
        self.result, self.comparison = result, comparison
        geo = geometry(layer)
        same = layer_kind(layer) == "labels" and result.labels.shape == data.shape and \
            np.array_equal(result.labels, np.where(result.labels > 0, data, 0))
        features = result.objects.drop(columns=list(_NOT_FEATURES)).rename(
            columns={"label": "index"})
        if same:
            target = layer
        else:
            name = f"{image_name_of(layer.name)} {result.kind}"
            target = set_layer(self.viewer, name, result.labels, "labels",
                               metadata={"temdefect": {"quantify": result.kind}}, **geo)
        target.features = _merged_features(target.features, features) if same else features
        self.result_layer = target
        self.objects_model.set_frame(result.objects)
        for i, column in enumerate(result.objects.columns):  # the same in every row
            self.table.setColumnHidden(i, column in _NOT_FEATURES)
        self.table.resizeColumnsToContents()
        summary = result.summary
        if comparison is not None:
            metrics = comparison.metrics.drop(columns=["image", "kind", "pixel_size_nm"])
            summary = summary.join(metrics.add_prefix("reference_"))
            set_layer(self.viewer, f"{image_name_of(layer.name)} confusion", comparison.overlay,
                      "image", rgb=True, opacity=0.6, **geo)
        self._summary_frame = summary
        shown = summary.T.reset_index().set_axis(["measure", "value"], axis=1)
        shown = shown[shown["value"].notna()]  # measures of other kinds stay in the CSV only
        self.summary_model.set_frame(shown.reset_index(drop=True))
        self._draw_histogram()
        self.export_button.setEnabled(True)
        unit = "nm" if result.calibrated else "px (uncalibrated)"
        text = f"{len(result.objects)} {result.kind} in {target.name!r}, units {unit}."
        ignored = float(result.summary["ignored_fraction"].iloc[0])
        if ignored > 0:
            text += f" {100 * ignored:.1f} % of the image is marked ignore and left out."
        for note in result.notes:
            text += " " + note
        aniso = non_square_note(target)
        if aniso:
            text += " " + aniso
        if comparison is not None:
            m = comparison.metrics.iloc[0]
            text += (f" vs reference: pixel F1 {m['pixel_f1']:.3f}, object F1 "
                     f"{m['object_f1']:.3f}; count {m['count_pred']} vs {m['count_truth']} "
                     f"({m['count_missed']} missed, {m['count_extra']} extra, "
                     f"{m['count_merged']} merged, {m['count_split']} split).")
        self.status.setText(text)

    def _draw_histogram(self):
        r = self.result
        ax = self.axes
        ax.clear()
        unit = "nm" if r.calibrated else "px"
        col = f"length_{unit}" if r.kind == "lines" else f"equivalent_diameter_{unit}"
        values = r.objects[col].to_numpy(dtype=float)
        if r.kind == "grains":
            values = values[~r.objects["touches_border"].to_numpy(bool)]
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=min(50, max(5, int(np.sqrt(values.size)))),
                    color="#4c72b0", edgecolor="white")
        what = "length" if r.kind == "lines" else "equivalent diameter"
        ax.set_xlabel(f"{what} ({unit})")
        ax.set_ylabel("count")
        ax.set_title(f"{r.kind}: n = {values.size}", fontsize=9)
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ table → view
    def select_row(self, view_row: int):
        """Centre the view on the object in (sorted) table row ``view_row`` and select it."""
        if self.result is None or self.result_layer is None:
            return
        source = self.proxy.mapToSource(self.proxy.index(view_row, 0)).row()
        obj = self.result.objects.iloc[source]
        px = self.result.pixel_size_nm or 1.0
        unit = "nm" if self.result.calibrated else "px"
        row_px = obj[f"centroid_y_{unit}"] / px
        col_px = obj[f"centroid_x_{unit}"] / px
        layer = self.result_layer
        world = layer.data_to_world((row_px, col_px))
        camera = viewer_camera(self.viewer)
        camera.center = tuple(world)[-2:]
        # zoom in (never out) until the object spans about a sixth of the canvas
        extent = max(obj[f"major_axis_{unit}"] / px, 8.0) * float(layer.scale[-1])
        camera.zoom = max(camera.zoom, min(600 / (6 * extent), 50))
        layer.selected_label = int(obj["label"])

    # ------------------------------------------------------------------ export
    def ask_overwrite(self, paths) -> bool:
        names = "\n".join(str(p) for p in paths)
        answer = QMessageBox.question(
            self, "napari-temdefect", f"Replace the existing file(s)?\n{names}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def export_csv(self, path=None):
        """Write the object table to ``path`` and the summary beside it (``*_summary.csv``).

        Asks for a file name when ``path`` is None and before replacing an existing file;
        returns the two paths, or None when nothing was written.
        """
        from ..quantify import write_csv

        if self.result is None:
            show_error(TemDefectError("Nothing to export yet; press Quantify first."))
            return None
        if path is None:
            image = self.result.objects["image"].iloc[0] if len(self.result.objects) \
                else "objects"
            # the panel asks once, for both files, below (not the dialog for one of them)
            path, _ = QFileDialog.getSaveFileName(
                self, "Export CSV (objects; summary beside it)",
                f"{image}_{self.result.kind}.csv", "CSV files (*.csv)",
                options=QFileDialog.Option.DontConfirmOverwrite)
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_name(path.name + ".csv")
        summary_path = path.with_name(f"{path.stem}_summary.csv")
        existing = [p for p in (path, summary_path) if p.exists()]
        overwrite = False
        if existing:
            if not self.ask_overwrite(existing):
                self.status.setText("Export cancelled; nothing was replaced.")
                return None
            overwrite = True
        try:
            write_csv(self.result.objects, path, overwrite=overwrite)
            write_csv(self._summary_frame, summary_path, overwrite=overwrite)
        except Exception as exc:  # noqa: BLE001
            show_error(exc)
            return None
        self.status.setText(f"Wrote {path.name} and {summary_path.name}.")
        return path, summary_path
