"""`temdefect gui`: open napari with the plugin's widgets docked, a micrograph, and the model."""

from __future__ import annotations

from pathlib import Path

WIDGETS = ("Inference", "Corrections", "Fine-tune", "Quantification")
SAMPLES = ("grains", "bubbles", "loops")


def add_parser(sub):
    p = sub.add_parser(
        "gui", help="open napari with the plugin, sample data (or your images) and the default model"
    )
    p.add_argument("images", nargs="*", help="micrographs to open (default: a sample)")
    p.add_argument("--sample", choices=(*SAMPLES, "none"), default="bubbles",
                   help="sample micrograph to open when no image is given (default: bubbles)")
    p.add_argument("--model", default=None,
                   help="bundled model name or checkpoint path to preselect (default: the default model)")
    p.set_defaults(func=run)
    return p


def _check_paths(images):
    from ..errors import TemDefectError

    for image in images:
        if not Path(image).exists():
            raise TemDefectError(f"{image} does not exist; check the path.")


def read_layers(images) -> list[tuple]:
    """napari layer data for each image, read by the plugin's own reader, so a file it cannot
    read is one sentence before the window opens (napari only says "returned no data")."""
    from ..io import read_image
    from ..reader import layer_data

    _check_paths(images)
    return [layer_data(read_image(image)) for image in images]


def setup_viewer(viewer, images=(), sample="bubbles", model=None, layers=None):
    """Dock the four widgets (tabbed), open images or a sample, and preselect the model.

    ``layers``: the images' layer data already read (:func:`read_layers`). Returns the dict of
    docked widgets by name. Used by ``run`` and by the tests.
    """
    from napari.layers import Layer

    from ..widgets._common import layer_kind

    for data, kwargs, kind in (read_layers(images) if layers is None else layers):
        viewer.add_layer(Layer.create(data, dict(kwargs), kind))
    if not images and sample and sample != "none":
        viewer.open_sample("napari-temdefect", sample)
    docked, widgets = [], {}
    for name in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-temdefect", name)
        docked.append(dock)
        widgets[name] = widget
    qt_window = getattr(viewer.window, "_qt_window", None)
    if qt_window is not None and len(docked) > 1:  # tabs keep a laptop screen usable
        for dock in docked[1:]:
            qt_window.tabifyDockWidget(docked[0], dock)
        docked[0].raise_()
    inference = widgets.get("Inference")
    if model is not None and hasattr(inference, "select_model"):
        inference.select_model(model)
    # select the micrograph (not its ground truth) so Run works at once
    images_layers = [ly for ly in viewer.layers if layer_kind(ly) == "image"]
    if images_layers:
        viewer.layers.selection.active = images_layers[0]
    return widgets


def run(args) -> int:
    layers = read_layers(args.images)  # before the window opens: a bad file is one sentence
    import napari

    viewer = napari.Viewer(title="napari-temdefect")
    setup_viewer(viewer, args.images, args.sample, args.model, layers=layers)
    napari.run()
    return 0
