"""Metrics against answers worked out by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temdefect.metrics import (
    auroc, boundary_f1, count_errors, ece, object_f1, pixel_f1,
)


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


def test_count_errors_split_a_count_error_into_missed_extra_merged_and_split():
    truth = np.zeros((20, 40), int)
    truth[2:8, 2:8], truth[2:8, 9:15] = 1, 2      # two neighbours ...
    truth[12:18, 2:8], truth[12:18, 30:36] = 3, 4
    pred = np.zeros_like(truth)
    pred[2:8, 2:15] = 1                           # ... predicted as one: a merge
    pred[12:18, 2:5], pred[12:18, 5:8] = 2, 3     # one object predicted as two: a split
    pred[2:6, 25:28] = 4                          # nothing there: extra; truth 4 is missed
    c = count_errors(pred, truth)
    assert (c.truth, c.pred, c.missed, c.extra, c.merged, c.split) == (4, 4, 1, 1, 1, 1)
    assert c.error == c.extra - c.missed - c.merged + c.split == 0
    # a sliver of overlap with a neighbour (one object drawn a pixel too wide) is no merge
    rim = np.zeros_like(truth)
    rim[2:8, 2:10], rim[2:8, 10:15] = 1, 2
    c = count_errors(rim, truth)
    assert (c.missed, c.extra, c.merged, c.split) == (2, 0, 0, 0) and c.error == -2
    same = count_errors(truth, truth)
    assert (same.missed, same.extra, same.merged, same.split, same.error) == (0, 0, 0, 0, 0)
    empty = count_errors(np.zeros_like(truth), truth)
    assert (empty.missed, empty.pred, empty.error) == (4, 0, -4)
    with pytest.raises(ValueError, match="differ in shape"):
        count_errors(np.zeros((2, 2), int), np.zeros((3, 3), int))
