"""`temdefect quantify` and `temdefect evaluate` on files with known content."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from napari_temdefect.cli.main import main
from napari_temdefect.io import write_tiff


def disks(shape=(128, 128), spec=((30, 30, 16), (40, 90, 24), (95, 60, 20))):
    m = np.zeros(shape, np.uint8)
    y, x = np.ogrid[:shape[0], :shape[1]]
    for r, c, d in spec:
        m[(y - r) ** 2 + (x - c) ** 2 <= (d / 2) ** 2] = 255
    return m


def test_quantify_calibrated_tiff_writes_both_csvs(tmp_path, capsys):
    write_tiff(tmp_path / "a_mask.tif", disks(), pixel_size_nm=0.5)
    out = tmp_path / "objects.csv"
    assert main(["quantify", str(tmp_path / "a_mask.tif"), "--kind", "blobs",
                 "--out", str(out)]) == 0
    objects = pd.read_csv(out)
    summary = pd.read_csv(tmp_path / "objects_summary.csv")
    assert len(objects) == 3 and set(objects["image"]) == {"a"}
    np.testing.assert_allclose(np.sort(objects["equivalent_diameter_nm"]),
                               np.array([16, 20, 24]) * 0.5, rtol=0.02)
    assert summary["pixel_size_nm"].iloc[0] == pytest.approx(0.5)
    assert summary["number_density_per_um2"].iloc[0] == pytest.approx(
        3 / (128 * 128 * 0.25e-6))
    assert "wrote 3 objects" in capsys.readouterr().out


def test_pixel_size_option_overrides_and_uncalibrated_png_stays_px(tmp_path):
    iio.imwrite(tmp_path / "b.png", disks())
    out, summ = tmp_path / "o.csv", tmp_path / "s.csv"
    assert main(["quantify", str(tmp_path / "b.png"), "-k", "blobs", "--out", str(out),
                 "--summary", str(summ), "-q"]) == 0
    objects = pd.read_csv(out)
    assert "equivalent_diameter_px" in objects.columns
    assert not any(c.endswith("_nm") for c in objects.columns)
    assert pd.read_csv(summ)["pixel_size_nm"].isna().all()
    assert main(["quantify", str(tmp_path / "b.png"), "-k", "blobs", "--out", str(out),
                 "--summary", str(summ), "--pixel-size", "2", "--overwrite", "-q"]) == 0
    objects = pd.read_csv(out)
    np.testing.assert_allclose(np.sort(objects["equivalent_diameter_nm"]),
                               np.array([16, 20, 24]) * 2, rtol=0.02)


def test_refuses_to_overwrite_and_mixed_calibration(tmp_path, capsys):
    iio.imwrite(tmp_path / "b.png", disks())
    write_tiff(tmp_path / "c.tif", disks(), pixel_size_nm=1.0)
    out = tmp_path / "o.csv"
    out.write_text("mine")
    assert main(["quantify", str(tmp_path / "b.png"), "-k", "blobs", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert out.read_text() == "mine"
    assert main(["quantify", str(tmp_path / "c.tif"), str(tmp_path / "b.png"), "-k", "blobs",
                 "--out", str(tmp_path / "n.csv")]) == 2
    assert "mix pixels and nm" in capsys.readouterr().err
    assert not (tmp_path / "n.csv").exists()


def test_lines_with_thickness_and_probability_input(tmp_path):
    prob = np.zeros((100, 220), np.float32)
    prob[49:52, 10:210] = 0.8  # a 200 px line
    write_tiff(tmp_path / "d_probability.tif", prob, pixel_size_nm=1.0)
    write_tiff(tmp_path / "d_confidence.tif", np.full_like(prob, 0.7), pixel_size_nm=1.0)
    out = tmp_path / "lines.csv"
    assert main(["quantify", str(tmp_path / "d_probability.tif"), "-k", "lines",
                 "--thickness", "50", "--out", str(out), "-q"]) == 0
    o = pd.read_csv(out)
    s = pd.read_csv(tmp_path / "lines_summary.csv")
    assert o["length_nm"].iloc[0] == pytest.approx(200, rel=0.03)
    assert o["mean_probability"].iloc[0] == pytest.approx(0.8, abs=1e-6)
    assert o["mean_confidence"].iloc[0] == pytest.approx(0.7, abs=1e-6)
    rho = 200e-9 / (100 * 220 * 1e-18 * 50e-9)
    assert s["dislocation_density_m2"].iloc[0] == pytest.approx(rho, rel=0.03)


def test_class_option_picks_one_class_of_a_multiclass_output(tmp_path, capsys):
    # a two-class model's outputs: class 1 = three disks, class 2 = two disks
    one, two = disks() > 0, disks(spec=((100, 100, 20), (20, 100, 10))) > 0
    prob = np.stack([one * 0.9, two * 0.8]).astype(np.float32)
    write_tiff(tmp_path / "e_probability.tif", prob, pixel_size_nm=1.0)
    write_tiff(tmp_path / "e_mask.tif", np.where(two, 2, np.where(one, 1, 0)).astype(np.uint8),
               pixel_size_nm=1.0)
    for name, k, n in (("e_probability.tif", 1, 3), ("e_probability.tif", 2, 2),
                       ("e_mask.tif", 2, 2)):
        out = tmp_path / f"{k}_{name}.csv"
        assert main(["quantify", str(tmp_path / name), "-k", "blobs", "--class", str(k),
                     "--out", str(out), "-q"]) == 0, capsys.readouterr().err
        assert len(pd.read_csv(out)) == n
    for args, message in (([], "holds 2 pages"), (["--class", "3"], "out of range (1..2)"),
                          (["--class", "0"], "counts from 1")):
        assert main(["quantify", str(tmp_path / "e_probability.tif"), "-k", "blobs",
                     "--out", str(tmp_path / "x.csv"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.csv").exists()


def test_a_class_mask_needs_class_and_a_stack_page_follows_predicts_rule(tmp_path, capsys):
    from napari_temdefect.io import model_tags

    one, two = disks() > 0, disks(spec=((100, 100, 20), (20, 100, 10))) > 0
    classes = model_tags("m", ["bubble", "loop"])
    write_tiff(tmp_path / "c_mask.tif", np.where(two, 2, np.where(one, 1, 0)).astype(np.uint8),
               pixel_size_nm=1.0, tags=classes)
    assert main(["quantify", str(tmp_path / "c_mask.tif"), "--out",
                 str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert "class mask of 2 classes (bubble, loop)" in err and "--class K" in err
    assert err.count("\n") == 1 and not (tmp_path / "c.csv").exists()
    # where both classes are probable, the pixel is the more probable one's, as in predict
    p1 = np.where(one, 0.9, 0.0)
    p1[two] = 0.7  # class 2 (0.9 there) wins: not a class-1 pixel
    prob = np.stack([p1, np.where(two, 0.9, 0.0)]).astype(np.float32)
    write_tiff(tmp_path / "d_probability.tif", prob, pixel_size_nm=1.0, tags=classes)
    for k, n in ((1, 3), (2, 2)):
        out = tmp_path / f"d{k}.csv"
        assert main(["quantify", str(tmp_path / "d_probability.tif"), "--class", str(k),
                     "--out", str(out), "-q"]) == 0
        assert len(pd.read_csv(out)) == n
    assert pd.read_csv(tmp_path / "d1.csv")["area_nm2"].sum() == one.sum()


def test_same_file_names_in_two_folders_get_distinct_rows(tmp_path):
    for folder, spec in (("a", ((30, 30, 16),)), ("b", ((30, 30, 16), (90, 90, 20)))):
        (tmp_path / folder).mkdir()
        write_tiff(tmp_path / folder / "img_mask.tif", disks(spec=spec), pixel_size_nm=1.0)
    out = tmp_path / "o.csv"
    assert main(["quantify", str(tmp_path / "a" / "img_mask.tif"),
                 str(tmp_path / "b" / "img_mask.tif"), "-k", "blobs", "--out", str(out),
                 "-q"]) == 0
    summary = pd.read_csv(tmp_path / "o_summary.csv")
    assert list(summary["image"]) == ["a__img", "b__img"] and list(summary["count"]) == [1, 2]


def test_colour_masks_and_non_square_pixels_are_named(tmp_path, capsys):
    import tifffile

    red = np.zeros((128, 128, 3), np.uint8)
    red[..., 0] = disks()
    iio.imwrite(tmp_path / "red.png", red)
    assert main(["quantify", str(tmp_path / "red.png"), "-k", "blobs",
                 "--out", str(tmp_path / "r.csv")]) == 2
    assert "is a colour image, not a mask" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "aniso.tif", disks(), imagej=True,
                     resolution=(1 / 0.5, 1 / 1.0), metadata={"unit": "nm"})
    assert main(["quantify", str(tmp_path / "aniso.tif"), "-k", "blobs",
                 "--out", str(tmp_path / "a.csv"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "pixels are not square (x 0.5, y 1 nm)" in err and "resample" in err


def test_evaluate_prints_table_and_writes_csv_and_overlay(tmp_path, capsys):
    truth = disks()
    pred = disks(spec=((30, 30, 16), (40, 90, 24)))  # misses one disk
    iio.imwrite(tmp_path / "t.png", truth)
    iio.imwrite(tmp_path / "p.png", pred)
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "p.png"), "--truth",
                 str(tmp_path / "t.png"), "--kind", "blobs", "--out", str(out),
                 "--overlay-dir", str(tmp_path / "ov")]) == 0
    text = capsys.readouterr().out
    assert "object_f1" in text and "pixel_f1" in text and "count_missed" in text
    m = pd.read_csv(out).iloc[0]
    assert m["object_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert m["count_pred"] == 2 and m["count_truth"] == 3
    assert (m["count_missed"], m["count_extra"], m["count_merged"], m["count_split"]) == \
        (1, 0, 0, 0)
    overlay = iio.imread(tmp_path / "ov" / "p_confusion.png")
    assert tuple(overlay[95, 60]) == (255, 0, 0, 255)  # the missed disk is red
    assert tuple(overlay[30, 30]) == (0, 255, 0, 255)
    assert main(["evaluate", "--pred", str(tmp_path / "p.png"), "--truth",
                 str(tmp_path / "t.png"), str(tmp_path / "t.png"), "--kind", "blobs"]) == 2
    assert "one reference per prediction" in capsys.readouterr().err


def test_evaluate_two_models_on_one_image_keeps_both_rows_and_overlays(tmp_path, capsys):
    """e1/x_mask.tif and e2/x_mask.tif (two models' masks of one image) used to write the same
    overlay twice and stop at the second, with no metrics written."""
    truth = disks()
    for model, spec in (("e1", ((30, 30, 16),)), ("e2", ((30, 30, 16), (40, 90, 24)))):
        (tmp_path / model).mkdir()
        iio.imwrite(tmp_path / model / "x_mask.png", disks(spec=spec))
    iio.imwrite(tmp_path / "t.png", truth)
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "e1" / "x_mask.png"),
                 str(tmp_path / "e2" / "x_mask.png"), "--truth", str(tmp_path / "t.png"),
                 str(tmp_path / "t.png"), "--kind", "blobs", "--out", str(out),
                 "--overlay-dir", str(tmp_path / "ov")]) == 0
    m = pd.read_csv(out).set_index("image")
    assert m.index.tolist() == ["e1__x", "e2__x"]
    assert m["count_pred"].tolist() == [1, 2]
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == \
        ["e1__x_confusion.png", "e2__x_confusion.png"]


@pytest.mark.realdata
def test_real_masks(shared_data, tmp_path):
    bubbles = sorted((shared_data / "he_bubbles" / "masks").glob("*.png"))[:2]
    grains = sorted((shared_data / "uo2_grain_boundaries" / "masks").glob("*.png"))[:1]
    assert main(["quantify", *map(str, bubbles), "-k", "blobs", "--out",
                 str(tmp_path / "b.csv"), "-q"]) == 0
    s = pd.read_csv(tmp_path / "b_summary.csv")
    assert (s["count"] > 5).all() and s["pixel_size_nm"].isna().all()
    assert main(["quantify", *map(str, grains), "-k", "grains", "--out",
                 str(tmp_path / "g.csv"), "-q"]) == 0
    g = pd.read_csv(tmp_path / "g_summary.csv").iloc[0]
    assert 5 < g["grain_count"] < g["grain_count_including_border"]
    assert math.isfinite(g["mean_grain_diameter_px"])


def test_an_inverted_grain_mask_gets_a_note(tmp_path, capsys):
    """Grains white and boundaries black: nothing is enclosed, so grain_count is 0; the user is
    told why instead of being left with a silent zero."""
    b = np.zeros((128, 128), np.uint8)
    b[::32, :] = b[:, ::32] = 255  # boundaries every 32 px
    iio.imwrite(tmp_path / "ok.png", b)
    iio.imwrite(tmp_path / "inv.png", 255 - b)
    assert main(["quantify", str(tmp_path / "ok.png"), "--kind", "grains", "--out",
                 str(tmp_path / "a.csv"), "-q"]) == 0
    assert "note" not in capsys.readouterr().err
    assert main(["quantify", str(tmp_path / "inv.png"), "--kind", "grains", "--out",
                 str(tmp_path / "b.csv"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "probably inverted" in err and "inv:" in err and err.count("\n") == 1


def test_split_follows_the_model_recorded_in_the_file_unless_told(tmp_path):
    """Two touching disks: a mask that `predict` wrote for a model that counts touching blobs
    apart (the bundled bubble model) counts 2; --no-split counts the component, 1; a mask
    with no such record counts 1 unless --split."""
    from napari_temdefect.io import model_tags

    pair = disks(spec=((64, 48, 30), (64, 76, 30)))
    write_tiff(tmp_path / "s_mask.tif", pair, tags=model_tags("bubble", ["bubble"], True))
    write_tiff(tmp_path / "p_mask.tif", pair, tags=model_tags("other", ["bubble"]))

    def count(name, *flags):
        out = tmp_path / f"{name}{len(flags)}.csv"
        assert main(["quantify", str(tmp_path / f"{name}_mask.tif"), "--kind", "blobs",
                     "--out", str(out), *flags]) == 0
        return len(pd.read_csv(out))

    assert count("s") == 2 and count("s", "--no-split") == 1
    assert count("p") == 1 and count("p", "--split") == 2
