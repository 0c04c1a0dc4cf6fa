"""Label editing operations on hand-made label arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_temdefect import corrections as C
from napari_temdefect.constants import IGNORE_LABEL
from napari_temdefect.errors import TemDefectError

IGN = IGNORE_LABEL


def _labels():
    lab = np.zeros((20, 20), dtype=np.uint16)
    lab[2:6, 2:6] = 1          # 16 px
    lab[10, 10] = 2            # 1 px
    lab[12:15, 2:5] = 3        # 9 px
    lab[0:2, 15:20] = IGN      # ignore
    return lab


def test_remove_small_keeps_big_objects_and_ignore():
    lab = _labels()
    out = C.remove_small(lab, 10)
    assert set(np.unique(out)) == {0, 1, IGN}
    assert np.array_equal(out[lab == 1], lab[lab == 1])
    assert np.all(out[lab == IGN] == IGN)
    assert np.array_equal(C.remove_small(lab, 9), np.where(lab == 2, 0, lab))
    assert np.array_equal(lab, _labels())  # input untouched


def test_fill_holes_per_object_keeps_ids_and_other_objects():
    lab = np.zeros((12, 24), dtype=np.uint16)
    lab[1:8, 1:8] = 4
    lab[3:5, 3:5] = 0            # empty hole: filled
    lab[1:10, 12:21] = 7
    lab[3:8, 14:19] = 0          # hole holding another object: left alone
    lab[5, 16] = 9
    out = C.fill_holes(lab)
    assert np.all(out[1:8, 1:8] == 4)
    assert np.array_equal(out[:, 11:], lab[:, 11:])
    # background outside objects is never filled
    assert out[11, 0] == 0 and out[0, 0] == 0


def test_delete_object_by_position_and_label():
    lab = _labels()
    out = C.delete_object(lab, position=(3.2, 4.6))
    assert not np.any(out == 1) and np.any(out == 3)
    assert np.array_equal(C.delete_object(lab, label=3), np.where(lab == 3, 0, lab))
    assert np.array_equal(C.delete_object(lab, position=(19, 19)), lab)  # background: no-op
    assert np.array_equal(C.delete_object(lab, position=(50, 50)), lab)  # outside: no-op
    with pytest.raises(TemDefectError):
        C.delete_object(lab)


def test_deleting_on_an_ignore_mark_clears_only_that_mark():
    lab = _labels()
    lab[15:20, 15:20] = IGN  # a second ignore region
    out = C.delete_object(lab, position=(1, 17))
    assert not np.any(out[0:2, 15:20] == IGN) and np.all(out[15:20, 15:20] == IGN)
    assert np.array_equal(out[lab != IGN], lab[lab != IGN])
    with pytest.raises(TemDefectError, match="selected label is the ignore label"):
        C.delete_object(lab, label=IGN)


def test_merge_touching_all_and_selected():
    lab = np.zeros((10, 10), dtype=np.uint16)
    lab[1:4, 1:4] = 5
    lab[1:4, 4:6] = 2      # touches 5 along an edge
    lab[4, 6] = 8          # touches 2 at a corner
    lab[8:10, 8:10] = 3    # alone
    out = C.merge_touching(lab)
    assert set(np.unique(out[lab > 0])) == {2, 3}
    assert np.all(out[(lab == 5) | (lab == 8)] == 2)
    sel = C.merge_touching(lab, ids=[3, 5])
    assert np.all(sel[(lab == 3) | (lab == 5)] == 3) and np.all(sel[lab == 2] == 2)


def test_merge_touching_leaves_ignore_alone():
    lab = np.zeros((6, 6), dtype=np.uint16)
    lab[0:2, 0:2] = 1
    lab[0:2, 2:4] = IGN
    lab[0:2, 4:6] = 2
    out = C.merge_touching(lab)
    assert np.array_equal(out, lab)


def test_split_ignore_and_relabel():
    lab = _labels()
    defects, ignore = C.split_ignore(lab)
    assert ignore.sum() == 10 and not np.any(defects == IGN)
    assert list(C.object_ids(lab)) == [1, 2, 3]
    seq = C.relabel_sequential(np.where(lab == 2, 0, lab))
    assert set(np.unique(seq)) == {0, 1, 2, IGN}


def test_mask_from_probability_multiclass():
    prob = np.zeros((2, 4, 4), np.float32)
    prob[0, 0, 0] = 0.9
    prob[1, 0, 0] = 0.6
    prob[1, 1, 1] = 0.7
    prob[0, 2, 2] = 0.3
    m = C.mask_from_probability(prob, 0.5)
    assert m[0, 0] == 1 and m[1, 1] == 2 and m[2, 2] == 0
    assert C.mask_from_probability(prob, 0.25)[2, 2] == 1


def _blob_probability():
    """Two blobs with radial probability falloff, so the threshold changes their size."""
    yy, xx = np.mgrid[0:64, 0:64]
    p1 = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 60.0)
    p2 = np.exp(-((yy - 44) ** 2 + (xx - 44) ** 2) / 60.0)
    return np.maximum(p1, p2).astype(np.float32)[None]


def test_rethreshold_keeps_manual_edits():
    prob = _blob_probability()
    model_05 = C.mask_from_probability(prob, 0.5)
    labels = C.instances_from_mask(model_05).astype(np.uint16)
    # user edits: paint a new object, erase the right half of blob 2, mark an ignore strip
    labels[55:60, 5:10] = labels.max() + 1
    erased = (np.mgrid[0:64, 0:64][1] >= 44) & (labels == labels[44, 44])
    labels[erased] = 0
    labels[0:3, 30:40] = IGN
    blob1_id = labels[16, 16]

    for t in (0.2, 0.8):
        out = C.rethreshold(prob, t, labels, model_05)
        new_model = C.mask_from_probability(prob, t) > 0
        assert np.all(out[55:60, 5:10] > 0) and np.all(out[55:60, 5:10] != IGN)  # added kept
        assert np.all(out[erased] == 0)                                          # erasure kept
        assert np.all(out[0:3, 30:40] == IGN)                                    # ignore kept
        assert out[16, 16] == blob1_id                                           # id kept
        # elsewhere the objects follow the new threshold
        untouched = ~C.edits_from(model_05, labels).edited
        assert np.array_equal((out > 0)[untouched], new_model[untouched])
    # lower threshold grows blob 1, higher shrinks it
    low, high = C.rethreshold(prob, 0.2, labels, model_05), C.rethreshold(prob, 0.8, labels, model_05)
    assert (low == blob1_id).sum() > (labels == blob1_id).sum() > (high == blob1_id).sum()


def test_edits_round_trip_at_same_threshold_is_identity():
    prob = _blob_probability()
    model = C.mask_from_probability(prob, 0.5)
    labels = C.instances_from_mask(model).astype(np.uint16)
    labels[30:33, 30:33] = 7
    labels[0:2, 0:2] = IGN
    out = C.apply_edits(model, C.edits_from(model, labels), previous=labels)
    assert np.array_equal(out, labels)


def _two_peaks(gap=3.0):
    """Two blobs whose skirts meet between them: separate at 0.5, one component at 0.2."""
    y, x = np.mgrid[0:40, 0:60]
    return np.maximum(np.exp(-((y - 20) ** 2 + (x - 20) ** 2) / 60),
                      np.exp(-((y - 20) ** 2 + (x - 20 - 10 * gap) ** 2) / 60)) \
        .astype(np.float32)


def test_rethreshold_keeps_the_users_splits_and_merges():
    """Re-thresholding rebuilt objects from connected parts: two touching objects that the
    user had given different ids became one, and objects merged with Merge ids fell apart."""
    prob = _two_peaks()
    model = C.mask_from_probability(prob, 0.5)
    labels = C.instances_from_mask(model).astype(np.uint16)
    assert set(np.unique(labels)) == {0, 1, 2}
    split = labels.copy()
    split[(split == 1) & (np.mgrid[0:40, 0:60][1] >= 20)] = 3  # blob 1 cut in two by hand
    for t in (0.5, 0.3):
        out = C.rethreshold(prob, t, split, model)
        assert set(np.unique(out[split == 1])) == {1} and set(np.unique(out[split == 3])) == {3}
    merged = C.merge_touching(labels, ids=[1, 2])  # two separate blobs, one object
    for t in (0.5, 0.4, 0.6):
        out = C.rethreshold(prob, t, merged, model)
        assert set(np.unique(out)) == {0, 1}


def test_rethreshold_keeps_objects_apart_that_grow_into_each_other():
    prob = _two_peaks(gap=2.0)
    model = C.mask_from_probability(prob, 0.5)
    labels = C.instances_from_mask(model).astype(np.uint16)
    low = C.rethreshold(prob, 0.05, labels, model)
    assert C.instances_from_mask(low > 0).max() == 1  # one connected region at 0.05
    assert set(np.unique(low)) == {0, 1, 2}  # still two objects, each grown from its own
    assert low[20, 20] == labels[20, 20] and low[20, 40] == labels[20, 40]


def test_rethreshold_gives_a_piece_cut_off_by_a_higher_threshold_its_own_id():
    y, x = np.mgrid[0:40, 0:60]
    prob = np.maximum(np.exp(-((y - 20) ** 2 + (x - 15) ** 2) / 40),
                      np.exp(-((y - 20) ** 2 + (x - 40) ** 2) / 40)).astype(np.float32)
    prob = np.maximum(prob, np.where(np.abs(y - 20) <= 1, 0.45, 0)).astype(np.float32)
    model = C.mask_from_probability(prob, 0.4)  # two blobs joined by a bridge at 0.45
    labels = C.instances_from_mask(model).astype(np.uint16)
    assert labels.max() == 1
    high = C.rethreshold(prob, 0.5, labels, model)  # the bridge goes: two objects
    assert len(set(np.unique(high)) - {0}) == 2 and 1 in high


def test_a_deleted_object_stays_deleted_at_a_lower_threshold():
    prob = _two_peaks()
    model = C.mask_from_probability(prob, 0.5)
    labels = C.instances_from_mask(model).astype(np.uint16)
    gone = C.delete_object(labels, position=(20, 50))  # a false positive, deleted
    low = C.rethreshold(prob, 0.3, gone, model)
    assert set(np.unique(low)) == {0, 1}  # no ring of it comes back as a new object
    assert (low == 1).sum() > (gone == 1).sum()  # the kept object grows as usual


def test_edits_shape_mismatch_is_a_clear_error():
    with pytest.raises(TemDefectError, match="shape"):
        C.edits_from(np.zeros((4, 4)), np.zeros((5, 5), np.uint16))


def _training():
    training = pytest.importorskip("napari_temdefect.training.dataset")
    if not hasattr(training, "TrainingEntry"):
        pytest.skip("training core (issue 4 item 2) has not landed yet")
    return training


def test_to_training_entry_marks_edited_pixels_and_ignore():
    training = _training()
    prob = _blob_probability()
    model = C.mask_from_probability(prob, 0.5)
    labels = C.instances_from_mask(model).astype(np.uint16)
    labels[55:60, 5:10] = 9
    labels[0:3, 30:40] = IGN
    before = labels.copy()
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    entry = C.to_training_entry(image, labels, prob, threshold=0.5, name="img", pixel_size_nm=0.5)
    assert isinstance(entry, training.TrainingEntry)
    assert np.array_equal(labels, before)
    assert set(np.unique(np.asarray(entry.labels))) <= {0, 1}
    assert np.array_equal(np.asarray(entry.labels) > 0, (labels > 0) & (labels != IGN))
    assert np.array_equal(np.asarray(entry.ignore), labels == IGN)
    if hasattr(entry, "edited"):
        edited = np.asarray(entry.edited)
        assert edited[55:60, 5:10].all() and edited[0:3, 30:40].all() and not edited[16, 16]


def test_to_training_entry_refuses_bad_input():
    _training()
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(TemDefectError, match="no defects"):
        C.to_training_entry(image, np.zeros((32, 32), np.uint16))
    with pytest.raises(TemDefectError, match="shape"):
        C.to_training_entry(image, np.ones((16, 16), np.uint16))


def test_instances_by_class_never_share_an_id_across_classes():
    """Objects of two classes that touch get two ids; a 0/255 mask is one class; a custom
    labeller (the watershed split the defects layer uses for a bubble model) is applied per
    class."""
    cm = np.zeros((40, 40), np.uint8)
    cm[5:15, 5:15] = 1
    cm[5:15, 15:25] = 2  # touches the class-1 square
    cm[30:35, 30:35] = 1
    ids = C.instances_by_class(cm)
    assert ids.dtype == np.int32 and len(np.unique(ids[ids > 0])) == 3
    assert ids[10, 10] != ids[10, 20]
    mask255 = (cm > 0).astype(np.uint8) * 255
    assert len(np.unique(C.instances_by_class(mask255))) == 3  # 2 components + background
    halves = C.instances_by_class(cm, lambda b: np.where(b, 1 + (np.arange(40) >= 10), 0))
    assert len(np.unique(halves[cm == 1])) == 2 and len(np.unique(halves[cm == 2])) == 1
