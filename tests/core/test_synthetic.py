"""The synthetic generator: reproducible, and its masks are where its image shows the objects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_temdefect.errors import TemDefectError
from napari_temdefect.synthetic import disks, make_micrograph, to_uint8


@pytest.mark.parametrize("kind", ["grains", "bubbles", "loops", "dislocations", "grains+bubbles"])
def test_same_seed_same_micrograph_other_seed_differs(kind):
    a = make_micrograph(kind, size=(160, 192), seed=7)
    b = make_micrograph(kind, size=(160, 192), seed=7)
    c = make_micrograph(kind, size=(160, 192), seed=8)
    assert a.image.shape == (160, 192) and a.image.dtype == np.float32
    assert np.array_equal(a.image, b.image)
    for name in a.masks:
        assert a.masks[name].dtype == bool and a.masks[name].shape == (160, 192)
        assert np.array_equal(a.masks[name], b.masks[name])
        assert a.masks[name].any()
    assert not np.array_equal(a.image, c.image)
    assert a.params["seed"] == 7 and a.kind == kind


def test_disks_have_exactly_the_requested_diameters_and_do_not_touch():
    diam = [1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 2.5, 3.5]
    m = disks(len(diam), diam, pixel_size_nm=0.25, size=(200, 200), seed=3)
    objs = m.objects["bubble"]
    assert [o["diameter_nm"] for o in objs] == pytest.approx(diam)
    lab = m.labels["bubble"]
    assert lab.max() == len(diam) and np.array_equal(lab > 0, m.masks["bubble"])
    areas = np.bincount(lab.ravel())[1:]
    r_px = np.array(diam) / 0.25 / 2
    # a rasterised disk's pixel count matches πr² to within its perimeter's quantisation
    assert np.all(np.abs(areas - np.pi * r_px**2) <= 2 * np.pi * r_px * 0.35 + 2)
    eq_d_nm = 2 * np.sqrt(areas / np.pi) * 0.25
    np.testing.assert_allclose(eq_d_nm, diam, atol=0.25)  # within one pixel
    for o in objs:  # wholly inside the image
        cy, cx = o["center_yx"]
        r = o["diameter_px"] / 2
        assert r <= cy <= 200 - r and r <= cx <= 200 - r
    centres = np.array([o["center_yx"] for o in objs])
    radii = np.array([o["diameter_px"] / 2 for o in objs])
    dist = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    assert np.all(dist >= radii[:, None] + radii[None] + m.params["gap_px"])
    assert ndi.label(m.masks["bubble"])[1] == len(diam)


def test_bubble_interiors_are_bright_with_a_dark_rim():
    clean = dict(noise=False, mottling=0.0, bend_contours=0)
    m = disks(12, 4.0, pixel_size_nm=0.25, size=(256, 256), seed=1, **clean)
    img, lab = m.image, m.labels["bubble"]
    inside = lab > 0
    grown = ndi.binary_dilation(inside, iterations=2)
    rim = grown & ~inside
    matrix = ~ndi.binary_dilation(inside, iterations=8)
    for i in range(1, 13):
        near = ndi.binary_dilation(lab == i, iterations=12)
        assert img[lab == i].mean() > img[near & matrix].mean() * 1.05
        ring = rim & ndi.binary_dilation(lab == i, iterations=2)
        assert img[ring].mean() < img[near & matrix].mean() * 0.9
    over = disks(12, 4.0, pixel_size_nm=0.25, size=(256, 256), seed=1, **clean,
                 defocus="over")
    assert over.image[inside].mean() < over.image[matrix].mean()


def test_noisy_bubble_image_still_separates_on_average():
    m = make_micrograph("bubbles", size=(256, 256), seed=4)
    inside = m.masks["bubble"]
    outside = ~ndi.binary_dilation(inside, iterations=6)
    assert m.image[inside].mean() > m.image[outside].mean()
    assert m.image.std() > 0.02  # shot noise and texture are there


def test_grain_boundaries_are_where_grains_meet():
    m = make_micrograph("grains", size=(256, 256), seed=2, noise=False)
    boundary, grains = m.masks["boundary"], m.labels["grain"]
    assert np.array_equal(boundary, grains == 0)
    assert grains.max() >= 8
    # every boundary pixel has at least two different grains within the boundary width
    width = int(np.ceil(m.params["boundary_width_px"])) + 1
    lo = ndi.minimum_filter(np.where(grains > 0, grains, 10**6), size=2 * width + 1)
    hi = ndi.maximum_filter(grains, size=2 * width + 1)
    meet = (lo < hi) & (hi > 0) & (lo < 10**6)
    interior = ~ndi.binary_dilation(boundary, iterations=3)
    assert meet[boundary].mean() > 0.97
    assert not meet[ndi.binary_erosion(grains > 0, iterations=width + 1)].any()
    # boundaries are lines a few px wide: far less area than the grains, and darker than
    # the grain pixels right beside them
    assert 0.03 < boundary.mean() < 0.25
    beside = ndi.binary_dilation(boundary, iterations=3) & ~boundary
    assert m.image[boundary].mean() < m.image[beside].mean()
    assert m.image[interior].std() > 0.05  # grains differ in contrast
    assert {o["label"] for o in m.objects["grain"]} == set(range(1, grains.max() + 1))


def test_grain_labels_are_consecutive_and_mostly_single_regions():
    m = make_micrograph("grains", size=(256, 256), seed=5)
    grains = m.labels["grain"]
    assert set(np.unique(grains)) == set(range(0, grains.max() + 1))
    pieces = [ndi.label(grains == g)[1] for g in range(1, grains.max() + 1)]
    assert np.mean(np.array(pieces) == 1) > 0.9


def test_loops_have_dark_rims_and_exact_axes():
    m = make_micrograph("loops", size=(256, 256), seed=0, n_loops=8,
                        loop_diameters_nm=(5.0, 9.0), noise=False, mottling=0.0)
    lab = m.labels["loop"]
    assert lab.max() == 8 and len(m.objects["loop"]) == 8
    rim = m.masks["loop"] & ~ndi.binary_erosion(m.masks["loop"], iterations=2)
    matrix = ~ndi.binary_dilation(m.masks["loop"], iterations=6)
    assert m.image[rim].mean() < 0.85 * m.image[matrix].mean()
    for o in m.objects["loop"]:
        area_px = (lab == o["label"]).sum()
        a, b = o["major_nm"] / 0.25 / 2, o["minor_nm"] / 0.25 / 2
        assert o["major_nm"] >= o["minor_nm"] and 5.0 <= o["major_nm"] <= 9.0
        assert area_px == pytest.approx(np.pi * a * b, rel=0.15, abs=6)


def test_dislocation_lines_have_known_lengths():
    from skimage.morphology import skeletonize

    m = make_micrograph("dislocations", size=(256, 256), seed=1, n_dislocations=3,
                        line_lengths_nm=(30.0, 50.0))
    lab = m.labels["dislocation"]
    assert lab.max() == 3
    for o in m.objects["dislocation"]:
        assert 30.0 <= o["length_nm"] <= 50.0
        assert o["length_nm"] == pytest.approx(o["length_px"] * 0.25)
        skel = skeletonize(lab == o["label"])
        # skeleton pixel count undercounts diagonal steps and loses ~width/2 at each end
        diag = np.sqrt(2)
        assert o["length_px"] * 0.85 / diag <= skel.sum() <= o["length_px"] * 1.05
    ring = ndi.binary_dilation(m.masks["dislocation"], iterations=8) & \
        ~ndi.binary_dilation(m.masks["dislocation"], iterations=3)
    assert m.image[m.masks["dislocation"]].mean() < 0.85 * m.image[ring].mean()


def test_combined_kinds_keep_objects_apart_and_build_class_maps():
    m = make_micrograph("grains+bubbles+loops", size=(256, 256), seed=3)
    assert set(m.masks) == {"boundary", "bubble", "loop"}
    assert not (m.masks["bubble"] & m.masks["loop"]).any()
    cm = m.class_map(["boundary", "bubble", "loop"])
    assert cm.dtype == np.uint8 and set(np.unique(cm)) <= {0, 1, 2, 3}
    assert np.array_equal(cm == 2, m.masks["bubble"])
    truth = m.truth_labels()
    assert truth.dtype == np.int32
    assert np.array_equal(truth > 0, m.masks["boundary"] | m.masks["bubble"] | m.masks["loop"])
    assert m.pixel_size_nm == 0.25


def test_output_dtypes_and_uint8_helper():
    m = make_micrograph("bubbles", size=(96, 96), seed=0, dtype="uint8")
    assert m.image.dtype == np.uint8 and m.image.max() == 255
    assert make_micrograph("bubbles", size=(96, 96), dtype="uint16").image.dtype == np.uint16
    u = to_uint8(np.linspace(0, 1, 10000, dtype=np.float32).reshape(100, 100))
    assert u.min() == 0 and u.max() == 255


def test_bad_requests_raise_clear_errors():
    with pytest.raises(TemDefectError, match="Unknown synthetic kind"):
        make_micrograph("voids")
    with pytest.raises(TemDefectError, match="Unknown synthetic parameter"):
        make_micrograph("bubbles", bubble_size=3)
    with pytest.raises(TemDefectError, match="fit"):
        disks(200, 8.0, pixel_size_nm=0.25, size=(64, 64))
    with pytest.raises(TemDefectError, match="one per disk"):
        disks(3, [1.0, 2.0, 3.0, 4.0], size=(64, 64))
    with pytest.raises(TemDefectError, match="at least 32"):
        make_micrograph("grains", size=(16, 16))
