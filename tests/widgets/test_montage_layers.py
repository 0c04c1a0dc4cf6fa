"""Montage outputs open lazily in a napari viewer, calibrated."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.gui
def test_montage_outputs_open_lazily(make_napari_viewer, tmp_path):
    import dask.array as da
    import zarr

    from napari_temdefect.batch.montage import lazy_layers

    folder = tmp_path / "images" / "big"
    for part, shape, dtype in (("mask", (300, 400), "uint8"),
                               ("probability", (1, 300, 400), "float32")):
        z = zarr.open_array(str(folder / f"big_{part}.zarr"), mode="w", shape=shape,
                            chunks=(100, 100) if len(shape) == 2 else (1, 100, 100), dtype=dtype)
        z.attrs.update(pixel_size_nm=0.5, classes=["defect"])
        z[..., 10:20, 10:20] = 1
    layers = lazy_layers(folder)
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    viewer = make_napari_viewer()
    for data, kwargs, kind in layers:
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        assert isinstance(layer.data, da.Array)  # nothing was loaded up front
        np.testing.assert_allclose(layer.scale, (0.5, 0.5))
        assert tuple(str(u) for u in layer.units) == ("nanometer", "nanometer")
    assert viewer.layers["big_mask"].data[15, 15].compute() == 1
