"""`temdefect finetune` and `temdefect train` end to end (tiny model, a few steps)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_temdefect.cli.main import main
from napari_temdefect.models import load_model

FAST = ["--steps", "3", "--patch-size", "64", "--batch-size", "2", "--device", "cpu",
        "--val-fraction", "0.25"]


def write_pair(folder, stem, seed, ignore_value=None):
    r = np.random.default_rng(seed)
    img = r.normal(100, 10, (128, 128)).astype(np.float32)
    mask = np.zeros((128, 128), np.uint8)
    yy, xx = np.mgrid[:128, :128]
    for _ in range(6):
        cy, cx = r.integers(10, 118, 2)
        d = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
        mask[d] = 255
        img[d] += 40
    if ignore_value is not None:
        mask[:20, :20] = ignore_value
    tifffile.imwrite(folder / f"{stem}.tif", img)
    tifffile.imwrite(folder / f"{stem}_mask.tif", mask)
    return folder / f"{stem}.tif", folder / f"{stem}_mask.tif", mask


def test_finetune_writes_a_checkpoint_that_predict_loads(tmp_path, tiny_checkpoint, capsys):
    i1, l1, mask = write_pair(tmp_path, "a", 1, ignore_value=128)
    i2, l2, _ = write_pair(tmp_path, "b", 2)
    mask_before = tifffile.imread(l1).copy()
    out = tmp_path / "tuned.safetensors"
    rc = main(["finetune", "--model", str(tiny_checkpoint), "--images", str(i1), str(i2),
               "--labels", str(l1), str(l2), "--out", str(out), "--ignore-value", "128",
               "--depth", "decoder", "--l2-sp", *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "wrote" in captured.out and "step" in captured.err
    tuned = load_model(out, device="cpu")
    rec = tuned.history[-1]
    assert rec["kind"] == "finetune" and rec["data"] == ["a.tif", "b.tif"]
    assert rec["config"]["depth"] == "decoder" and rec["config"]["l2_sp"] is True
    assert tuned.parent == str(tiny_checkpoint)
    assert np.array_equal(tifffile.imread(l1), mask_before)  # labels file untouched

    rc = main(["predict", str(i2), "--model", str(out), "--out", str(tmp_path / "pred"),
               "--device", "cpu", "--quiet"])
    assert rc == 0
    assert (tmp_path / "pred" / "b_mask.tif").exists()

    # no silent overwrite, and the file is unchanged
    stamp = out.stat().st_mtime_ns
    rc = main(["finetune", "--model", str(tiny_checkpoint), "--images", str(i1),
               "--labels", str(l1), "--out", str(out), *FAST])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stamp


def test_finetune_records_the_operating_threshold(tmp_path, tiny_model, capsys):
    """The parent's threshold travels with the weights unless --threshold sets another."""
    parent = tiny_model.save(tmp_path / "parent.safetensors", threshold=0.25)
    assert load_model(parent, device="cpu").threshold == 0.25
    i1, l1, _ = write_pair(tmp_path, "a", 1)
    args = ["finetune", "--model", str(parent), "--images", str(i1), "--labels", str(l1), *FAST]
    assert main([*args, "--out", str(tmp_path / "kept.safetensors")]) == 0
    assert "operating threshold 0.25 (the parent's" in capsys.readouterr().out
    assert load_model(tmp_path / "kept.safetensors", device="cpu").threshold == 0.25
    assert main([*args, "--out", str(tmp_path / "set.safetensors"), "--threshold", "0.5"]) == 0
    assert "operating threshold 0.5 (as --threshold gave)" in capsys.readouterr().out
    assert load_model(tmp_path / "set.safetensors", device="cpu").threshold == 0.5
    # out of range: one line, before any training, nothing written
    assert main([*args, "--out", str(tmp_path / "bad.safetensors"), "--threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--threshold must be between 0 and 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()


@pytest.mark.parametrize("problem, expected", [
    ("count", "give one label file per image"),
    ("empty", "contain no defects"),
    ("shape", "but the image is"),
])
def test_finetune_bad_input_is_one_line_exit_2(tmp_path, tiny_checkpoint, capsys, problem,
                                              expected):
    i1, l1, mask = write_pair(tmp_path, "a", 1)
    labels = [str(l1)]
    if problem == "count":
        labels = [str(l1), str(l1)]
    elif problem == "empty":
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros_like(mask))
        labels = [str(tmp_path / "empty.tif")]
    elif problem == "shape":
        tifffile.imwrite(tmp_path / "small.tif", mask[:64])
        labels = [str(tmp_path / "small.tif")]
    out = tmp_path / "x.safetensors"
    rc = main(["finetune", "--model", str(tiny_checkpoint), "--images", str(i1),
               "--labels", *labels, "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_train_from_scratch_cli(tmp_path, capsys):
    i1, l1, _ = write_pair(tmp_path, "a", 3)
    out = tmp_path / "new.safetensors"
    rc = main(["train", "--images", str(i1), "--labels", str(l1), "--out", str(out),
               "--arch", "unet", "--encoder", "resnet18", "--encoder-depth", "3",
               "--decoder-channels", "16", "8", "4", "--classes", "bubble", "--quiet",
               "--schedule", "cosine", "--invert", "0.5", "--cldice", "0.5", "--lovasz", "1",
               "--separation", "10", "--intensity", "2", "--blur", "1.5", "--shading", "0.3",
               "--full-resolution-skip", "4", *FAST])
    assert rc == 0, capsys.readouterr().err
    model = load_model(out, device="cpu")
    assert model.spec.classes == ["bubble"] and model.spec.options["encoder_depth"] == 3
    assert model.spec.options["full_resolution_skip"] == 4 and hasattr(model.module, "fuse")
    assert model.history[-1]["kind"] == "train" and model.history[-1]["config"]["depth"] == "all"
    config = model.history[-1]["config"]
    assert config["schedule"] == "cosine"
    assert config["invert"] == 0.5 and config["cldice_weight"] == 0.5
    assert config["lovasz_weight"] == 1 and config["separation"] == 10
    assert (config["intensity"], config["blur"], config["shading"]) == (2, 1.5, 0.3)
    rc = main(["train", "--images", str(i1), "--labels", str(l1),
               "--out", str(tmp_path / "bad.safetensors"), "--invert", "2", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "invert is a probability" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "--images", str(i1), "--labels", str(l1),
               "--out", str(tmp_path / "bad.safetensors"), "--separation", "-1", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "separation must be zero or positive" in err
    assert len(err.strip().splitlines()) == 1
    rc = main(["train", "--images", str(i1), "--labels", str(l1),
               "--out", str(tmp_path / "bad.safetensors"), "--blur", "20", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "largest blur" in err and len(err.strip().splitlines()) == 1


def test_train_with_a_seed_gives_the_same_weights_twice(tmp_path, capsys):
    from safetensors.numpy import load_file

    i1, l1, _ = write_pair(tmp_path, "a", 3)
    outs = []
    for run in ("t1", "t2", "t3"):
        out = tmp_path / f"{run}.safetensors"
        seed = "5" if run != "t3" else "6"
        rc = main(["train", "--images", str(i1), "--labels", str(l1), "--out", str(out),
                   "--encoder-depth", "3", "--decoder-channels", "16", "8", "4", "--quiet",
                   "--seed", seed, *FAST])
        assert rc == 0, capsys.readouterr().err
        outs.append(load_file(str(out)))
    t1, t2, t3 = outs
    assert t1.keys() == t2.keys() and all(np.array_equal(t1[k], t2[k]) for k in t1)
    assert any(not np.array_equal(t1[k], t3[k]) for k in t1)  # the seed is the init


def test_ctrl_c_stops_training_and_saves_the_best_weights(tmp_path, tiny_checkpoint, capsys,
                                                          monkeypatch):
    import os
    import signal

    from napari_temdefect.cli import finetune as cli_ft

    i1, l1, _ = write_pair(tmp_path, "a", 3)
    printer = cli_ft.progress_printer

    def press_ctrl_c_at_step_2(enabled):
        show = printer(enabled)

        def hook(ev):
            show(ev)
            if ev.get("event") == "step" and ev["step"] == 2:
                os.kill(os.getpid(), signal.SIGINT)
        return hook

    monkeypatch.setattr(cli_ft, "progress_printer", press_ctrl_c_at_step_2)
    out = tmp_path / "x.safetensors"
    fast = [a if a != "3" else "100000" for a in FAST]
    rc = main(["finetune", "--model", str(tiny_checkpoint), "--images", str(i1),
               "--labels", str(l1), "--out", str(out), *fast])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "saving the best weights so far" in captured.err
    assert "stopped by Ctrl-C" in captured.out and out.exists()
    record = load_model(out, device="cpu").history[-1]
    assert record["reason"] == "cancelled" and record["steps"] < 10
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
