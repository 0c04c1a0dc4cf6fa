"""Put a prediction into the viewer: the one place that writes the result layers.

Both the Inference widget and the Fine-tune widget (when it re-predicts without the Inference
widget docked) show a :class:`~napari_temdefect.inference.Prediction` through
:func:`show_prediction`, so the layers always look the same and carry the same metadata:

* ``<image> probability`` and ``<image> confidence`` (images), updated in place;
* ``<image> defects`` (Labels, one id per connected object, or per blob for a model that counts
  touching blobs apart, ``Model.split_touching``). If the user edited it since the
  last run, ``ask_replace(name)`` decides: replace it (one undoable step), or keep it and put
  the new result into ``<image> defects (n)``.

Every layer gets the image's scale, translate and units, and ``metadata["temdefect"]`` with the
model, classes, the threshold the mask was cut at and whether the model counts touching blobs
apart (the Quantify panel reads them).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ._common import geometry, layer_kind, set_layer

OUTPUT_KEY = "temdefect"  # layer.metadata key marking layers this plugin made


def fingerprint(data) -> str:
    """A hash of a layer's data: tells whether the user edited a defects layer since the run."""
    arr = np.ascontiguousarray(np.asarray(data))
    return hashlib.blake2b(arr.view(np.uint8).reshape(-1), digest_size=16).hexdigest() + \
        f"{arr.shape}{arr.dtype}"


def instance_labels(mask: np.ndarray, split_touching: bool = False) -> np.ndarray:
    """One id per connected object (8-connected), classes never merged; int32.

    ``split_touching``: touching blobs get an id each (the watershed that Quantify's *split
    touching blobs* uses, ``quantify.blobs.split_touching_blobs``), so that the user can delete
    or merge one of two touching bubbles, and the ids match what Quantify counts."""
    from ..corrections import instances_by_class

    if split_touching:
        from ..quantify.blobs import label_blobs

        return instances_by_class(mask, lambda binary: label_blobs(binary, 0, True))
    return instances_by_class(mask)


def prepare_labels(result, defects_data=None,
                   split_touching: bool = False) -> tuple[np.ndarray, str, str | None]:
    """``(labels, their fingerprint, the current defects layer's fingerprint or None)``.

    Hashing a 16k² layer takes a while, so call this in the worker thread, with the layer's
    data read on the main thread before the worker started. ``split_touching``: the model's
    ``Model.split_touching`` (:func:`instance_labels`)."""
    labels = instance_labels(result.mask, split_touching)
    before = None if defects_data is None else fingerprint(defects_data)
    return labels, fingerprint(labels), before


def ask_replace_edited(parent, layer_name: str) -> bool:
    """True to replace a defects layer the user has edited (one Ctrl-Z brings it back)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent, "napari-temdefect",
        f"'{layer_name}' was edited since the last run. Replace it with the new result? "
        "(Ctrl-Z undoes the replacement.) Choose No to keep your edits and put the new "
        "result in a new layer.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def show_prediction(viewer, image_layer, result, model_name: str, labels: np.ndarray,
                    new_print: str, old_print: str | None, ask_replace, *,
                    split_touching: bool = False):
    """Write ``result`` for ``image_layer`` into the viewer; returns the defects layer.
    ``split_touching``: the model asks for touching blobs to be counted apart
    (``Model.split_touching``), which the Quantify panel presets."""
    name = image_layer.name
    geo = geometry(image_layer)
    meta = {OUTPUT_KEY: {"image": name, "model": model_name, "classes": result.classes,
                         "threshold": result.threshold, "tta": result.tta,
                         "inverted": result.inverted, "split_touching": bool(split_touching)}}
    prob = result.probability[0] if result.probability.shape[0] == 1 \
        else result.probability.max(axis=0)
    set_layer(viewer, f"{name} probability", prob, "image", colormap="magma",
              opacity=0.5, blending="additive", contrast_limits=(0, 1), metadata=meta, **geo)
    set_layer(viewer, f"{name} confidence", result.confidence, "image",
              colormap="viridis", visible=False, contrast_limits=(0, 1), metadata=meta, **geo)
    layer = _write_defects(viewer, f"{name} defects", labels, old_print, meta, geo, ask_replace)
    if np.asarray(layer.data).dtype != labels.dtype:  # kept the user's dtype: rare, re-hash
        new_print = fingerprint(layer.data)
    layer.metadata = {**layer.metadata, OUTPUT_KEY: {**meta[OUTPUT_KEY],
                                                     "fingerprint": new_print}}
    from ._session import get_signals

    get_signals(viewer).prediction_shown.emit(name)  # Corrections re-bases its re-threshold
    return layer


def _write_defects(viewer, lname, labels, old_print, meta, geo, ask_replace):
    if lname not in viewer.layers:
        return set_layer(viewer, lname, labels, "labels", metadata=meta, **geo)
    layer = viewer.layers[lname]
    ours = (layer.metadata or {}).get(OUTPUT_KEY, {}).get("fingerprint")
    edited = old_print is not None and ours != old_print
    if edited and not ask_replace(lname):
        k = 2
        while f"{lname} ({k})" in viewer.layers:
            k += 1
        # the kept labels rest on the previous prediction, which the new one now replaces
        # (probability layer, session): Corrections must not re-threshold them against it
        layer.metadata = {**(layer.metadata or {}), OUTPUT_KEY: {
            **(layer.metadata or {}).get(OUTPUT_KEY, {}), "superseded": True}}
        return set_layer(viewer, f"{lname} ({k})", labels, "labels", metadata=meta, **geo)
    old = layer.data
    if layer_kind(layer) != "labels" or np.shape(old) != labels.shape:
        return set_layer(viewer, lname, labels, "labels", metadata=meta, **geo)
    new = labels.astype(np.asarray(old).dtype, copy=False)
    changed = np.nonzero(np.asarray(old) != new)
    if changed[0].size:  # one undoable step
        layer.data_setitem(changed, new[changed])
    layer.scale, layer.translate = geo["scale"], geo["translate"]
    layer.units = geo["units"]
    return layer
