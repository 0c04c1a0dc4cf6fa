"""A batch on a Dask LocalCluster (two worker processes on loopback) equals the serial run."""

from __future__ import annotations

import pandas as pd
import pytest
from _batch_helpers import model_threshold, write_images

from napari_temdefect.batch import BatchSettings, run_batch
from napari_temdefect.batch.dask_runner import parse_scheduler
from napari_temdefect.errors import TemDefectError

pytestmark = pytest.mark.slow  # two worker processes start in 10-30 s on 2 busy cores


def test_parse_scheduler():
    assert parse_scheduler("local") == ("local", None)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "slurm", "tcp://"):
        with pytest.raises(TemDefectError):
            parse_scheduler(bad)


def test_cluster_run_equals_serial_run(tmp_path, tiny_model, tiny_checkpoint):
    from distributed import LocalCluster

    from napari_temdefect.cli.main import main

    data = tmp_path / "data"
    paths = write_images(data, 2)
    (data / "broken.tif").write_bytes(b"not a TIFF")
    thr = model_threshold(tiny_model, paths[0])
    settings = BatchSettings(model=str(tiny_checkpoint), kind="blobs", tile=128, overlap=16,
                             threshold=thr, device="cpu")
    serial = run_batch([data], tmp_path / "serial", settings, progress=False)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        dask = run_batch([data], tmp_path / "dask", settings, scheduler=address,
                         progress=False)
        # the same through the command line, into a third folder
        rc = main(["analyze", str(data), "--model", str(tiny_checkpoint), "--kind", "blobs",
                   "--out", str(tmp_path / "cli"), "--tile", "128", "--overlap", "16",
                   "--threshold", str(thr), "--device", "cpu", "--scheduler", address, "-q"])
    assert rc == 1  # broken.tif failed, the others went on

    assert sorted(dask.done) == sorted(serial.done) == ["img0", "img1"]
    assert [f[0] for f in dask.failed] == ["broken"]
    # each worker process loaded the model once, however many images it did
    assert sum(w["images"] for w in dask.workers.values()) == 3
    assert all(w["model_loads"] == 1 for w in dask.workers.values()), dask.workers
    for name in ("summary.csv", "objects.csv"):
        ref = pd.read_csv(tmp_path / "serial" / name)
        for run in ("dask", "cli"):
            got = pd.read_csv(tmp_path / run / name)
            # masks and counts are exact; the float means differ in the last digits, since a
            # worker computes with 1 thread and the serial run with 2 (reduction order)
            pd.testing.assert_frame_equal(got, ref, rtol=1e-4)
    assert len(pd.read_csv(tmp_path / "serial" / "objects.csv")) > 0
    assert pd.read_csv(tmp_path / "dask" / "failures.csv")["image"].tolist() == ["broken"]


def test_a_worker_reloads_a_checkpoint_resaved_at_the_same_path(tmp_path, tiny_model):
    from napari_temdefect.batch.dask_runner import worker_model
    import torch

    from napari_temdefect.batch.runner import sha256_file

    path = tiny_model.save(tmp_path / "m.safetensors")
    first = worker_model(str(path), "cpu", sha256_file(path))
    assert worker_model(str(path), "cpu", sha256_file(path)) is first  # loaded once
    with torch.no_grad():
        next(tiny_model.module.parameters()).add_(1.0)
    tiny_model.save(path, overwrite=True)
    second = worker_model(str(path), "cpu", sha256_file(path))
    assert second is not first
    assert not torch.equal(next(second.module.parameters()), next(first.module.parameters()))
