"""Shared fixtures. Tests run on 2 CPU cores without a GPU; GUI tests run under Xvfb
(pytest-xvfb starts it) and use napari's ``make_napari_viewer`` fixture."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def shared_data() -> Path:
    """The real labelled TEM images beside the checkout (skips if absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_model():
    """A small randomly initialised U-Net (fast on CPU)."""
    import torch

    from napari_temdefect.models import create_model

    torch.manual_seed(0)
    return create_model(arch="unet", encoder="resnet18", device="cpu", name="tiny",
                        options={"encoder_depth": 3, "decoder_channels": (32, 16, 8)})


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model) -> Path:
    return tiny_model.save(tmp_path / "tiny.safetensors")


@pytest.fixture
def finetune_and_repredict(qtbot):
    """``run(widget)``: press the Fine-tune widget's button, wait for training, then for the
    re-prediction it starts."""
    def run(widget):
        worker = widget.start()
        assert worker is not None
        with qtbot.waitSignal(worker.finished, timeout=120_000):
            pass
        qtbot.waitUntil(lambda: widget.inference_worker is not None, timeout=10_000)
        with qtbot.waitSignal(widget.inference_worker.finished, timeout=120_000):
            pass
    return run
