"""Batch runs: input expansion, serial run, resuming, failures, montages in blocks."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
from _batch_helpers import disk_image, model_threshold, write_images

from napari_temdefect.batch import BatchSettings, expand_inputs, output_names, run_batch
from napari_temdefect.batch.montage import (open_montage, predict_montage,
                                            quantify_montage_blobs)
from napari_temdefect.errors import TemDefectError


# ----------------------------------------------------------------------------- inputs

def test_folders_globs_and_non_images(tmp_path):
    data = tmp_path / "data"
    write_images(data, 3)
    (data / "notes.txt").write_text("not an image")
    (data / ".hidden.tif").write_bytes(b"")
    write_images(data / "sub", 1)
    out = data / "results"  # output inside the input folder is never taken as input
    write_images(out, 1)

    found = expand_inputs([data], exclude=out)
    assert [p.name for p in found.paths] == ["img0.tif", "img1.tif", "img2.tif"]
    reasons = {p.name: r for p, r in found.skipped}
    assert "notes.txt" in reasons and "sub" in reasons and "results" not in reasons

    deep = expand_inputs([data], recursive=True, exclude=out)
    assert [p.relative_to(data).as_posix() for p in deep.paths] == [
        "img0.tif", "img1.tif", "img2.tif", "sub/img0.tif"]

    # inputs inside the output folder (`analyze raw --out .`): only its images/ is left out
    write_images(tmp_path / "images" / "img0", 1)  # a batch's own outputs
    inside = expand_inputs([data], exclude=tmp_path)
    assert [p.name for p in inside.paths] == ["img0.tif", "img1.tif", "img2.tif"]
    whole = expand_inputs([tmp_path], exclude=tmp_path, recursive=True).paths
    assert len(whole) == 5 and not any(p.relative_to(tmp_path).parts[0] == "images"
                                       for p in whole)

    globbed = expand_inputs([str(data / "img[12].tif"), data / "img1.tif"])
    assert [p.name for p in globbed.paths] == ["img1.tif", "img2.tif"]  # sorted, de-duplicated

    with pytest.raises(TemDefectError, match="does not exist"):
        expand_inputs([tmp_path / "nope"])
    with pytest.raises(TemDefectError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.dm4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TemDefectError, match="No micrographs"):
        expand_inputs([tmp_path / "empty"])


def test_output_names_are_unique(tmp_path):
    paths = [tmp_path / "a" / "img.tif", tmp_path / "b" / "img.tif", tmp_path / "img.dm4",
             tmp_path / "other.tif"]
    names = output_names(paths)
    assert len(set(names)) == 4
    assert names[3] == "other"
    assert names[2] == "img_dm4"


# ----------------------------------------------------------------------------- serial runs

@pytest.fixture
def batch_setup(tmp_path, tiny_model, tiny_checkpoint):
    data = tmp_path / "data"
    paths = write_images(data, 3)
    (data / "broken.tif").write_bytes(b"this is not a TIFF")
    thr = model_threshold(tiny_model, paths[0])
    settings = BatchSettings(model=str(tiny_checkpoint), kind="blobs", tile=128, overlap=16,
                             threshold=thr, device="cpu")
    return data, paths, settings


def test_serial_batch_writes_per_image_and_batch_tables(batch_setup, tmp_path, tiny_model):
    from napari_temdefect.inference import predict
    from napari_temdefect.quantify import quantify

    data, paths, settings = batch_setup
    out = tmp_path / "out"
    result = run_batch([data], out, settings, progress=False)

    assert result.done == ["img0", "img1", "img2"]
    assert [f[0] for f in result.failed] == ["broken"] and not result.ok
    assert "broken.tif" in result.failed[0][2]
    summary = pd.read_csv(out / "summary.csv")
    objects = pd.read_csv(out / "objects.csv")
    assert summary["image"].tolist() == ["img0", "img1", "img2"]
    assert summary["pixel_size_nm"].tolist() == [0.5, 0.5, 0.5]  # from the files' calibration
    assert summary["count"].sum() == len(objects) > 0
    assert objects.groupby("image").size().to_dict() == dict(zip(summary.image, summary["count"]))

    # the same numbers as predicting and quantifying the image by hand
    for path in paths:
        res = predict(tiny_model, tifffile.imread(path), tile=128, overlap=16,
                      threshold=settings.threshold)
        q = quantify(res.mask, "blobs", 0.5, threshold=settings.threshold)
        assert summary.set_index("image").loc[path.stem, "count"] == len(q.objects)
        mask = tifffile.imread(out / "images" / path.stem / f"{path.stem}_mask.tif")
        np.testing.assert_array_equal(mask, res.mask)

    folder = out / "images" / "img0"
    for name in ("img0_mask.tif", "img0_labels.tif", "img0_probability.tif",
                 "img0_confidence.tif", "img0_objects.csv", "img0_summary.csv", "done.json"):
        assert (folder / name).is_file(), name
    from napari_temdefect.io import read_image, map_threshold
    assert map_threshold(read_image(folder / "img0_probability.tif")) == \
        pytest.approx(settings.threshold)  # `temdefect quantify` cuts it where the run did
    failures = pd.read_csv(out / "failures.csv")
    assert failures["image"].tolist() == ["broken"]
    log = (out / "batch.log").read_text()
    assert "FAILED" in log and "broken" in log and log.count("done ") == 3
    assert not (out / "images" / "broken").exists()
    assert not any(out.glob("*.partial.csv"))


def test_a_folder_gathers_every_run_and_never_mixes_two_images(batch_setup, tmp_path):
    """Images analysed into the same folder in separate runs all stay in its tables; a new
    image with the stem of an earlier one gets its own folder instead of replacing it."""
    data, paths, settings = batch_setup
    out = tmp_path / "out"
    assert run_batch([paths[0], paths[1]], out, settings, progress=False).ok
    first = pd.read_csv(out / "summary.csv").set_index("image")
    other = tmp_path / "other"
    other.mkdir()
    same_stem = other / "img0.tif"  # another micrograph with the name of the first one
    same_stem.write_bytes(paths[2].read_bytes())
    result = run_batch([same_stem], out, settings, progress=False)
    assert result.ok and result.done == ["img0-2"]
    summary = pd.read_csv(out / "summary.csv").set_index("image")
    assert summary.index.tolist() == ["img0", "img1", "img0-2"]
    for name in ("img0", "img1"):  # untouched, and still in the batch tables
        assert summary.loc[name, "count"] == first.loc[name, "count"]
    assert summary.loc["img0-2", "file"] == str(same_stem)
    assert (out / "images" / "img0" / "img0_mask.tif").is_file()
    assert set(pd.read_csv(out / "objects.csv")["image"]) <= {"img0", "img1", "img0-2"}
    # a rerun of the first inputs keeps their names and skips them
    again = run_batch([paths[0], paths[1]], out, settings, progress=False)
    assert again.done == [] and sorted(again.skipped) == ["img0", "img1"]
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["img0", "img1", "img0-2"]


def test_archived_inputs_stay_in_the_tables_and_a_missing_map_is_made(batch_setup, tmp_path):
    """Images of an earlier run whose raw files were moved away since stay in the folder's
    tables (their outputs are complete); an image analysed without its probability map is
    redone when a run asks for the map."""
    import shutil

    data, paths, settings = batch_setup
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    shutil.copy(paths[0], first / "a.tif")
    shutil.copy(paths[1], later / "b.tif")
    out = tmp_path / "out"
    assert run_batch([first], out, settings, progress=False).ok
    shutil.move(first, tmp_path / "archived")
    no_map = BatchSettings(**{**settings.__dict__, "save_probability": False})
    assert run_batch([later], out, no_map, progress=False).ok
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["a", "b"]
    assert not (out / "images" / "b" / "b_probability.tif").exists()
    again = run_batch([later], out, settings, progress=False)
    assert again.done == ["b"] and (out / "images" / "b" / "b_probability.tif").is_file()
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["a", "b"]


def test_a_zarr_input_whose_chunks_change_is_redone(tmp_path):
    import zarr

    from napari_temdefect.batch.runner import _source_stamp

    z = zarr.open(str(tmp_path / "m.zarr"), mode="w", shape=(64, 64), chunks=(32, 32),
                  dtype="f4")
    z[:] = 1.0
    before = _source_stamp(tmp_path / "m.zarr")
    time.sleep(0.01)
    z[:32, :32] = 5.0  # one chunk rewritten, metadata untouched
    assert _source_stamp(tmp_path / "m.zarr") != before


def test_a_folder_resumes_from_another_working_directory(batch_setup, tmp_path, monkeypatch):
    """run.json records absolute inputs: relative paths typed in one folder and absolute ones
    later are the same images (they were taken for new ones, renamed img0-2 and redone)."""
    data, paths, settings = batch_setup
    out = tmp_path / "out"
    monkeypatch.chdir(data)
    assert run_batch(["img0.tif", "img1.tif"], out, settings, progress=False).ok
    monkeypatch.chdir(tmp_path)
    again = run_batch([paths[0], paths[1]], out, settings, progress=False)
    assert again.done == [] and sorted(again.skipped) == ["img0", "img1"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["img0", "img1"]


@pytest.mark.parametrize("kwargs", [dict(tile="auto", overlap=0.25), dict(overlap="auto"),
                                    dict(tile=100, overlap=60), dict(tile=0)])
def test_settings_that_predict_accepts_pass_the_early_check(kwargs):
    BatchSettings(model="bubble", **kwargs).check()


def test_a_folder_with_someone_elses_tables_is_refused(batch_setup, tmp_path):
    data, paths, settings = batch_setup
    out = tmp_path / "notes"
    out.mkdir()
    (out / "summary.csv").write_text("my own notes\n")
    with pytest.raises(TemDefectError, match="not from a temdefect analyze batch"):
        run_batch([paths[0]], out, settings, progress=False)
    assert (out / "summary.csv").read_text() == "my own notes\n"
    import dataclasses
    assert run_batch([paths[0]], out, dataclasses.replace(settings, overwrite=True),
                     progress=False).ok


def test_resume_skips_done_images_and_redoes_changed_ones(batch_setup, tmp_path):
    data, paths, settings = batch_setup
    (data / "broken.tif").unlink()
    out = tmp_path / "out"
    first = run_batch([data], out, settings, progress=False)
    assert first.ok and len(first.done) == 3 and not (out / "failures.csv").exists()
    summary_bytes = (out / "summary.csv").read_bytes()
    objects_bytes = (out / "objects.csv").read_bytes()
    marker = out / "images" / "img1" / "done.json"
    marker_time = marker.stat().st_mtime_ns

    again = run_batch([data], out, settings, progress=False)
    assert again.done == [] and again.skipped == ["img0", "img1", "img2"]
    assert (out / "summary.csv").read_bytes() == summary_bytes  # still the whole batch
    assert (out / "objects.csv").read_bytes() == objects_bytes
    assert marker.stat().st_mtime_ns == marker_time

    # an interrupted image (no marker) and a changed input are redone; the rest skipped
    (out / "images" / "img0" / "done.json").unlink()
    time.sleep(0.01)
    tifffile.imwrite(paths[2], disk_image(99), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "nm"})
    third = run_batch([data], out, settings, progress=False)
    assert sorted(third.done) == ["img0", "img2"] and third.skipped == ["img1"]
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["img0", "img1", "img2"]

    # other settings are refused without --overwrite, redone with it
    other = BatchSettings(**{**settings.__dict__, "threshold": settings.threshold + 0.001})
    with pytest.raises(TemDefectError, match="other settings"):
        run_batch([data], out, other, progress=False)
    other.overwrite = True
    redone = run_batch([data], out, other, progress=False)
    assert redone.done == ["img0", "img1", "img2"] and redone.skipped == []
    assert json.loads(marker.read_text())["settings"]["threshold"] == other.threshold


def test_invert_measures_an_inverted_folder_like_the_original(batch_setup, tmp_path):
    data, paths, settings = batch_setup
    (data / "broken.tif").unlink()
    neg = tmp_path / "neg"
    neg.mkdir()
    for path in paths:
        img = tifffile.imread(path)
        tifffile.imwrite(neg / path.name, (img.max() + img.min() - img).astype(img.dtype),
                         imagej=True, resolution=(2.0, 2.0), metadata={"unit": "nm"})
    plain = run_batch([data], tmp_path / "plain", settings, progress=False)
    inverted = BatchSettings(**{**settings.__dict__, "invert": True})
    back = run_batch([neg], tmp_path / "back", inverted, progress=False)
    assert plain.ok and back.ok
    a = pd.read_csv(tmp_path / "plain" / "summary.csv")
    b = pd.read_csv(tmp_path / "back" / "summary.csv")
    assert a["count"].sum() > 0 and a["count"].tolist() == b["count"].tolist()
    wrong = run_batch([neg], tmp_path / "wrong", settings, progress=False)
    assert wrong.ok and not (pd.read_csv(tmp_path / "wrong" / "summary.csv")["count"]
                             == a["count"]).all()
    # invert is a result setting: not resumed into, and a run.json from before it resumes
    with pytest.raises(TemDefectError, match="invert"):
        run_batch([neg], tmp_path / "back", settings, progress=False)
    run_file = tmp_path / "plain" / "run.json"
    record = json.loads(run_file.read_text())
    del record["settings"]["invert"]
    run_file.write_text(json.dumps(record))
    for marker in (tmp_path / "plain" / "images").glob("*/done.json"):
        record = json.loads(marker.read_text())
        del record["settings"]["invert"]
        marker.write_text(json.dumps(record))
    assert run_batch([data], tmp_path / "plain", settings, progress=False).skipped == \
        ["img0", "img1", "img2"]


def test_failure_does_not_stop_the_batch_and_is_retried(batch_setup, tmp_path):
    data, paths, settings = batch_setup
    out = tmp_path / "out"
    (data / "empty.tif").write_bytes(b"")
    result = run_batch([data], out, settings, progress=False)
    assert sorted(f[0] for f in result.failed) == ["broken", "empty"]
    assert len(result.done) == 3
    assert "empty" in pd.read_csv(out / "failures.csv")["image"].tolist()
    # fixing the files: the next run does only them and clears failures.csv
    (data / "broken.tif").unlink()
    tifffile.imwrite(data / "empty.tif", disk_image(7), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "nm"})
    fixed = run_batch([data], out, settings, progress=False)
    assert fixed.ok and fixed.done == ["empty"] and len(fixed.skipped) == 3
    assert not (out / "failures.csv").exists()
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["empty", "img0", "img1", "img2"]


def test_mixed_calibration_keeps_nm_and_px_columns_apart(tmp_path, tiny_model, tiny_checkpoint):
    write_images(tmp_path / "cal", 1, pixel_size_nm=0.5)
    raw = write_images(tmp_path / "raw", 1, pixel_size_nm=None)
    raw[0].rename(tmp_path / "raw" / "plain.tif")
    thr = model_threshold(tiny_model, tmp_path / "cal" / "img0.tif")
    settings = BatchSettings(model=str(tiny_checkpoint), kind="blobs", tile=128, overlap=16,
                             threshold=thr, device="cpu")
    result = run_batch([tmp_path / "cal", tmp_path / "raw"], tmp_path / "out", settings,
                       progress=False)
    assert result.ok
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("image")
    assert summary.loc["img0", "field_area_um2"] > 0 and np.isnan(summary.loc["img0",
                                                                             "field_area_px2"])
    assert np.isnan(summary.loc["plain", "pixel_size_nm"])
    assert summary.loc["plain", "field_area_px2"] == 64 * 80
    assert np.isnan(summary.loc["plain", "field_area_um2"])


def test_an_image_far_from_the_models_magnification_gets_a_note(tmp_path, tiny_model, capsys):
    tiny_model.spec.pixel_size_nm = 0.5  # as train() records from its training set
    ckpt = tiny_model.save(tmp_path / "m.safetensors")
    write_images(tmp_path / "near", 1, pixel_size_nm=0.6)
    far = write_images(tmp_path / "far", 1, pixel_size_nm=2.0)
    far[0].rename(tmp_path / "far" / "far.tif")
    settings = BatchSettings(model=str(ckpt), kind="blobs", tile=128, overlap=16, device="cpu")
    result = run_batch([tmp_path / "near", tmp_path / "far"], tmp_path / "out", settings,
                       progress=False)
    assert result.ok and len(result.done) == 2  # a note, not a failure
    notes = [line for line in capsys.readouterr().err.splitlines() if "note" in line]
    assert len(notes) == 1 and "far.tif" in notes[0] and "4.0× smaller" in notes[0]
    log = (tmp_path / "out" / "batch.log").read_text(encoding="utf-8")
    assert "note: the model learned" in log and log.count("note:") == 1


def test_non_square_pixels_get_a_note_in_the_batch(tmp_path, tiny_model, tiny_checkpoint,
                                                   capsys):
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "aniso.tif", disk_image(4), imagej=True, resolution=(2.0, 1.0),
                     metadata={"unit": "nm"})
    settings = BatchSettings(model=str(tiny_checkpoint), kind="blobs", tile=128, overlap=16,
                             device="cpu", threshold=0.5)
    assert run_batch([data], tmp_path / "out", settings, progress=False).ok
    err = capsys.readouterr().err
    assert "aniso.tif" in err and "pixels are not square (x 0.5, y 1 nm)" in err
    log = (tmp_path / "out" / "batch.log").read_text(encoding="utf-8")
    assert "pixels are not square" in log


# ----------------------------------------------------------------------------- montages

def _disk_mask(shape, disks):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for cy, cx, r in disks:
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return mask


def test_blob_on_block_borders_is_counted_once():
    from napari_temdefect.quantify import quantify

    shape, block = (200, 260), 64
    disks = [(64, 100, 6),      # across a horizontal block border
             (30, 128, 5),      # across a vertical border
             (128, 192, 7),     # on a corner of four blocks
             (100, 30, 4), (5, 5, 3), (195, 255, 4),  # inside / on the image border
             (150, 64, 9)]
    mask = _disk_mask(shape, disks)
    prob = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    objects, summary, report = quantify_montage_blobs(
        mask, pixel_size_nm=0.25, probability=prob, block=block, halo=24, threshold=0.5,
        image_name="m")
    whole = quantify(mask, "blobs", 0.25, probability=prob, threshold=0.5, image_name="m")
    assert len(objects) == len(disks) == len(whole.objects)
    assert report.truncated == 0
    # same objects, same numbers (moments summed at other offsets: rounding only)
    pd.testing.assert_frame_equal(objects, whole.objects.reset_index(drop=True),
                                  check_dtype=False, rtol=1e-9, atol=1e-5)
    pd.testing.assert_frame_equal(summary, whole.summary, check_dtype=False, rtol=1e-9)


def test_objects_larger_than_the_halo_are_reported():
    mask = _disk_mask((200, 200), [(100, 100, 40)])
    objects, _, report = quantify_montage_blobs(mask, block=64, halo=8)
    assert report.truncated >= 1
    objects, _, report = quantify_montage_blobs(mask, block=64, halo=81)  # = its height
    assert report.truncated == 0 and len(objects) == 1
    assert objects["area_px2"].iloc[0] == mask.sum()


def test_montage_in_blocks_matches_whole_image(tmp_path, tiny_model):
    import zarr

    from napari_temdefect.inference import predict
    from napari_temdefect.batch.montage import montage_stats

    img = disk_image(3, shape=(144, 192), n=8)
    z = zarr.open_array(str(tmp_path / "m.zarr"), mode="w", shape=img.shape, chunks=(64, 64),
                        dtype="float32")
    z[:] = img
    z.attrs["pixel_size_nm"] = 0.5
    arr, px = open_montage(tmp_path / "m.zarr")
    assert px == 0.5 and arr.shape == img.shape
    stats = montage_stats(arr, tiny_model.spec.normalization)
    thr = 0.45
    # one tile per call on both sides, so only the block borders can make a difference
    whole = predict(tiny_model, img, tile=512, normalization_stats=stats, threshold=thr)
    report = predict_montage(tiny_model, tmp_path / "m.zarr", tmp_path / "out", block=96,
                             halo=48, tile=256, threshold=thr, device="cpu")
    assert report.blocks == 4
    prob = zarr.open_array(str(tmp_path / "out" / "probability.zarr"), mode="r")
    mask = zarr.open_array(str(tmp_path / "out" / "mask.zarr"), mode="r")
    assert prob.shape == (1, 144, 192) and prob.chunks == (1, 96, 96)
    np.testing.assert_allclose(prob[:], whole.probability, atol=5e-3)
    assert (mask[:] == whole.mask).mean() > 0.999
    with pytest.raises(TemDefectError, match="already exists"):
        predict_montage(tiny_model, tmp_path / "m.zarr", tmp_path / "out", block=96, halo=48,
                        tile=256, threshold=thr, device="cpu")


def test_montage_invert_matches_the_original_montage(tmp_path, tiny_model):
    import zarr

    img = disk_image(3, shape=(144, 192), n=8)
    for name, data in (("m", img), ("neg", img.max() + img.min() - img)):
        z = zarr.open_array(str(tmp_path / f"{name}.zarr"), mode="w", shape=img.shape,
                            chunks=(64, 64), dtype="float32")
        z[:] = data
    kw = dict(block=96, halo=48, tile=256, threshold=0.45, device="cpu")
    predict_montage(tiny_model, tmp_path / "m.zarr", tmp_path / "a", **kw)
    predict_montage(tiny_model, tmp_path / "neg.zarr", tmp_path / "b", invert=True, **kw)
    a = zarr.open_array(str(tmp_path / "a" / "probability.zarr"), mode="r")[:]
    b = zarr.open_array(str(tmp_path / "b" / "probability.zarr"), mode="r")[:]
    np.testing.assert_allclose(b, a, atol=1e-4)


def test_large_tiff_goes_through_the_montage_path(tmp_path, tiny_model, tiny_checkpoint):
    import dask.array as da

    data = tmp_path / "data"
    data.mkdir()
    img = disk_image(5, shape=(128, 144), n=6)
    tifffile.imwrite(data / "big.tif", img, tile=(64, 64), imagej=False,
                     resolution=(2.0, 2.0), resolutionunit="CENTIMETER")
    settings = BatchSettings(model=str(tiny_checkpoint), kind="blobs", tile=256, device="cpu",
                             threshold=0.45, montage_min_pixels=100 * 100, block=96, halo=48,
                             pixel_size_nm=0.5)
    result = run_batch([data], tmp_path / "out", settings, progress=False)
    assert result.ok, result.failed
    folder = tmp_path / "out" / "images" / "big"
    assert (folder / "big_mask.zarr").is_dir() and (folder / "big_probability.zarr").is_dir()
    lazy = da.from_zarr(str(folder / "big_mask.zarr"))
    assert lazy.shape == img.shape and lazy.chunksize == (96, 96)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert summary["count"].iloc[0] == len(objects)
    assert summary["pixel_size_nm"].iloc[0] == 0.5
    # lines are not quantified block-wise: a clear failure, the zarr outputs still written
    lines = BatchSettings(**{**settings.__dict__, "kind": "lines"})
    failed = run_batch([data], tmp_path / "out_lines", lines, progress=False)
    assert not failed.ok and "only blobs" in failed.failed[0][2]


def test_the_montage_path_reads_every_tiff_calibration_and_rgb(tmp_path):
    """open_montage gives a TIFF the pixel size read_image gives it (OME used to fail to open,
    resolution tags in cm were dropped) and reads an RGB TIFF as its luminance."""
    from napari_temdefect.io import read_image

    img = disk_image(5, shape=(96, 128), n=4)
    files = {
        "ome.ome.tif": dict(ome=True, metadata={"PhysicalSizeX": 0.5,
                                                "PhysicalSizeXUnit": "nm",
                                                "PhysicalSizeY": 0.5,
                                                "PhysicalSizeYUnit": "nm"}),
        "ij.tif": dict(imagej=True, resolution=(2.0, 2.0), metadata={"unit": "nm"}),
        "cm.tif": dict(resolution=(2e7, 2e7), resolutionunit="CENTIMETER"),
    }
    for name, kwargs in files.items():
        tifffile.imwrite(tmp_path / name, img, tile=(32, 32), **kwargs)
        arr, px = open_montage(tmp_path / name)
        assert px == pytest.approx(read_image(tmp_path / name).pixel_size_nm) == 0.5, name
        assert arr.shape == img.shape
    rgb = np.stack([img, img, img], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", tile=(32, 32))
    arr, _ = open_montage(tmp_path / "rgb.tif")
    np.testing.assert_allclose(arr.compute(), img, rtol=1e-5)


def test_montage_edge_cases_narrow_last_block_and_long_strip(tmp_path, tiny_model):
    """With no halo, the last block of a 130×65 image is 1 px wide: it is predicted from a
    wider read window (it failed as "needs at least 8×8 px"). A strip over the statistics'
    budget with one short side gets its normalisation from windows that fit it."""
    import zarr

    from napari_temdefect.batch.montage import montage_stats

    img = disk_image(3, shape=(130, 65), n=3)
    report = predict_montage(tiny_model, img, tmp_path / "m", block=64, halo=0,
                             save_probability=False, device="cpu")
    conf = zarr.open_array(str(tmp_path / "m" / "confidence.zarr"), mode="r")
    assert conf.shape == (130, 65) and report.blocks == 6
    assert (np.asarray(conf[:, 64]) > 0).all()  # the 1-px column was predicted and written
    strip = np.random.default_rng(0).random((60, 80_000)).astype(np.float32)
    offset, scale = montage_stats(strip)
    assert np.isfinite(offset) and scale > 0


def test_interrupted_montage_resumes_from_its_finished_blocks(tmp_path, tiny_model):
    import zarr

    from napari_temdefect.errors import CancelledError

    img = disk_image(4, shape=(128, 160), n=6)
    kwargs = dict(block=64, halo=32, tile=128, threshold=0.45, device="cpu", prefix="m_")
    calls = []

    def stop_after_two(done, total):
        calls.append(done)

    with pytest.raises(CancelledError):
        predict_montage(tiny_model, img, tmp_path / "run", progress=stop_after_two,
                        cancel=lambda: len(calls) >= 2, **kwargs)
    assert calls == [1, 2] and not (tmp_path / "run" / "m_mask.zarr").exists()
    assert (tmp_path / "run" / "m_mask.zarr.partial").is_dir()

    calls.clear()
    report = predict_montage(tiny_model, img, tmp_path / "run", progress=stop_after_two,
                             **kwargs)
    assert calls == [3, 4, 5, 6] and report.blocks == 6  # only the blocks left were predicted
    assert not (tmp_path / "run" / "m_blocks_done.json").exists()
    predict_montage(tiny_model, img, tmp_path / "fresh", **kwargs)
    for part in ("mask", "probability", "confidence"):
        resumed = zarr.open_array(str(tmp_path / "run" / f"m_{part}.zarr"), mode="r")
        fresh = zarr.open_array(str(tmp_path / "fresh" / f"m_{part}.zarr"), mode="r")
        np.testing.assert_array_equal(resumed[:], fresh[:])


def test_batch_uses_the_models_operating_threshold_unless_given(tmp_path, tiny_model):
    from napari_temdefect.inference import predict

    data = tmp_path / "data"
    paths = write_images(data, 1)
    thr = round(model_threshold(tiny_model, paths[0]), 4)
    ckpt = tiny_model.save(tmp_path / "thr.safetensors", threshold=thr)
    settings = BatchSettings(model=str(ckpt), kind="blobs", tile=128, overlap=16, device="cpu")
    assert settings.threshold is None
    out = tmp_path / "out"
    run_batch([data], out, settings, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["threshold"] == thr
    mask = tifffile.imread(out / "images" / paths[0].stem / f"{paths[0].stem}_mask.tif")
    expected = predict(tiny_model, tifffile.imread(paths[0]), tile=128, overlap=16,
                       threshold=thr).mask
    np.testing.assert_array_equal(mask, expected)
    assert mask.any()


def test_batch_splits_touching_blobs_when_the_model_says_so_unless_told(tmp_path, tiny_model):
    from napari_temdefect.io import map_split_touching, read_image

    data = tmp_path / "data"
    paths = write_images(data, 1)
    splitting = tiny_model.save(tmp_path / "split.safetensors", split_touching=True)
    plain = tiny_model.save(tmp_path / "plain.safetensors")
    for ckpt, given, expected in ((splitting, None, True), (plain, None, False),
                                  (splitting, False, False)):
        out = tmp_path / f"out-{ckpt.stem}-{given}"
        settings = BatchSettings(model=str(ckpt), kind="blobs", tile=128, overlap=16,
                                 device="cpu", split_touching=given)
        run_batch([data], out, settings, progress=False)
        run = json.loads((out / "run.json").read_text())
        assert run["settings"]["split_touching"] is expected
        # the mask records how its model counts, for a later `temdefect quantify`
        mask = read_image(out / "images" / paths[0].stem / f"{paths[0].stem}_mask.tif")
        assert map_split_touching(mask) is (ckpt == splitting)
