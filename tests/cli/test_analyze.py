"""`temdefect analyze`: exit codes, outputs, resuming and user errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_temdefect.cli.main import main


def _images(folder, n=2):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(100, 8, (64, 72)).astype(np.float32)
        img[20:30, 20:32] += 50
        tifffile.imwrite(folder / f"m{i}.tif", img, imagej=True, resolution=(4.0, 4.0),
                         metadata={"unit": "nm"})
    return folder


def _args(data, out, ckpt, *extra):
    return ["analyze", str(data), "--model", str(ckpt), "--kind", "blobs", "--out", str(out),
            "--tile", "128", "--overlap", "16", "--device", "cpu", "--threshold", "0.4", "-q",
            *extra]


def test_analyze_writes_tables_and_resumes(tmp_path, tiny_checkpoint, capsys):
    data, out = _images(tmp_path / "data"), tmp_path / "out"
    assert main(_args(data, out, tiny_checkpoint)) == 0
    err = capsys.readouterr().err
    assert "2 done" in err and "summary.csv" in err
    summary = pd.read_csv(out / "summary.csv")
    assert summary["image"].tolist() == ["m0", "m1"]
    assert summary["pixel_size_nm"].tolist() == [0.25, 0.25]
    assert (out / "objects.csv").is_file()
    assert (out / "images" / "m1" / "m1_mask.tif").is_file()

    assert main(_args(data, out, tiny_checkpoint)) == 0
    assert "0 done, 2 already done" in capsys.readouterr().err
    assert main(_args(data, out, tiny_checkpoint, "--overwrite")) == 0
    assert "2 done" in capsys.readouterr().err

    # --pixel-size overrides the files; other settings in the same folder are refused
    assert main(_args(data, out, tiny_checkpoint, "--pixel-size", "0.5")) == 2
    assert "other settings" in capsys.readouterr().err
    out2 = tmp_path / "out2"
    assert main(_args(data, out2, tiny_checkpoint, "--pixel-size", "0.5", "--no-probability")) == 0
    assert pd.read_csv(out2 / "summary.csv")["pixel_size_nm"].tolist() == [0.5, 0.5]
    assert not (out2 / "images" / "m0" / "m0_probability.tif").exists()


def test_analyze_failure_exit_status_and_glob(tmp_path, tiny_checkpoint, capsys):
    data, out = _images(tmp_path / "data"), tmp_path / "out"
    (data / "zz_corrupt.tif").write_bytes(b"\x00" * 100)
    assert main(_args(str(data / "*.tif"), out, tiny_checkpoint)) == 1
    err = capsys.readouterr().err
    assert "zz_corrupt.tif failed" in err and "1 FAILED" in err
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["m0", "m1"]
    assert pd.read_csv(out / "failures.csv")["image"].tolist() == ["zz_corrupt"]


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "1.5"], "outside (0, 1)"),
    (["--scheduler", "slurm"], "Unknown scheduler"),
    (["--pixel-size", "-1"], "not positive"),
    # a setting that would fail on every image is one usage error before any work
    (["--tile", "17"], "too small"),
    (["--overlap", "0.7"], "half a tile"),
    (["--overlap", "100"], "more than half the tile"),
    (["--batch-size", "-1"], "use 1 or more"),
    (["--min-size", "-3"], "negative"),
    (["--class", "nosuch"], "has no class 'nosuch'"),
    (["--block", "10", "--montage-mpx", "0.001"], "Block 10 px"),
])
def test_analyze_user_errors(tmp_path, tiny_checkpoint, capsys, extra, message):
    data = _images(tmp_path / "data", 2)
    out = tmp_path / "out"
    assert main(_args(data, out, tiny_checkpoint, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / "failures.csv").exists() and not (out / "images").exists()


def test_analyze_missing_input_and_model(tmp_path, tiny_checkpoint, capsys):
    assert main(_args(tmp_path / "nothing", tmp_path / "out", tiny_checkpoint)) == 2
    assert "does not exist" in capsys.readouterr().err
    data = _images(tmp_path / "data", 1)
    assert main(_args(data, tmp_path / "out", tmp_path / "missing.safetensors")) == 2
    assert "No checkpoint file" in capsys.readouterr().err


def test_analyze_kind_comes_from_the_model_class(tmp_path, tiny_model, capsys):
    """Without --kind, a model whose class says what it finds is measured that way; one whose
    class does not (generic's 'defect') is refused in one line that names --kind."""
    data = _images(tmp_path / "data", 1)
    tiny_model.spec.classes = ["boundary"]
    grains = tiny_model.save(tmp_path / "gb.safetensors")
    args = ["analyze", str(data), "--model", str(grains), "--tile", "128", "--overlap", "16",
            "--device", "cpu", "-q"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "measuring grains" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["kind"].tolist() == ["grains"]
    # --kind overrides the model's class
    assert main([*args, "--out", str(tmp_path / "out2"), "--kind", "blobs"]) == 0
    assert pd.read_csv(tmp_path / "out2" / "summary.csv")["kind"].tolist() == ["blobs"]

    tiny_model.spec.classes = ["defect"]
    vague = tiny_model.save(tmp_path / "vague.safetensors")
    args[3] = str(vague)
    assert main([*args, "--out", str(tmp_path / "out3")]) == 2
    err = capsys.readouterr().err
    assert "does not say what to measure; pass --kind" in err and "Traceback" not in err
    assert not (tmp_path / "out3" / "summary.csv").exists()


def test_analyze_follows_the_models_split_and_says_so(tmp_path, tiny_model, capsys):
    """A model that records split_touching (the bundled bubble model) is counted with touching
    blobs apart, and analyze says so on stderr; --no-split turns it off (recorded in run.json)."""
    import json

    data = _images(tmp_path / "data", 1)
    tiny_model.spec.classes = ["bubble"]
    ckpt = tiny_model.save(tmp_path / "b.safetensors", split_touching=True)
    args = ["analyze", str(data), "--model", str(ckpt), "--tile", "128", "--overlap", "16",
            "--device", "cpu", "-q"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "touching blobs are counted apart" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["settings"][
        "split_touching"] is True
    assert main([*args, "--out", str(tmp_path / "out2"), "--no-split"]) == 0
    assert "counted apart" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out2" / "run.json").read_text())["settings"][
        "split_touching"] is False
