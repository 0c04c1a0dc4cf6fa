"""Quantification against known answers from hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.draw import line as draw_line

from napari_temdefect.errors import TemDefectError
from napari_temdefect.quantify import OBJECT_COLUMNS, SUMMARY_COLUMNS, quantify, write_csv
from napari_temdefect.quantify.compare import compare, confusion_overlay

PX = 0.4  # nm per pixel


def draw_disk(mask, center, diameter):
    """Pixels whose centre lies within the circle (area ≈ π r² to well under 1%)."""
    r = diameter / 2
    y, x = np.ogrid[:mask.shape[0], :mask.shape[1]]
    mask[(y - center[0]) ** 2 + (x - center[1]) ** 2 <= r * r] = True


def disks_image():
    diameters = [12, 16, 20, 24, 28, 32, 36, 40, 18, 26]
    centers = [(30, 30), (30, 90), (30, 160), (35, 225), (100, 40), (100, 120), (110, 200),
               (190, 40), (180, 120), (200, 200)]
    mask = np.zeros((256, 256), bool)
    for c, d in zip(centers, diameters):
        draw_disk(mask, c, d)
    return mask, np.array(diameters, float), np.array(centers, float)


def thick_segment(mask, p0, p1, radius=1):
    m = np.zeros_like(mask)
    rr, cc = draw_line(*p0, *p1)
    m[rr, cc] = True
    if radius:
        m = ndi.binary_dilation(m, iterations=radius)
    mask |= m
    return math.hypot(p1[0] - p0[0], p1[1] - p0[1])


# ---------------------------------------------------------------- blobs

def test_disks_count_diameter_density():
    mask, diameters, centers = disks_image()
    res = quantify(mask, "blobs", PX, image_name="disks")
    obj = res.objects.sort_values("equivalent_diameter_nm").reset_index(drop=True)
    assert list(res.objects.columns[:len(OBJECT_COLUMNS)]) == OBJECT_COLUMNS
    assert len(obj) == len(diameters)  # exact count
    np.testing.assert_allclose(obj["equivalent_diameter_nm"], np.sort(diameters) * PX, rtol=0.02)
    np.testing.assert_allclose(obj["major_axis_nm"], np.sort(diameters) * PX, rtol=0.02)
    np.testing.assert_allclose(obj["eccentricity"], 0, atol=0.2)
    # centroids: x is the column, y the row, both in nm from the first pixel's centre
    got = res.objects.sort_values(["centroid_y_nm", "centroid_x_nm"])
    want = centers[np.lexsort((centers[:, 1], centers[:, 0]))] * PX
    np.testing.assert_allclose(got[["centroid_y_nm", "centroid_x_nm"]], want, atol=0.05)
    s = res.summary.iloc[0]
    field_um2 = 256 * 256 * PX ** 2 * 1e-6
    assert s["field_area_um2"] == pytest.approx(field_um2)
    assert s["number_density_per_um2"] == pytest.approx(10 / field_um2, rel=0.01)
    assert s["area_fraction"] == pytest.approx(
        (np.pi * (diameters / 2) ** 2).sum() / 256 ** 2, rel=0.02)
    assert s["mean_equivalent_diameter_nm"] == pytest.approx(diameters.mean() * PX, rel=0.02)
    assert s["median_equivalent_diameter_nm"] == pytest.approx(np.median(diameters) * PX, rel=0.02)
    assert s["p90_equivalent_diameter_nm"] == pytest.approx(
        np.percentile(diameters, 90) * PX, rel=0.02)
    assert list(res.summary.columns) == SUMMARY_COLUMNS
    assert s["image"] == "disks" and s["kind"] == "blobs" and s["pixel_size_nm"] == PX


def test_equivalent_diameter_is_not_the_papers_formula():
    mask = np.zeros((64, 64), bool)
    draw_disk(mask, (32, 32), 30)
    d = quantify(mask, "blobs", 1.0).objects["equivalent_diameter_nm"].iloc[0]
    area = mask.sum()
    assert d == pytest.approx(2 * math.sqrt(area / math.pi))
    assert d == pytest.approx(30, rel=0.01)
    assert 2 * math.sqrt(area) / math.pi == pytest.approx(0.564 * d, rel=0.01)


def test_orientation_and_axes_of_a_tilted_bar():
    mask = np.zeros((128, 128), bool)
    thick_segment(mask, (100, 20), (20, 100), radius=2)  # up and to the right on screen
    o = quantify(mask, "blobs").objects.iloc[0]
    assert o["orientation_deg"] == pytest.approx(45, abs=1)
    assert o["eccentricity"] > 0.95
    assert o["major_axis_px"] > 5 * o["minor_axis_px"]


def test_uncalibrated_stays_in_pixels():
    mask, diameters, _ = disks_image()
    res = quantify(mask, "blobs", None)
    cols = list(res.objects.columns) + list(res.summary.columns)
    assert not [c for c in cols if c.endswith(("_nm", "_nm2", "_um", "_um2")) and
                c not in ("pixel_size_nm", "thickness_nm")]  # inputs, in nm
    assert "equivalent_diameter_px" in cols and "area_px2" in cols
    assert "field_area_px2" in cols and "number_density_per_px2" in cols
    assert np.isnan(res.summary["pixel_size_nm"].iloc[0])
    np.testing.assert_allclose(np.sort(res.objects["equivalent_diameter_px"]),
                               np.sort(diameters), rtol=0.02)
    assert res.summary["field_area_px2"].iloc[0] == 256 * 256


def test_min_size_drops_specks_and_border_is_flagged():
    mask = np.zeros((64, 64), bool)
    mask[10, 10] = mask[20:22, 20:22] = True  # 1 px and 4 px specks
    draw_disk(mask, (40, 40), 10)
    mask[0:6, 30:36] = True  # touches the top edge
    res = quantify(mask, "blobs", 1.0, min_size_px=5)
    assert len(res.objects) == 2
    assert res.objects["touches_border"].sum() == 1
    s = res.summary.iloc[0]
    assert s["count"] == 2 and s["count_excluding_border"] == 1
    assert quantify(mask, "blobs", 1.0, min_size_px=0).summary["count"].iloc[0] == 4


def test_watershed_splits_two_touching_disks():
    mask = np.zeros((80, 120), bool)
    draw_disk(mask, (40, 40), 40)
    draw_disk(mask, (40, 76), 40)  # centres 36 px apart, radius 20: they overlap
    assert len(quantify(mask, "blobs", 1.0).objects) == 1
    res = quantify(mask, "blobs", 1.0, split_touching=True)
    assert len(res.objects) == 2
    xs = np.sort(res.objects["centroid_x_nm"])
    assert xs[0] == pytest.approx(40, abs=2) and xs[1] == pytest.approx(76, abs=2)
    # an elongated blob is not split
    bar = np.zeros((80, 120), bool)
    bar[30:50, 10:110] = True
    assert len(quantify(bar, "blobs", 1.0, split_touching=True).objects) == 1


def test_probability_input_threshold_and_mean_probability():
    prob = np.zeros((64, 64), np.float32)
    prob[10:20, 10:20] = 0.9
    prob[40:50, 40:50] = 0.6
    conf = np.full((64, 64), 0.25, np.float32)
    res = quantify(prob, "blobs", 1.0, confidence=conf)
    assert sorted(res.objects["mean_probability"].round(3)) == [0.6, 0.9]
    assert np.allclose(res.objects["mean_confidence"], 0.25)
    assert res.summary["threshold"].iloc[0] == 0.5
    assert len(quantify(prob, "blobs", 1.0, threshold=0.7).objects) == 1


def test_instance_labels_are_kept():
    labels = np.zeros((64, 64), np.int32)
    labels[10:20, 10:20] = 7
    labels[10:20, 20:30] = 3  # touches label 7: still two objects
    res = quantify(labels, "blobs", 1.0)
    assert sorted(res.objects["label"]) == [3, 7]
    assert np.array_equal(res.labels, labels)


# ---------------------------------------------------------------- lines

@pytest.mark.parametrize("p0,p1", [
    ((100, 20), (100, 220)),   # horizontal
    ((100, 20), (118, 220)),   # 5°: long runs with single steps
    ((20, 120), (220, 120)),   # vertical
    ((20, 20), (220, 220)),    # diagonal
    ((200, 20), (60, 230)),    # 33.7°
    ((220, 100), (20, 180)),   # 68°
])
def test_straight_line_length(p0, p1):
    mask = np.zeros((240, 240), bool)
    true = thick_segment(mask, p0, p1, radius=1)
    res = quantify(mask, "lines", PX)
    assert len(res.objects) == 1
    assert res.objects["length_nm"].iloc[0] == pytest.approx(true * PX, rel=0.015)  # target 3%
    assert res.summary["total_line_length_um"].iloc[0] == pytest.approx(true * PX / 1000,
                                                                       rel=0.03)


@pytest.mark.parametrize("radius", [30, 60, 100])
def test_curved_arc_length(radius):
    size = 2 * radius + 40
    y, x = np.ogrid[:size, :size]
    r = np.hypot(y - size / 2, x - size / 2)
    ring = (np.abs(r - radius) <= 1.5) & (x > size / 2)  # half ring, 3 px wide
    res = quantify(ring, "lines", 1.0)
    # flat-cut ends: thinning stops about half the width (1.5 px) short of each
    assert res.objects["length_nm"].iloc[0] == pytest.approx(math.pi * radius, rel=0.03)


def test_junction_network_is_not_double_counted():
    mask = np.zeros((240, 240), bool)
    total = thick_segment(mask, (120, 20), (120, 220))      # horizontal bar
    total += thick_segment(mask, (20, 120), (118, 120))     # down to it: a T
    total += thick_segment(mask, (122, 120), (200, 40))     # diagonal branch: an X-like node
    total += thick_segment(mask, (20, 20), (100, 60))       # a separate line
    total2 = thick_segment(np.zeros_like(mask), (20, 20), (100, 60))
    res = quantify(mask, "lines", 1.0)
    assert len(res.objects) == 2
    lengths = res.objects.sort_values("length_nm")["length_nm"].to_numpy()
    assert lengths[0] == pytest.approx(total2, rel=0.015)
    assert lengths.sum() == pytest.approx(total, rel=0.015)
    assert res.objects["junctions"].max() >= 1
    assert res.objects.loc[res.objects["length_nm"].idxmax(), "endpoints"] == 4


def test_dislocation_density_from_thickness():
    mask = np.zeros((200, 250), bool)
    length_px = thick_segment(mask, (100, 20), (100, 220))
    res = quantify(mask, "lines", 2.0, thickness_nm=100)
    s = res.summary.iloc[0]
    L_m = length_px * 2.0e-9
    A_m2 = 200 * 250 * (2.0e-9) ** 2
    assert s["dislocation_density_m2"] == pytest.approx(L_m / (A_m2 * 100e-9), rel=0.03)
    assert s["line_density_per_um"] == pytest.approx(
        s["total_line_length_um"] / s["field_area_um2"])
    assert s["thickness_nm"] == 100
    # uncalibrated: no density in m^-2 can exist
    unc = quantify(mask, "lines", None, thickness_nm=100).summary
    assert "dislocation_density_m2" not in unc.columns
    assert unc["total_line_length_px"].iloc[0] == pytest.approx(length_px, rel=0.03)


# ---------------------------------------------------------------- grains

def grid_boundaries(size=256, pitch=32, width=2):
    b = np.zeros((size, size), bool)
    for k in range(pitch, size, pitch):
        b[k - width // 2:k - width // 2 + width, :] = True
        b[:, k - width // 2:k - width // 2 + width] = True
    return b


def test_grain_grid_count_and_size():
    b = grid_boundaries()
    res = quantify(b, "grains", PX)
    s = res.summary.iloc[0]
    assert s["grain_count_including_border"] == 64
    assert s["grain_count"] == 36  # 6 × 6 cells do not touch the edge
    assert s["count_excluding_border"] == 36
    assert s["convex_grain_count"] == 36
    # boundaries are shared out, so inner grains tile 32 × 32 px cells
    inner = res.objects[~res.objects["touches_border"]]
    np.testing.assert_allclose(inner["area_nm2"], 32 * 32 * PX ** 2, rtol=0.01)
    assert s["mean_grain_diameter_nm"] == pytest.approx(2 * math.sqrt(1024 / math.pi) * PX,
                                                        rel=0.01)
    interiors = quantify(b, "grains", PX, fill_boundaries=False, gap_px=0).objects
    np.testing.assert_allclose(interiors.loc[~interiors["touches_border"], "area_nm2"],
                               30 * 30 * PX ** 2)
    interiors = quantify(b, "grains", PX, fill_boundaries=False).objects  # corners rounded
    np.testing.assert_allclose(interiors.loc[~interiors["touches_border"], "area_nm2"],
                               30 * 30 * PX ** 2, rtol=0.01)


def test_grain_frame_drawn_along_the_edge_still_marks_border_grains():
    b = grid_boundaries()
    b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = True  # annotators often draw the frame
    s = quantify(b, "grains", 1.0).summary.iloc[0]
    assert s["grain_count"] == 36 and s["grain_count_including_border"] == 64


def test_grain_gaps_are_closed_and_diagonal_boundaries_separate():
    b = grid_boundaries()
    b[100:103, 63:65] = False  # a 3 px gap in a vertical boundary
    assert quantify(b, "grains", 1.0).summary["grain_count"].iloc[0] == 36
    assert quantify(b, "grains", 1.0, gap_px=0).summary["grain_count"].iloc[0] == 35
    diag = np.zeros((128, 128), bool)
    idx = np.arange(128)
    diag[idx, idx] = True  # a one-pixel 8-connected diagonal still splits the field
    assert quantify(diag, "grains", 1.0, gap_px=0).summary["grain_count_including_border"].iloc[0] == 2


def test_voronoi_grains(rng):
    from skimage.segmentation import find_boundaries

    size, n = 256, 40
    seeds = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[:size, :size]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cells = d.argmin(-1) + 1
    b = find_boundaries(cells, mode="inner")
    res = quantify(b, "grains", 1.0, min_size_px=5)
    # every cell with a non-trivial interior is one grain
    sizes = np.bincount(cells[~b].ravel())
    assert res.summary["grain_count_including_border"].iloc[0] == np.count_nonzero(sizes >= 5)
    inner_truth = set(range(1, n + 1)) - set(np.unique(np.concatenate(
        [cells[0], cells[-1], cells[:, 0], cells[:, -1]])))
    assert res.summary["grain_count"].iloc[0] == len(inner_truth)


# ---------------------------------------------------------------- files, errors, compare

def test_csv_round_trip_and_no_overwrite(tmp_path):
    mask, _, _ = disks_image()
    res = quantify(mask, "blobs", PX, image_name="ü disks, 1")
    path = tmp_path / "objects.csv"
    write_csv(res.objects, path)
    back = pd.read_csv(path)
    assert list(back.columns) == list(res.objects.columns)
    assert back["image"].iloc[0] == "ü disks, 1"
    np.testing.assert_allclose(back["equivalent_diameter_nm"], res.objects["equivalent_diameter_nm"])
    assert back["touches_border"].dtype == bool
    assert back["mean_probability"].isna().all()
    before = path.read_bytes()
    with pytest.raises(TemDefectError, match="already exists"):
        write_csv(res.summary, path)
    assert path.read_bytes() == before
    write_csv(res.summary, path, overwrite=True)
    assert len(pd.read_csv(path)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="dots"), "Unknown kind"),
    (dict(kind="blobs", pixel_size_nm=0), "positive"),
    (dict(kind="blobs", pixel_size_nm="abc"), "not a number"),
    (dict(kind="lines", thickness_nm=-5), "thickness"),
    (dict(kind="blobs", confidence=np.zeros((10, 10))), "same image"),
])
def test_bad_input_raises_one_sentence(kwargs, match):
    with pytest.raises(TemDefectError, match=match):
        quantify(np.zeros((32, 32), bool), **kwargs)


def test_probability_out_of_range_is_refused():
    with pytest.raises(TemDefectError, match="outside 0..1"):
        quantify(np.full((32, 32), 1.5, np.float32), "blobs")


def test_empty_mask_gives_zero_counts():
    res = quantify(np.zeros((32, 32), bool), "blobs", 1.0)
    assert len(res.objects) == 0 and res.summary["count"].iloc[0] == 0
    assert res.summary["number_density_per_um2"].iloc[0] == 0


def test_compare_with_reference():
    truth, _, _ = disks_image()
    lab, _ = ndi.label(truth)
    rows = ndi.center_of_mass(truth, lab, range(1, lab.max() + 1))
    pred = truth.copy()
    for i, (r, _c) in enumerate(rows, start=1):
        if r > 170:
            pred[lab == i] = False   # misses the three bottom disks
    draw_disk(pred, (240, 240), 10)  # one false positive
    cmp = compare(pred, truth, "blobs", PX)
    m = cmp.metrics.iloc[0]
    assert m["count_truth"] == 10 and m["count_pred"] == 8
    assert m["false_positives"] == 1 and m["false_negatives"] == 3 and m["matched"] == 7
    assert (m["count_missed"], m["count_extra"], m["count_merged"], m["count_split"]) == \
        (3, 1, 0, 0)
    assert m["object_f1"] == pytest.approx(2 * 7 / (2 * 7 + 1 + 3))
    assert 0 < m["size_ks"] <= 1 and m["size_wasserstein_nm"] > 0
    same = compare(truth, truth, "blobs", PX).metrics.iloc[0]
    assert same["pixel_f1"] == 1 and same["size_ks"] == 0 and same["size_wasserstein_nm"] == 0
    ov = cmp.overlay
    assert ov.shape == truth.shape + (4,) and ov.dtype == np.uint8
    assert tuple(ov[30, 30]) == (0, 255, 0, 255)       # TP green
    assert tuple(ov[240, 240]) == (0, 0, 255, 255)     # FP blue
    assert tuple(ov[190, 40]) == (255, 0, 0, 255)      # FN red
    assert ov[0, 128, 3] == 0                          # TN transparent


def test_compare_grains_counts():
    truth = grid_boundaries()
    pred = truth.copy()
    pred[:, 128 - 1:128 + 1] = False  # a missed boundary merges pairs of grains
    m = compare(pred, truth, "grains", None).metrics.iloc[0]
    assert m["count_truth"] == 36 and m["count_pred"] == 30
    # the six grains lost are merges, nothing missed or invented
    assert (m["count_missed"], m["count_extra"], m["count_merged"], m["count_split"]) == \
        (0, 0, 6, 0)
    assert m["size_wasserstein_px"] > 0


def test_confusion_overlay_shape_mismatch():
    with pytest.raises(TemDefectError, match="same size"):
        confusion_overlay(np.zeros((4, 4)), np.zeros((5, 5)))


# ---------------------------------------------------------------- synthetic micrographs

def test_synthetic_bubbles_known_diameters():
    from napari_temdefect import synthetic

    want = [4, 5, 6, 7, 8, 9, 10, 11, 12, 6, 8, 10]
    d = synthetic.disks(len(want), want, pixel_size_nm=0.25, size=(256, 256), seed=3)
    res = quantify(d.masks["bubble"], "blobs", d.pixel_size_nm)
    assert len(res.objects) == len(want)
    np.testing.assert_allclose(np.sort(res.objects["equivalent_diameter_nm"]), np.sort(want),
                               rtol=0.02)
    field = 256 * 256 * 0.25 ** 2 * 1e-6
    assert res.summary["number_density_per_um2"].iloc[0] == pytest.approx(len(want) / field,
                                                                         rel=0.01)


def test_synthetic_dislocations_known_lengths():
    from napari_temdefect import synthetic

    m = synthetic.make_micrograph("dislocations", size=256, seed=1, n_dislocations=4)
    res = quantify(m.masks["dislocation"], "lines", m.pixel_size_nm, thickness_nm=80)
    truth = np.sort([o["length_nm"] for o in m.objects["dislocation"]])
    np.testing.assert_allclose(np.sort(res.objects["length_nm"]), truth, rtol=0.03)
    s = res.summary.iloc[0]
    area_m2 = 256 * 256 * (m.pixel_size_nm * 1e-9) ** 2
    assert s["dislocation_density_m2"] == pytest.approx(
        truth.sum() * 1e-9 / (area_m2 * 80e-9), rel=0.03)


def test_synthetic_grains_known_count_and_size():
    from napari_temdefect import synthetic

    g = synthetic.make_micrograph("grains", size=256, seed=2)
    truth = g.labels["grain"]
    res = quantify(g.masks["boundary"], "grains", g.pixel_size_nm)
    s = res.summary.iloc[0]
    assert s["grain_count_including_border"] == truth.max()
    idx = ndi.distance_transform_edt(truth == 0, return_distances=False, return_indices=True)
    filled = truth[tuple(idx)]
    edge = np.unique(np.concatenate([filled[0], filled[-1], filled[:, 0], filled[:, -1]]))
    inner = np.setdiff1d(np.arange(1, truth.max() + 1), edge)
    assert s["grain_count"] == len(inner)
    areas = np.bincount(filled.ravel())[inner]
    assert s["mean_grain_diameter_nm"] == pytest.approx(
        np.mean(2 * np.sqrt(areas / np.pi)) * g.pixel_size_nm, rel=0.02)


@pytest.mark.parametrize("name, kind", [
    ("boundary", "grains"), ("grain boundary", "grains"), ("Grain", "grains"),
    ("bubble", "blobs"), ("void", "blobs"), ("cavity", "blobs"), ("precipitate", "blobs"),
    ("dislocation loop", "blobs"), ("loop", "blobs"),
    ("dislocation", "lines"), ("line", "lines"),
    ("defect", None), ("", None), (None, None),
])
def test_kind_for_class(name, kind):
    from napari_temdefect.quantify import kind_for_class

    assert kind_for_class(name) == kind


# ---------------------------------------------------------------- ignored regions

def test_ignored_pixels_are_outside_the_measured_field():
    """An ignore region is not part of the micrograph that is measured: objects under it are
    not counted, densities and fractions are per the rest, and an object it cuts is flagged
    like one cut by the image edge."""
    from napari_temdefect.constants import IGNORE_LABEL

    mask, diameters, _ = disks_image()
    labels = ndi.label(mask)[0].astype(np.int32)
    # painted over the lower right, as the brush does: it hides the disk at (200, 200) and the
    # right edge of the one at (180, 120)
    labels[140:, 128:] = IGNORE_LABEL
    res = quantify(labels, "blobs", PX)
    s = res.summary.iloc[0]
    kept_px = int(np.count_nonzero(mask)) - int(np.count_nonzero(mask[140:, 128:]))
    ignored_px = 116 * 128
    assert s["ignored_fraction"] == pytest.approx(ignored_px / 256 ** 2)
    assert s["field_area_um2"] == pytest.approx((256 ** 2 - ignored_px) * PX ** 2 * 1e-6)
    assert s["count"] == 9  # (200, 200) is wholly ignored; (180, 120) is cut at column 128
    assert s["area_fraction"] == pytest.approx(kept_px / (256 ** 2 - ignored_px))
    assert s["number_density_per_um2"] == pytest.approx(9 / s["field_area_um2"])
    cut = res.objects.loc[res.objects["touches_border"], "centroid_x_nm"].to_numpy() / PX
    assert cut.size == 1 and cut[0] < 128  # only the half of (180, 120) left of the region
    assert not (res.labels == IGNORE_LABEL).any() and not res.labels[140:, 128:].any()

    # the same field given as exclude= on a plain mask
    exclude = labels == IGNORE_LABEL
    again = quantify(mask, "blobs", PX, exclude=exclude).summary.iloc[0]
    for col in ("count", "count_excluding_border", "area_fraction", "field_area_um2"):
        assert again[col] == pytest.approx(s[col])
    # without an ignore label nothing changes
    plain = quantify(ndi.label(mask)[0].astype(np.int32), "blobs", PX).summary.iloc[0]
    assert plain["ignored_fraction"] == 0 and plain["count"] == 10


def test_ignored_region_separates_grains_and_makes_its_neighbours_border_grains():
    b = grid_boundaries()
    exclude = np.zeros(b.shape, bool)
    exclude[96 - 16:96 + 16, 96 - 16:96 + 16] = True  # covers the junction shared by 4 grains
    b[exclude] = False  # and hides the boundaries there, as an ignore brush over them would
    s = quantify(b, "grains", PX, exclude=exclude).summary.iloc[0]
    assert s["grain_count_including_border"] == 64  # no two grains merge through the region
    assert s["grain_count"] == 36 - 4
    assert s["ignored_fraction"] == pytest.approx(32 * 32 / 256 ** 2)


def test_grains_cut_by_an_ignored_grain_do_not_depend_on_fill_boundaries():
    """An ignore brush over one grain's interior, inside its drawn boundary: the 4 grains that
    share an edge with it are cut by it either way (measuring interiors only used to miss
    them: their interiors stop at the boundary, a few px short of the ignored region)."""
    b = grid_boundaries()
    exclude = np.zeros(b.shape, bool)
    exclude[97:127, 97:127] = True  # the interior of one grain, boundaries left drawn
    counts = [quantify(b, "grains", PX, exclude=exclude, fill_boundaries=fill).summary.iloc[0]
              for fill in (True, False)]
    assert [c["grain_count"] for c in counts] == [36 - 1 - 4] * 2
    assert [c["grain_count_including_border"] for c in counts] == [63, 63]


def test_a_negative_gap_is_one_sentence():
    with pytest.raises(TemDefectError, match="The gap is -2 px"):
        quantify(grid_boundaries(), "grains", PX, gap_px=-2)


def test_split_touching_keeps_given_labels_apart_and_splits_inside_one():
    yy, xx = np.mgrid[:60, :80]
    lab = np.zeros((60, 80), np.int32)
    lab[5:15, 5:15], lab[5:15, 15:25] = 1, 2  # two touching labels, as painted
    # label 5: two overlapping disks painted with one id
    lab[((yy - 40) ** 2 + (xx - 20) ** 2 < 64) | ((yy - 40) ** 2 + (xx - 32) ** 2 < 64)] = 5
    plain = quantify(lab, "blobs", 1.0).objects
    split = quantify(lab, "blobs", 1.0, split_touching=True).objects
    assert sorted(plain["label"]) == [1, 2, 5]
    assert set(split["label"]) >= {1, 2, 5} and len(split) == 4
    areas = dict(zip(split["label"], split["area_nm2"]))
    assert areas[1] == areas[2] == 100  # kept as given, not merged and re-cut
    assert areas[5] + sum(a for k, a in areas.items() if k > 5) == \
        plain.set_index("label").loc[5, "area_nm2"]


def test_label_ids_beyond_32_bits_are_renumbered_with_a_note():
    big = np.zeros((20, 20), np.int64)
    big[2:6, 2:6] = 2 ** 33 + 1  # would wrap to 1 in int32 and merge with object 1
    big[10:15, 10:15] = 1
    r = quantify(big, "blobs", 1.0)
    assert sorted(r.objects["area_nm2"]) == [16, 25]
    assert r.notes and "renumbered" in r.notes[0]
    small = quantify(np.where(big > 1, 7, big), "blobs", 1.0)
    assert sorted(small.objects["label"]) == [1, 7] and not small.notes  # ids kept as given


def test_the_ignore_value_is_never_an_object_id():
    """analyze writes the labels it numbers; with 65535 or more objects, id 65535 read back
    would be taken for the ignore brush and the object dropped."""
    from napari_temdefect.constants import IGNORE_LABEL

    m = np.zeros((1040, 1040), np.uint8)
    m[::4, ::4] = 1  # 67600 one-pixel blobs
    r = quantify(m, "blobs", None, min_size_px=0)
    assert len(r.objects) == 260 * 260
    assert not (r.labels == IGNORE_LABEL).any() and IGNORE_LABEL not in set(r.objects["label"])
    again = quantify(r.labels.astype(np.uint32), "blobs", None, min_size_px=0)
    assert len(again.objects) == len(r.objects)
    assert again.summary.iloc[0]["ignored_fraction"] == 0


def test_a_lines_label_image_is_a_mask_whatever_its_ids():
    """Lines are measured from the mask; a label image that reuses two ids over 24 lines is
    not refused as "not instance labels"."""
    a = np.zeros((256, 256), np.uint8)
    for k in range(24):
        a[5 + 10 * k, 10:240] = 1 + k % 2
    assert quantify(a, "lines", 1.0).summary.iloc[0]["count"] == 24


def test_ignored_region_cuts_lines():
    mask = np.zeros((128, 128), bool)
    thick_segment(mask, (64, 10), (64, 117))
    exclude = np.zeros_like(mask)
    exclude[:, 64:] = True
    res = quantify(mask, "lines", 1.0, exclude=exclude)
    s = res.summary.iloc[0]
    assert s["total_line_length_um"] * 1e3 == pytest.approx(54, abs=2)  # 10 → 63, not 10 → 117
    assert s["field_area_um2"] == pytest.approx(128 * 64 * 1e-6)
    assert bool(res.objects["touches_border"].iloc[0])


def test_everything_ignored_is_one_sentence():
    mask, _, _ = disks_image()
    with pytest.raises(TemDefectError, match="Every pixel is marked ignore"):
        quantify(mask, "blobs", PX, exclude=np.ones(mask.shape, bool))


def test_a_16_bit_0_65535_mask_is_a_mask_not_all_ignored():
    """65535 is the ignore brush only next to other labels; alone it is the white of a 16-bit
    binary mask (MATLAB's im2uint16, many exporters)."""
    from napari_temdefect.constants import IGNORE_LABEL

    mask, diameters, _ = disks_image()
    s = quantify(np.where(mask, IGNORE_LABEL, 0).astype(np.uint16), "blobs", PX).summary.iloc[0]
    assert s["count"] == len(diameters) and s["ignored_fraction"] == 0
    assert s["area_fraction"] == pytest.approx(mask.mean())


@pytest.mark.parametrize("what", ["jpeg", "micrograph", "class mask"])
def test_grey_levels_are_not_taken_for_instance_labels(what, rng):
    """An 8-bit image with many scattered grey values is refused in one sentence instead of
    being measured as one 'object' per grey level."""
    mask, _, _ = disks_image()
    if what == "jpeg":  # ringing around every edge: values near 0 and 255, scattered
        noisy = np.where(mask, 255, 0) + rng.integers(-3, 4, mask.shape) * \
            ndi.binary_dilation(mask ^ ndi.binary_erosion(mask), iterations=2)
        data = np.clip(noisy, 0, 255).astype(np.uint8)
    elif what == "micrograph":
        data = rng.integers(0, 255, mask.shape).astype(np.uint8)
    else:  # 36 blobs of two classes, values 1 and 2: a class mask, not labels
        data = np.zeros(mask.shape, np.uint8)
        for i in range(6):
            for j in range(6):
                data[20 + 40 * i:30 + 40 * i, 20 + 40 * j:30 + 40 * j] = 1 + (i + j) % 2
    with pytest.raises(TemDefectError, match="not a mask or instance labels"):
        quantify(data, "blobs", PX)
    # real instance labels, even after a merge of two objects into one id, are kept
    lab = ndi.label(mask)[0].astype(np.int32)
    lab[lab == 2] = 1
    assert len(quantify(lab, "blobs", PX).objects) == 9


def test_compare_scores_pixels_on_the_masks_as_given():
    """Pixel F1 is the seed paper's, on the masks: a speck below the counting minimum is still a
    wrong pixel (it used to be scored on what counting kept)."""
    truth = np.zeros((64, 64), np.uint8)
    truth[10:20, 10:20] = 1
    pred = truth.copy()
    pred[40:42, 40:42] = 1  # 4 px: dropped from the counts (minimum 5), not from the pixels
    m = compare(pred, truth, "blobs", PX).metrics.iloc[0]
    assert m["count_pred"] == m["count_truth"] == 1
    assert m["pixel_f1"] == pytest.approx(2 * 100 / (2 * 100 + 4))
    b = grid_boundaries()
    speck = b.copy()
    speck[5:7, 5:7] = True  # a 4-px island in a grain: boundary pixels of the mask
    g = compare(speck, b, "grains", PX).metrics.iloc[0]
    assert g["pixel_f1"] == pytest.approx(2 * b.sum() / (2 * b.sum() + 4))


def test_compare_leaves_out_what_the_reference_marks_ignore():
    """A reference annotated with an ignore region is not a claim about that region: what the
    prediction finds there is neither a false positive nor counted."""
    from napari_temdefect.constants import IGNORE_LABEL

    mask, _, _ = disks_image()
    reference = ndi.label(mask)[0].astype(np.int32)
    reference[140:, 128:] = IGNORE_LABEL  # the annotator skipped the lower right
    pred = mask.copy()
    draw_disk(pred, (230, 160), 14)  # something the annotator could not judge
    m = compare(pred, reference, "blobs", PX).metrics.iloc[0]
    assert m["pixel_f1"] == pytest.approx(1.0)
    assert m["object_f1"] == pytest.approx(1.0) and m["false_positives"] == 0
    assert m["count_pred"] == m["count_truth"] == 9
    # without the ignore region the same prediction is wrong there
    plain = compare(pred, ndi.label(mask)[0].astype(np.int32), "blobs", PX).metrics.iloc[0]
    assert plain["false_positives"] == 1 and plain["pixel_f1"] < 1
