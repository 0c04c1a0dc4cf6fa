"""Metrics against answers worked out by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temdefect.metrics import auroc, boundary_f1, ece, object_f1, pixel_f1


def line(shape=(40, 40), row=20, width=5, cols=(5, 35)):
    m = np.zeros(shape, bool)
    m[row - width // 2:row - width // 2 + width, cols[0]:cols[1]] = True
    return m


def test_pixel_f1_counts_and_conventions():
    truth = np.zeros((4, 4), bool)
    truth[0, :2] = True
    pred = np.zeros((4, 4), bool)
    pred[0, 1:3] = True
    r = pixel_f1(pred, truth)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1) and r.f1 == pytest.approx(0.5)
    empty = np.zeros((4, 4), bool)
    assert pixel_f1(empty, empty).f1 == 1.0 and pixel_f1(pred, empty).f1 == 0.0


def test_boundary_f1_tolerates_position_and_the_centreline_option_not_width():
    truth = line(width=5)
    shifted = np.roll(truth, 2, axis=0)
    wide = line(width=11)
    assert pixel_f1(shifted, truth).f1 == pytest.approx(0.6)
    assert boundary_f1(shifted, truth, 3).f1 == 1.0
    assert boundary_f1(shifted, truth, 1).f1 < 1.0  # Euclidean, inclusive: 2 px is beyond 1
    assert boundary_f1(truth, truth, 0).f1 == pixel_f1(truth, truth).f1
    # on masks a line drawn twice as wide is forgiven; on centrelines it is the same line
    assert boundary_f1(wide, truth, 3).f1 == 1.0
    assert boundary_f1(wide, truth, 3, centreline=True).f1 == 1.0
    assert boundary_f1(shifted, truth, 1, centreline=True).f1 == 0.0  # centrelines 2 px apart
    far = np.roll(truth, 6, axis=0)
    assert boundary_f1(far, truth, 3).f1 > 0 and boundary_f1(far, truth, 3, centreline=True).f1 == 0


def test_boundary_f1_leaves_ignored_pixels_out_of_the_distances():
    truth = np.zeros((10, 10), bool)
    pred = np.zeros((10, 10), bool)
    truth[0, 0] = truth[8, 8] = True
    pred[0, 1] = pred[8, 8] = True
    ignore = np.zeros((10, 10), bool)
    ignore[0, 0] = True  # the true pixel next to the predicted (0, 1) is ignored
    r = boundary_f1(pred, truth, 3, ignore=ignore)
    assert r.precision == pytest.approx(0.5) and r.recall == 1.0  # (0, 1) is no longer right


def test_ece_is_weighted_by_bin_counts_and_skips_nan():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    t = np.array([0, 1, 1, 1])
    # bins: 0.1 (n=2, mean truth 0.5: |0.1-0.5|), 0.9 (n=2, 1.0: |0.9-1|)
    assert ece(p, t, bins=10) == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    assert ece(np.array([0.1, np.nan]), np.array([0, 0]), bins=10) == pytest.approx(0.1)
    assert np.isnan(ece(p, t, ignore=np.ones(4, bool)))


def test_auroc_ties_and_one_class():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5, 0.5], [0, 1, 1]) == pytest.approx(0.5)
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_object_f1_matches_one_to_one_at_iou():
    truth = np.zeros((20, 20), int)
    truth[2:6, 2:6], truth[10:14, 10:14] = 1, 2
    pred = np.zeros((20, 20), int)
    pred[2:6, 3:7] = 5            # IoU 12/20 = 0.6 with object 1
    pred[10:12, 10:12] = 6        # IoU 4/16 with object 2: too small to match
    r = object_f1(pred, truth, iou=0.5)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
