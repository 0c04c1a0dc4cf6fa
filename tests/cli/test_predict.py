"""`temdefect predict`: three calibrated TIFFs per image, never overwriting without asking."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_temdefect.cli.main import main
from napari_temdefect.inference import predict


def _write_input(path, data, pixel_size_nm=None):
    kwargs = {}
    if pixel_size_nm:
        kwargs = {"resolution": (1 / pixel_size_nm, 1 / pixel_size_nm),
                  "metadata": {"unit": "nm", "axes": "YX"}}
    tifffile.imwrite(path, data, imagej=True, **kwargs)
    return path


def _pixel_size_nm(path):
    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
        return den / num


def test_writes_probability_confidence_and_mask(tmp_path, tiny_model, tiny_checkpoint, rng,
                                                capsys):
    data = rng.integers(0, 4000, (90, 130), dtype=np.uint16)
    a = _write_input(tmp_path / "a.tif", data, pixel_size_nm=0.25)
    b = _write_input(tmp_path / "b.tif", data[:64, :70])
    out = tmp_path / "out"
    status = main(["predict", str(a), str(b), "--model", str(tiny_checkpoint), "--out", str(out),
                   "--device", "cpu", "--tile", "64", "--overlap", "0.25"])
    assert status == 0
    prob = tifffile.imread(out / "a_probability.tif")
    conf = tifffile.imread(out / "a_confidence.tif")
    mask = tifffile.imread(out / "a_mask.tif")
    assert prob.dtype == np.float32 and conf.dtype == np.float32 and mask.dtype == np.uint8
    assert prob.shape == conf.shape == mask.shape == (90, 130)
    expected = predict(tiny_model, data, tile=64, overlap=0.25, device="cpu")
    np.testing.assert_allclose(prob, expected.probability[0], atol=1e-5)
    np.testing.assert_array_equal(mask, expected.mask)
    assert _pixel_size_nm(out / "a_mask.tif") == pytest.approx(0.25, rel=1e-4)
    assert _pixel_size_nm(out / "a_probability.tif") == pytest.approx(0.25, rel=1e-4)
    assert (out / "b_mask.tif").exists() and tifffile.imread(out / "b_mask.tif").shape == (64, 70)
    assert "a.tif" in capsys.readouterr().out


def test_invert_scores_a_contrast_inverted_micrograph_like_the_original(tmp_path, tiny_model,
                                                                       tiny_checkpoint, rng):
    data = rng.integers(0, 4000, (80, 96), dtype=np.uint16)
    neg = _write_input(tmp_path / "neg.tif", (data.max() - (data - data.min())).astype(np.uint16))
    out = tmp_path / "out"
    assert main(["predict", str(neg), "--model", str(tiny_checkpoint), "--out", str(out),
                 "--device", "cpu", "--invert", "--quiet"]) == 0
    expected = predict(tiny_model, data, device="cpu")
    np.testing.assert_allclose(tifffile.imread(out / "neg_probability.tif"),
                               expected.probability[0], atol=1e-4)


def test_existing_outputs_are_kept_without_overwrite(tmp_path, tiny_checkpoint, rng, capsys):
    img = _write_input(tmp_path / "img.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "img_confidence.tif").write_bytes(b"mine")
    args = ["predict", str(img), "--model", str(tiny_checkpoint), "--out", str(out),
            "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "img_confidence.tif already exists" in err and "--overwrite" in err
    assert err.count("\n") == 1
    assert (out / "img_confidence.tif").read_bytes() == b"mine"
    assert not (out / "img_mask.tif").exists()  # nothing was started
    assert main(args + ["--overwrite", "--quiet"]) == 0
    assert tifffile.imread(out / "img_confidence.tif").shape == (64, 64)


@pytest.mark.parametrize("problem,words", [
    ("unknown_model", "Unknown model"),
    ("model_folder", "is a folder, not a checkpoint"),
    ("missing_image", "does not exist"),
    ("stack", "2D"),
    ("same_stem", "same output names"),
])
def test_mistakes_give_one_line(tmp_path, tiny_checkpoint, rng, capsys, problem, words):
    img = _write_input(tmp_path / "img.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    model, images = str(tiny_checkpoint), [str(img)]
    if problem == "unknown_model":
        model = "no-such-model"
    elif problem == "model_folder":
        model = str(tiny_checkpoint.parent)
    elif problem == "missing_image":
        images = [str(tmp_path / "nope.tif")]
    elif problem == "stack":
        images = [str(_write_input(tmp_path / "stack.tif",
                                   rng.integers(0, 255, (3, 40, 40), dtype=np.uint8)))]
    else:
        (tmp_path / "other").mkdir()
        images.append(str(_write_input(tmp_path / "other" / "img.tif",
                                       rng.integers(0, 255, (64, 64), dtype=np.uint8))))
    status = main(["predict", *images, "--model", model, "--out", str(tmp_path / "out"),
                   "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and words in err and err.count("\n") == 1


def test_probability_map_records_its_threshold_and_quantify_cuts_it_there(
        tmp_path, tiny_model, rng):
    """predict writes the (model's) threshold into the probability TIFF; quantify and the
    reader use it, so the saved map gives the same objects as the saved mask."""
    import pandas as pd

    from napari_temdefect.io import read_image, map_threshold
    from napari_temdefect.reader import layer_data

    ckpt = tiny_model.save(tmp_path / "thr.safetensors", threshold=0.45)
    img = _write_input(tmp_path / "img.tif", rng.integers(0, 255, (96, 96), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(img), "--model", str(ckpt), "--out", str(out), "--device",
                 "cpu", "--quiet"]) == 0
    prob_path = out / "img_probability.tif"
    assert map_threshold(read_image(prob_path)) == pytest.approx(0.45)
    assert layer_data(read_image(prob_path))[1]["metadata"]["temdefect"]["threshold"] == \
        pytest.approx(0.45)
    prob = tifffile.imread(prob_path)
    mask = tifffile.imread(out / "img_mask.tif")
    assert np.array_equal(mask > 0, prob > 0.45)
    assert (prob > 0.45).sum() != (prob > 0.5).sum()  # the two cuts differ on this map

    def fraction(path, *extra):
        csv = tmp_path / f"{path.stem}{len(extra)}.csv"
        assert main(["quantify", str(path), "--kind", "blobs", "--min-size", "0", "--out",
                     str(csv), "-q", *extra]) == 0
        s = pd.read_csv(csv.with_name(f"{csv.stem}_summary.csv")).iloc[0]
        return s["area_fraction"], s["threshold"]

    from_mask, _ = fraction(out / "img_mask.tif")
    from_prob, used = fraction(prob_path)
    assert used == pytest.approx(0.45) and from_prob == pytest.approx(from_mask)
    from_prob_05, used = fraction(prob_path, "--threshold", "0.5")
    assert used == 0.5 and from_prob_05 == pytest.approx((prob > 0.5).mean())
    # a probability map from elsewhere (no record) is cut at 0.5
    from napari_temdefect.io import write_tiff
    write_tiff(tmp_path / "other_probability.tif", prob)
    assert fraction(tmp_path / "other_probability.tif")[1] == 0.5


def test_outputs_record_the_model_classes_so_quantify_needs_no_kind(tmp_path, tiny_model, rng,
                                                                    capsys):
    """predict writes the model's classes into the probability map and the mask; quantify
    measures what they say (boundary → grains), the reader passes them on to the Quantification
    panel, and a file without them asks for --kind in one line."""
    import pandas as pd

    from napari_temdefect.io import map_classes, read_image, write_tiff
    from napari_temdefect.reader import layer_data

    tiny_model.spec.classes = ["boundary"]
    ckpt = tiny_model.save(tmp_path / "gb.safetensors")
    img = _write_input(tmp_path / "img.tif", rng.integers(0, 255, (96, 96), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["predict", str(img), "--model", str(ckpt), "--out", str(out), "--device",
                 "cpu", "--quiet"]) == 0
    for name in ("img_probability.tif", "img_mask.tif"):
        assert map_classes(read_image(out / name)) == ["boundary"]
    # the panel presets its kind from these (widgets.quantify.guess_kind)
    meta = layer_data(read_image(out / "img_mask.tif"))[1]["metadata"]
    assert meta["temdefect"]["classes"] == ["boundary"]

    capsys.readouterr()
    csv = tmp_path / "q.csv"
    assert main(["quantify", str(out / "img_mask.tif"), "--out", str(csv)]) == 0
    assert "Measured grains" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "q_summary.csv")["kind"].tolist() == ["grains"]
    assert main(["quantify", str(out / "img_mask.tif"), "--kind", "blobs", "--out",
                 str(tmp_path / "b.csv"), "-q"]) == 0
    assert pd.read_csv(tmp_path / "b_summary.csv")["kind"].tolist() == ["blobs"]

    # evaluate too: the prediction says what it is
    assert main(["evaluate", "--pred", str(out / "img_mask.tif"), "--truth",
                 str(out / "img_mask.tif"), "--out", str(tmp_path / "e.csv")]) == 0
    assert pd.read_csv(tmp_path / "e.csv")["kind"].tolist() == ["grains"]

    write_tiff(tmp_path / "plain.tif", (tifffile.imread(out / "img_mask.tif") > 0)
               .astype(np.uint8))
    assert main(["quantify", str(tmp_path / "plain.tif"), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "records no model class" in err and "pass --kind" in err and err.count("\n") == 1


def test_a_magnification_far_from_the_models_gets_a_note(tmp_path, tiny_model, rng, capsys):
    from napari_temdefect.inference import scale_mismatch

    assert scale_mismatch(0.25, 0.3) is None and scale_mismatch(None, 1.0) is None
    assert scale_mismatch(0.25, None) is None
    assert "4.0× smaller" in scale_mismatch(0.25, 1.0)
    assert "2.0× larger" in scale_mismatch(0.5, 0.25)
    tiny_model.spec.pixel_size_nm = 0.25  # as train() records from its training set
    ckpt = tiny_model.save(tmp_path / "m.safetensors")
    data = rng.integers(0, 4000, (64, 64), dtype=np.uint16)
    near = _write_input(tmp_path / "near.tif", data, pixel_size_nm=0.3)
    far = _write_input(tmp_path / "far.tif", data, pixel_size_nm=1.0)
    plain = _write_input(tmp_path / "plain.tif", data)
    assert main(["predict", str(near), str(far), str(plain), "--model", str(ckpt),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "note" in line]
    assert len(err) == 1 and "far.tif" in err[0] and "0.25 nm/px" in err[0]
    assert (tmp_path / "out" / "far_mask.tif").exists()  # a note, not a refusal
