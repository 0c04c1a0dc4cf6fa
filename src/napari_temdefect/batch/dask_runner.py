"""Running a batch on a Dask distributed cluster: one task per image.

``--scheduler local:N`` starts a :class:`distributed.LocalCluster` of N worker *processes* with
one thread each, listening on loopback (127.0.0.1) only; ``--scheduler tcp://host:port``
connects to a scheduler that is already running (e.g. one started by dask-jobqueue on Slurm or
PBS; see docs/batch.md). Workers must see the same paths as the client (input files, the
output folder and the checkpoint), as on a cluster's shared file system.

Each worker process loads the model once (module-level cache keyed by checkpoint and device)
and writes the image's outputs itself; only the small per-image tables travel back, streamed
with :func:`distributed.as_completed`, so the client never holds the images.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager

from ..errors import TemDefectError

#: (checkpoint reference, device) -> Model, per worker process
_MODELS: dict = {}
_LOADS = {"count": 0}


def parse_scheduler(text: str) -> tuple[str, object]:
    """``"local"``/``"local:N"`` → ("local", N or None); ``"tcp://h:p"`` → ("address", text)."""
    value = str(text).strip()
    low = value.lower()
    if low == "local" or low.startswith("local:"):
        if low == "local":
            return "local", None
        try:
            n = int(low.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise TemDefectError(f"--scheduler {value!r} needs a worker count of at least 1, "
                                 "e.g. local:2.")
        return "local", n
    if "://" in value and value.split("://", 1)[1]:
        return "address", value
    raise TemDefectError(f"Unknown scheduler {value!r}; use local, local:N or "
                         "tcp://HOST:PORT (the address of a running Dask scheduler).")


@contextmanager
def connect(scheduler):
    """Yield a ``distributed.Client`` for a scheduler string (or an existing Client)."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    kind, value = parse_scheduler(scheduler)
    if kind == "local":
        n = value or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               silence_logs=logging.ERROR)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(value, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise TemDefectError(f"Cannot reach the Dask scheduler at {value} ({exc}); start it "
                             "first (see docs/batch.md) or check the address.") from exc
    try:
        yield client
    finally:
        client.close()


def worker_model(ref: str, device, sha256: str | None = None):
    """The model for ``ref`` on this worker process, loaded on first use only. ``sha256`` (of
    the checkpoint the batch resolved) is part of the key, so a checkpoint re-saved at the
    same path is loaded again by a long-lived worker instead of predicting with the old one."""
    key = (ref, device, sha256)
    model = _MODELS.get(key)
    if model is None:
        from ..models import load_model

        try:  # one torch thread per Dask thread: N workers must not fight over the cores
            from distributed import get_worker

            import torch

            torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
        except (ImportError, ValueError, AttributeError):
            pass
        model = load_model(ref, device=device)
        _MODELS.clear()  # one model per worker: a new batch replaces the old one
        _MODELS[key] = model
        _LOADS["count"] += 1
    return model


def process_task(path: str, name: str, ref: str, settings: dict, out_dir: str, key: dict):
    """The Dask task for one image: returns an ImageOutcome with the small tables only."""
    from .runner import BatchSettings, ImageOutcome, process_image

    worker = f"{os.getpid()}@{socket.gethostname()}"
    try:
        model = worker_model(ref, settings.get("device"), key.get("model_sha256"))
    except Exception as exc:  # noqa: BLE001 - reported per image, the batch goes on
        return ImageOutcome(name, path, "failed", error=f"the worker could not load the model: "
                            f"{exc}", worker=worker, model_loads=_LOADS["count"])
    outcome = process_image(path, name, model, BatchSettings(model=ref, **settings), out_dir,
                            key)
    outcome.worker = worker
    outcome.model_loads = _LOADS["count"]
    return outcome


def run_on_cluster(todo, ref: str, settings, out_dir, key: dict, scheduler):
    """Submit one task per (path, name) and yield the outcomes as they complete."""
    from distributed import as_completed

    from .runner import ImageOutcome

    if not todo:
        return
    plain = settings.to_worker()
    with connect(scheduler) as client:
        futures = {}
        for path, name in todo:
            fut = client.submit(process_task, str(path), name, ref, plain, str(out_dir), key,
                                key=f"temdefect-{name}-{abs(hash((str(path), str(out_dir))))}",
                                pure=False, retries=0)
            futures[fut] = (str(path), name)
        for fut in as_completed(futures):
            path, name = futures.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (memory, segfault…)
                outcome = ImageOutcome(name, path, "failed",
                                       error=f"the Dask task failed: {type(exc).__name__}: {exc}")
            fut.release()
            yield outcome
