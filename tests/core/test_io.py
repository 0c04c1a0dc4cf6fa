"""Round trips for every supported format, calibration conversion and clear errors."""

from __future__ import annotations

import imageio.v3 as iio
import mrcfile
import numpy as np
import pytest
import tifffile
from dm3_writer import write_dm3
from ser_writer import write_ser

from napari_temdefect.errors import TemDefectError
from napari_temdefect.io import read_image, to_nm_per_px, unit_to_nm, write_tiff
from napari_temdefect.reader import napari_get_reader


@pytest.fixture
def image(rng):
    return rng.integers(0, 60000, size=(40, 56)).astype(np.uint16)


def _layer(path):
    reader = napari_get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert layers is not None and len(layers) == 1
    return layers[0]


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    "scale, unit, nm",
    [(2.5e-10, "m", 0.25), (0.00025, "µm", 0.25), (0.00025, "μm", 0.25), (0.00025, "um", 0.25),
     (0.00025, "micron", 0.25), (0.25, "nm", 0.25), (2.5, "Å", 0.25), (2.5, "A", 0.25),
     (2.5, "angstrom", 0.25), (250, "pm", 0.25), (2.5e-8, "cm", 0.25), (1.0, "NM", 1.0)],
)
def test_units_convert_to_nm(scale, unit, nm):
    assert to_nm_per_px(scale, unit) == pytest.approx(nm)


@pytest.mark.parametrize("unit", [None, "", "px", "pixel", "1/nm", "eV", "s"])
def test_non_length_units_are_not_calibrations(unit):
    assert unit_to_nm(unit) is None
    assert to_nm_per_px(0.5, unit) is None


def test_zero_negative_and_screen_dpi_are_not_calibrations():
    assert to_nm_per_px(0.0, "nm") is None
    assert to_nm_per_px(-1.0, "nm") is None
    assert to_nm_per_px(float("nan"), "nm") is None
    assert to_nm_per_px(1 / 72, "inch") is None  # 72 dpi is a screen setting


# ---------------------------------------------------------------- TIFF


def test_write_tiff_round_trip_keeps_data_and_calibration(tmp_path, image):
    path = write_tiff(tmp_path / "out.tif", image, pixel_size_nm=0.25)
    m = read_image(path)
    assert m.data.dtype == np.uint16 and np.array_equal(m.data, image)
    assert m.pixel_size_nm == pytest.approx(0.25, rel=1e-6)
    assert m.unit_original == "nm" and m.name == "out" and m.metadata["format"] == "TIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]  # no temp files left


def test_write_tiff_refuses_to_overwrite_and_converts_dtypes(tmp_path, image):
    path = write_tiff(tmp_path / "a.tif", image)
    with pytest.raises(TemDefectError, match="already exists"):
        write_tiff(path, image)
    write_tiff(path, image.astype(np.float64) / 7, pixel_size_nm=1.5, overwrite=True)
    m = read_image(path)
    assert m.data.dtype == np.float32
    np.testing.assert_allclose(m.data, image / 7, rtol=1e-6)
    assert m.pixel_size_nm == pytest.approx(1.5, rel=1e-6)
    write_tiff(tmp_path / "mask.tif", image > 30000)
    assert read_image(tmp_path / "mask.tif").data.dtype == np.uint8
    labels = np.arange(40 * 56, dtype=np.int64).reshape(40, 56)
    write_tiff(tmp_path / "labels.tif", labels)
    back = read_image(tmp_path / "labels.tif")
    assert back.data.dtype == np.uint16 and np.array_equal(back.data, labels)
    assert back.pixel_size_nm is None
    with pytest.raises(TemDefectError, match="not positive"):
        write_tiff(tmp_path / "bad.tif", image, pixel_size_nm=0)


def test_write_tiff_tags_round_trip_and_bad_tags_are_refused(tmp_path, image):
    from napari_temdefect.io import map_threshold, threshold_tags

    path = write_tiff(tmp_path / "p.tif", image.astype(np.float32) / 255, pixel_size_nm=0.5,
                      tags=threshold_tags(0.25, "grain\nboundary"))
    m = read_image(path)
    assert map_threshold(m) == 0.25 and m.pixel_size_nm == pytest.approx(0.5)
    assert m.metadata["original"]["imagej"]["temdefect_model"] == "grain boundary"
    assert map_threshold(read_image(write_tiff(tmp_path / "q.tif", image))) is None
    for bad in ({"unit": "px"}, {"two words": 1}, {"t": "a\nb"}, {"t": [1, 2]}):
        with pytest.raises(TemDefectError, match="TIFF tag"):
            write_tiff(tmp_path / "r.tif", image, tags=bad)
    assert not (tmp_path / "r.tif").exists()


def test_write_tiff_stack_stays_3d(tmp_path, image):
    stack = np.stack([image, image // 2, image // 3])
    m = read_image(write_tiff(tmp_path / "stack.tif", stack, pixel_size_nm=0.8))
    assert m.data.shape == (3, 40, 56) and np.array_equal(m.data, stack)
    assert m.pixel_size_nm == pytest.approx(0.8, rel=1e-6)


@pytest.mark.parametrize("unit", ["micron", "\\u00B5m", "um"])
def test_imagej_tiff_in_microns(tmp_path, image, unit):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, image, imagej=True, resolution=(1 / 0.0005, 1 / 0.0005),
                     metadata={"unit": unit, "axes": "YX"})
    m = read_image(path)
    assert m.pixel_size_nm == pytest.approx(0.5, rel=1e-6)
    assert np.array_equal(m.data, image)


def test_imagej_hyperstack_flattens_to_frames(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 3, 32, 40)).astype(np.uint8)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0),
                     metadata={"unit": "nm", "axes": "TZYX"})
    m = read_image(path)
    assert m.data.shape == (6, 32, 40) and m.pixel_size_nm == pytest.approx(0.25)
    assert any("flattened" in n for n in m.metadata["notes"])


@pytest.mark.parametrize("unit, size, nm", [("nm", 0.25, 0.25), ("µm", 0.0012, 1.2),
                                            ("Å", 3.0, 0.3), (None, 0.002, 2.0)])
def test_ome_tiff_physical_size(tmp_path, image, unit, size, nm):
    meta = {"axes": "YX", "PhysicalSizeX": size, "PhysicalSizeY": size}
    if unit is not None:  # OME's default unit is µm
        meta["PhysicalSizeXUnit"] = meta["PhysicalSizeYUnit"] = unit
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(path, image, ome=True, metadata=meta)
    m = read_image(path)
    assert m.pixel_size_nm == pytest.approx(nm)
    assert "ome" in m.metadata["original"] and m.name == "img"


def test_plain_resolution_tags_in_cm_and_inch(tmp_path, image):
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, image, resolution=(4e7, 4e7), resolutionunit="CENTIMETER")
    assert read_image(cm).pixel_size_nm == pytest.approx(0.25)
    inch = tmp_path / "inch.tif"  # 0.5 nm/px = 2.54e7 nm per inch / 0.5
    tifffile.imwrite(inch, image, resolution=(5.08e7, 5.08e7), resolutionunit="INCH")
    assert read_image(inch).pixel_size_nm == pytest.approx(0.5)


def test_plain_tiff_without_calibration_or_with_72_dpi_is_uncalibrated(tmp_path, image):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, image)
    m = read_image(plain)
    assert m.pixel_size_nm is None and not m.calibrated
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, image, resolution=(72, 72), resolutionunit="INCH")
    m = read_image(dpi)
    assert m.pixel_size_nm is None
    assert any("ignored a calibration" in n for n in m.metadata["notes"])
    layer = _layer(dpi)
    assert layer[1]["scale"] == (1.0, 1.0) and layer[1]["metadata"]["calibrated"] is False


def test_rgb_tiff_of_grey_collapses(tmp_path, image):
    path = tmp_path / "rgb.tif"
    grey8 = (image // 256).astype(np.uint8)
    tifffile.imwrite(path, np.stack([grey8] * 3, axis=-1), photometric="rgb")
    m = read_image(path)
    assert m.data.shape == image.shape and np.array_equal(m.data, grey8)


# ---------------------------------------------------------------- PNG / JPEG


def test_png_grey_and_rgb_grey(tmp_path, image):
    grey8 = (image // 256).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", grey8)
    m = read_image(tmp_path / "g.png")
    assert np.array_equal(m.data, grey8) and m.pixel_size_nm is None
    iio.imwrite(tmp_path / "rgb.png", np.stack([grey8] * 3, axis=-1))
    m = read_image(tmp_path / "rgb.png")
    assert m.data.shape == grey8.shape and m.data.dtype == np.uint8
    assert np.array_equal(m.data, grey8)
    assert any("grayscale saved as RGB" in n for n in m.metadata["notes"])
    iio.imwrite(tmp_path / "g16.png", image)
    assert np.array_equal(read_image(tmp_path / "g16.png").data, image)


def test_jpeg_of_grey_rgb_collapses_to_one_channel(tmp_path, rng):
    grey = (np.add.outer(np.arange(64), np.arange(64)) * 2 % 256).astype(np.uint8)
    iio.imwrite(tmp_path / "rgb.jpg", np.stack([grey] * 3, axis=-1), quality=90)
    m = read_image(tmp_path / "rgb.jpg")
    assert m.data.shape == (64, 64) and m.data.dtype == np.uint8
    assert np.abs(m.data.astype(int) - grey).mean() < 4


def test_true_colour_becomes_luminance_with_a_note(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[16:, :, 2] = 255
    iio.imwrite(tmp_path / "colour.png", rgb)
    m = read_image(tmp_path / "colour.png")
    assert m.data.shape == (32, 32) and m.data.dtype == np.float32
    assert m.data[0, 0] == pytest.approx(0.299 * 200, rel=1e-5)
    assert m.data[20, 0] == pytest.approx(0.299 * 200 + 0.114 * 255, rel=1e-5)
    assert any("luminance" in n for n in m.metadata["notes"])


def test_planar_rgb_tiff_is_one_colour_image_not_three_frames(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (3, 20, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(rgb, 0, -1), photometric="rgb")
    planar, contig = read_image(tmp_path / "planar.tif"), read_image(tmp_path / "contig.tif")
    assert planar.data.shape == (20, 30)
    np.testing.assert_allclose(planar.data, contig.data, rtol=1e-6)


@pytest.mark.parametrize("frames", [3, 4])
def test_a_small_float_stack_stored_as_planar_rgb_is_frames(tmp_path, frames):
    """tifffile stores a (3|4, H, W) array as planar RGB(A) unless told otherwise; a float one
    is a stack of maps or frames, not a colour image whose 4th frame is 'alpha'."""
    stack = np.random.default_rng(0).random((frames, 20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="rgb", planarconfig="separate")
    m = read_image(tmp_path / "s.tif")
    assert m.data.shape == (frames, 20, 30) and m.is_stack
    np.testing.assert_array_equal(m.data, stack)
    assert any("read as frames" in n for n in m.metadata["notes"])


def test_colour_palette_png_keeps_label_indices(tmp_path):
    from PIL import Image

    labels = np.zeros((24, 24), np.uint8)
    labels[2:8, 2:8], labels[12:20, 10:22] = 1, 2
    im = Image.fromarray(labels, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))  # VOC-style colours
    im.save(tmp_path / "voc.png")
    m = read_image(tmp_path / "voc.png")
    assert m.data.dtype == np.uint8 and np.array_equal(m.data, labels)
    grey = Image.fromarray(labels * 100, mode="P")
    grey.putpalette([v for i in range(256) for v in (i, i, i)])
    grey.save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "grey.png").data, labels * 100)


def test_real_bubble_jpeg_opens_as_grey_uncalibrated(shared_data):
    path = next((shared_data / "he_bubbles" / "images").glob("*.jpg"))
    m = read_image(path)
    assert m.data.ndim == 2 and m.data.dtype == np.uint8 and m.pixel_size_nm is None
    raw = iio.imread(path)
    assert raw.ndim == 3 and m.data.shape == raw.shape[:2]


# ---------------------------------------------------------------- MRC


def test_mrc_voxel_size_in_angstrom(tmp_path, rng):
    data = rng.normal(size=(48, 40)).astype(np.float32)
    with mrcfile.new(tmp_path / "a.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 2.5
    m = read_image(tmp_path / "a.mrc")
    assert m.data.shape == (48, 40) and np.array_equal(m.data, data)
    assert m.pixel_size_nm == pytest.approx(0.25) and m.unit_original == "Å"
    stack = rng.integers(0, 1000, size=(4, 24, 32)).astype(np.int16)
    with mrcfile.new(tmp_path / "tilt.mrcs") as mrc:
        mrc.set_data(stack)
        mrc.voxel_size = 12.0
    m = read_image(tmp_path / "tilt.mrcs")
    assert m.data.shape == (4, 24, 32) and m.pixel_size_nm == pytest.approx(1.2)
    with mrcfile.new(tmp_path / "nocal.mrc") as mrc:
        mrc.set_data(data)
    assert read_image(tmp_path / "nocal.mrc").pixel_size_nm is None


def test_mrc_without_map_id_is_read_with_a_note(tmp_path, rng):
    # older and third-party writers leave out the "MAP " ID string (header bytes 208-211)
    data = rng.normal(size=(48, 40)).astype(np.float32)
    with mrcfile.new(tmp_path / "a.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 2.5
    raw = bytearray((tmp_path / "a.mrc").read_bytes())
    raw[208:212] = b"\0\0\0\0"
    (tmp_path / "old.mrc").write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        mrcfile.open(tmp_path / "old.mrc").close()  # what a strict reader does
    m = read_image(tmp_path / "old.mrc")
    assert np.array_equal(m.data, data) and m.pixel_size_nm == pytest.approx(0.25)
    assert any("non-standard MRC header" in n and "Map ID" in n for n in m.metadata["notes"])


def test_not_an_mrc_file_is_one_line(tmp_path):
    (tmp_path / "junk.mrc").write_bytes(b"hello" * 10)
    with pytest.raises(TemDefectError, match=r"junk.mrc is not a readable MRC file") as err:
        read_image(tmp_path / "junk.mrc")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- DM3, SER, EMD


def test_dm3_quarter_nm_opens_with_scale_quarter(tmp_path, image):
    path = tmp_path / "gatan.dm3"
    write_dm3(path, image, scale=0.25, units="nm")
    m = read_image(path)
    assert np.array_equal(m.data, image) and m.data.dtype == np.uint16
    assert m.pixel_size_nm == pytest.approx(0.25)
    assert m.metadata["format"] == "DM3"
    voltage = m.metadata["original"]["ImageList"]["TagGroup0"]["ImageTags"]["Microscope Info"]
    assert voltage["Voltage"] == 200_000.0
    data, kwargs, kind = _layer(path)
    assert kind == "image" and kwargs["scale"] == (0.25, 0.25)
    assert kwargs["metadata"]["calibrated"] is True
    assert kwargs["metadata"]["pixel_size_nm"] == pytest.approx(0.25)
    assert kwargs["metadata"]["unit"] == "nm" and kwargs["metadata"]["original_unit"] == "nm"


@pytest.mark.parametrize("units, scale, nm", [("µm", 0.0015, 1.5), ("Å", 2.0, 0.2),
                                              ("", 1.0, None), ("1/nm", 0.01, None),
                                              ("nm", 0.0, None)])
def test_dm3_units_convert(tmp_path, rng, units, scale, nm):
    data = rng.normal(size=(3, 32, 24)).astype(np.float32)
    path = tmp_path / "s.dm3"
    write_dm3(path, data, scale=scale, units=units)
    m = read_image(path)
    assert m.data.shape == (3, 32, 24) and np.array_equal(m.data, data)
    if nm is None:
        assert m.pixel_size_nm is None
        assert _layer(path)[1]["scale"] == (1.0, 1.0, 1.0)
    else:
        assert m.pixel_size_nm == pytest.approx(nm)
        assert _layer(path)[1]["scale"] == pytest.approx((1.0, nm, nm))


def test_dm4_round_trip(tmp_path, image):
    path = tmp_path / "gatan.dm4"
    write_dm3(path, image.astype(np.float32), scale=2.5, units="Å", version=4)
    m = read_image(path)
    assert np.array_equal(m.data, image.astype(np.float32)) and m.metadata["format"] == "DM4"
    assert m.pixel_size_nm == pytest.approx(0.25)


def test_ser_round_trip(tmp_path, image):
    path = tmp_path / "tia_1.ser"
    write_ser(path, image, pixel_size_m=0.4e-9)
    m = read_image(path)
    assert np.array_equal(m.data, image) and m.pixel_size_nm == pytest.approx(0.4)


def test_emd_round_trip(tmp_path, image):
    from rsciio.emd import file_writer

    axes = [{"name": n, "size": s, "scale": 0.003, "offset": 0.0, "units": "µm",
             "navigate": False} for n, s in zip("yx", image.shape)]
    file_writer(str(tmp_path / "velox.emd"), {"data": image, "axes": axes, "original_metadata": {},
                                             "metadata": {"General": {"title": "t"}, "Signal": {}}})
    m = read_image(tmp_path / "velox.emd")
    assert np.array_equal(m.data, image) and m.pixel_size_nm == pytest.approx(3.0)


def test_hand_made_berkeley_emd_with_a_spectrum_opens_the_image(tmp_path, image):
    import h5py

    path = tmp_path / "ncem.emd"
    with h5py.File(path, "w") as f:  # Berkeley EMD 0.2: data stored x-first, dims as arrays
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        data = f.create_group("data")
        data.attrs["emd_group_type"] = 1
        spec = data.create_group("a_spectrum")
        spec.attrs["emd_group_type"] = 1
        spec.create_dataset("data", data=np.arange(512, dtype=np.float32))
        d = spec.create_dataset("dim1", data=np.arange(512) * 0.5)
        d.attrs["name"], d.attrs["units"] = "Energy", "[eV]"
        img = data.create_group("image")
        img.attrs["emd_group_type"] = 1
        img.create_dataset("data", data=image.T)
        for k, (name, n) in enumerate((("x", image.shape[1]), ("y", image.shape[0])), start=1):
            d = img.create_dataset(f"dim{k}", data=np.arange(n) * 0.2)
            d.attrs["name"], d.attrs["units"] = name, "[nm]"
    m = read_image(path)
    assert np.array_equal(m.data, image) and m.pixel_size_nm == pytest.approx(0.2)
    assert any("2 datasets" in n for n in m.metadata["notes"])


def test_spectra_and_spectrum_images_are_not_taken_for_images():
    from napari_temdefect.io import _is_image_signal

    def axis(nav, units="nm", i=0):
        return {"navigate": nav, "units": units, "index_in_array": i}

    image = {"data": np.zeros((8, 8)), "axes": [axis(False, i=0), axis(False, i=1)]}
    stack = {"data": np.zeros((3, 8, 8)),
             "axes": [axis(True, "s", 0), axis(False, i=1), axis(False, i=2)]}
    spectrum_image = {"data": np.zeros((8, 8, 100)),
                      "axes": [axis(True, i=0), axis(True, i=1), axis(False, "eV", 2)]}
    eels_lines = {"data": np.zeros((8, 100)), "axes": [axis(False, i=0), axis(False, "eV", 1)]}
    assert _is_image_signal(image) and _is_image_signal(stack)
    assert not _is_image_signal(spectrum_image) and not _is_image_signal(eels_lines)
    assert not _is_image_signal({"data": np.zeros(100), "axes": [axis(False, "eV")]})


# ---------------------------------------------------------------- errors and the reader hook


@pytest.mark.parametrize("ext", [".tif", ".png", ".jpg", ".dm3", ".dm4", ".emd", ".ser", ".mrc"])
def test_corrupt_files_give_one_clear_error(tmp_path, ext):
    path = tmp_path / f"broken{ext}"
    path.write_bytes(b"this is not an image at all " * 20)
    with pytest.raises(TemDefectError) as info:
        read_image(path)
    message = str(info.value)
    assert "broken" in message and "\n" not in message
    assert napari_get_reader(str(path))(str(path)) is None


def test_truncated_tiff_gives_clear_error(tmp_path, image):
    path = write_tiff(tmp_path / "full.tif", image, pixel_size_nm=0.5)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:500])
    with pytest.raises(TemDefectError, match="cut.tif"):
        read_image(cut)


def test_missing_wrong_extension_empty_and_folder(tmp_path):
    with pytest.raises(TemDefectError, match="does not exist"):
        read_image(tmp_path / "nope.tif")
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(TemDefectError, match="extension '.csv'"):
        read_image(other)
    empty = tmp_path / "empty.dm3"
    empty.write_bytes(b"")
    with pytest.raises(TemDefectError, match="empty"):
        read_image(empty)
    with pytest.raises(TemDefectError, match="folder"):
        read_image(tmp_path)


def test_reader_hook_declines_what_it_cannot_open(tmp_path, image):
    (tmp_path / "table.csv").write_text("a\n")
    assert napari_get_reader(str(tmp_path / "table.csv")) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None
    assert napari_get_reader(str(tmp_path)) is None
    a = write_tiff(tmp_path / "a.tif", image)
    b = write_tiff(tmp_path / "b.tif", image)
    assert napari_get_reader([str(a), str(tmp_path / "table.csv")]) is None
    assert napari_get_reader([]) is None
    assert len(napari_get_reader([str(a)])([str(a)])) == 1
    both = napari_get_reader([str(a), str(b)])([str(a), str(b)])
    assert [layer[1]["name"] for layer in both] == ["a", "b"]


def test_reader_layer_for_uncalibrated_and_stack(tmp_path, image):
    data, kwargs, kind = _layer(write_tiff(tmp_path / "plain.tif", image))
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["name"] == "plain"
    meta = kwargs["metadata"]
    assert meta["calibrated"] is False and meta["pixel_size_nm"] is None
    assert meta["source"].endswith("plain.tif") and "format" in meta["original_metadata"]
    stack = np.stack([image] * 4)
    data, kwargs, kind = _layer(write_tiff(tmp_path / "stack.tif", stack, pixel_size_nm=0.5))
    assert data.shape == (4, 40, 56) and kwargs["scale"] == pytest.approx((1.0, 0.5, 0.5))


def test_complex_data_is_refused(tmp_path):
    with mrcfile.new(tmp_path / "fft.mrc") as mrc:
        mrc.set_data(np.ones((16, 16), np.complex64))
    with pytest.raises(TemDefectError, match="complex"):
        read_image(tmp_path / "fft.mrc")


def test_write_tiff_refuses_a_pixel_size_that_reading_would_drop(tmp_path):
    img = np.zeros((8, 8), np.float32)
    for bad, words in ((50_000, "not a microscope pixel"), ("abc", "not a number")):
        with pytest.raises(TemDefectError, match=words):
            write_tiff(tmp_path / "x.tif", img, pixel_size_nm=bad)
    assert not (tmp_path / "x.tif").exists()
    write_tiff(tmp_path / "ok.tif", img, pixel_size_nm=9_000)
    assert read_image(tmp_path / "ok.tif").pixel_size_nm == pytest.approx(9_000)


def test_an_ome_tiff_with_broken_xml_still_opens(tmp_path):
    """tifffile falls back to the pixels when the OME-XML cannot be parsed; so does the
    reader (it used to call the file unreadable), uncalibrated."""
    import tifffile

    desc = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/'
            'Schemas/OME/2016-06"><Image><Pixels PhysicalSizeX="0.5" </Image></OME>')
    path = tmp_path / "broken.ome.tif"
    tifffile.imwrite(path, np.arange(256, dtype=np.uint8).reshape(16, 16), description=desc,
                     metadata=None)
    m = read_image(path)
    assert m.data.shape == (16, 16) and m.pixel_size_nm is None
