"""Small helpers shared by the dock widgets."""

from __future__ import annotations

import traceback

import numpy as np

from ..errors import TemDefectError


def show_error(exc: BaseException) -> None:
    """Show a user error as one sentence in napari's notification area, never a traceback."""
    from napari.utils.notifications import show_error as _show_error, show_info

    from ..errors import CancelledError

    if isinstance(exc, CancelledError):
        show_info(str(exc))
    elif isinstance(exc, TemDefectError):
        _show_error(str(exc))
    else:  # a bug: one line for the user, the traceback to the log
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        _show_error(f"Unexpected error: {type(exc).__name__}: {exc}")


def layer_pixel_size(layer) -> float | None:
    """Pixel size in nm from a layer (None when the layer is marked uncalibrated).

    ``metadata["pixel_size_nm"]`` (this plugin's reader) first; else the layer's scale, in the
    layer's length unit converted to nm (µm, Å, …), or taken as nm when the layer has no length
    unit (napari's default "pixel"). A scale of 1 without a unit means uncalibrated."""
    if layer is None:
        return None
    meta = getattr(layer, "metadata", {}) or {}
    if meta.get("calibrated") is False:
        return None
    if meta.get("pixel_size_nm"):
        return float(meta["pixel_size_nm"])
    scale = float(layer.scale[-1])
    unit = _length_unit(layer)
    if unit is None:
        return None if scale == 1.0 and "pixel_size_nm" not in meta else scale
    return float(f"{(scale * unit).to('nm').magnitude:.12g}")  # 2e-3 µm → 2.0, not 1.999…


def non_square_note(layer) -> str | None:
    """The reader's sentence (:func:`..io.pixel_shape_note`) when the layer's pixels are not
    square: measurements use the x size."""
    from ..io import pixel_shape_note

    sy, sx = (float(v) for v in layer.scale[-2:])
    note = pixel_shape_note(sx, sy)
    return f"Its {note}." if note else None


def _length_unit(layer):
    """The pint unit of the layer's last axis when it is a length (µm, nm, Å), else None."""
    units = getattr(layer, "units", None)
    if not units:
        return None
    unit = units[-1]
    try:
        return unit if unit.dimensionality == {"[length]": 1} else None
    except AttributeError:  # not a pint unit
        return None


_LAYER_NAMES = {"Image", "Labels", "Points", "Shapes", "Surface", "Tracks", "Vectors"}


def layer_kind(layer) -> str:
    """'image', 'labels', 'points', … for a napari layer (without private attributes).

    ``layer.__class__``, not ``type(layer)``: a plugin widget's viewer is napari's
    ``PublicOnlyProxy``, whose ``layers[name]`` returns proxies; they report the wrapped
    layer's class there, while ``type()`` would give the proxy's."""
    for cls in layer.__class__.__mro__:
        if cls.__name__ in _LAYER_NAMES and cls.__module__.startswith("napari."):
            return cls.__name__.lower()
    return layer.__class__.__name__.lower()


def follow_layer_list(viewer, refresh) -> None:
    """Call ``refresh(event)`` when a layer is inserted, removed, moved or renamed."""
    def on_inserted(event):
        event.value.events.name.connect(refresh)  # connecting twice is a no-op
        refresh(event)

    for layer in viewer.layers:
        layer.events.name.connect(refresh)
    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.reordered.connect(refresh)


def layer_event_choice(event, names, current: str, suffix: str) -> str | None:
    """The entry a panel's layer box should move to after a layer-list event, or None.

    * a rename of the layer the box showed (``current`` is gone): the same layer, new name;
    * a new layer whose name ends with ``suffix`` (the ``<image> defects`` layer that
      Inference just made): that layer, since it is what the user works on next."""
    kind = getattr(event, "type", None)
    layer = getattr(event, "source", None) if kind == "name" else \
        getattr(event, "value", None) if kind == "inserted" else None
    name = getattr(layer, "name", None)
    if name not in names:
        return None
    if kind == "name" and current not in names:
        return name
    if kind == "inserted" and name.endswith(suffix):
        return name
    return None


def geometry(layer) -> dict:
    """The scale, translate and units of a layer's two image axes, for the layers made from it.

    Units travel too: napari stops using units on the canvas (with an "Inconsistent units
    across layers" notice) as soon as one layer is in pixels and another in nm."""
    return {"scale": tuple(layer.scale)[-2:], "translate": tuple(layer.translate)[-2:],
            "units": tuple(layer.units)[-2:]}


def set_layer(viewer, name: str, data, kind: str = "image", **kwargs):
    """Update the layer called ``name`` in place, or add it if it does not exist yet.

    Returns the layer. Updating keeps the user's display settings (colormap, opacity, …) and
    the layer's undo history, and never piles up copies.
    """
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer_kind(layer) == kind and getattr(layer.data, "shape", None) is not None \
                and np.ndim(layer.data) == np.ndim(data):
            layer.data = data
            for key in ("scale", "translate", "units", "metadata"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            return layer
        viewer.layers.remove(layer)
    add = getattr(viewer, f"add_{kind}")
    return add(data, name=name, **kwargs)


class Placeholder:
    """Factory for widgets whose issue has not landed yet: a labelled panel that never crashes."""

    def __new__(cls, title: str, text: str):
        from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

        w = QWidget()
        lay = QVBoxLayout(w)
        label = QLabel(f"<b>{title}</b><br>{text}")
        label.setWordWrap(True)
        lay.addWidget(label)
        lay.addStretch()
        return w
