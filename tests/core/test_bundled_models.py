"""The bundled models: listed by `temdefect models`, loadable by name, and above a floor F1 on
one real micrograph.

The floors come from docs/evaluation.md: they sit below the lowest per-image pixel F1 that the
cross-validated models reached on held-out images, with margin. The image used here *was seen in
training by the shipped model* (every image was, see scripts/train_bundled.py), so this test is a
guard against broken weights, loading or preprocessing, not an estimate of accuracy on unseen
micrographs; that estimate is the cross-validation in docs/evaluation.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_temdefect.models.registry import bundled_paths

BUNDLED = ("grain-boundary", "bubble", "generic")
#: model -> (data folder, image, floor on pixel F1 at threshold 0.5)
FLOORS = {
    # measured 2026-12-01/02 on the shipped (resnet18) weights: grain-boundary 0.679, bubble
    # 0.890, generic 0.877; lowest held-out CV image (docs/evaluation.md): grain-boundary 0.661,
    # bubble 0.825 (generic: not cross-validated)
    "grain-boundary": ("uo2_grain_boundaries", "gb9", 0.62),
    "bubble": ("he_bubbles", "bubble3", 0.80),
    "generic": ("he_bubbles", "bubble3", 0.75),
}
#: grain-boundary on gb9 at its operating threshold: CHAC-style grain count against the truth's.
#: Held out, the CV model was within 10 % on gb9 and within 32 % on its worst image; the
#: shipped model counts 177 grains against 178 (2026-12-01).
GRAIN_COUNT_TOLERANCE = 0.2


def _read(shared_data, folder, name):
    from skimage import io

    image = io.imread(shared_data / folder / "images" / f"{name}.jpg")
    mask = io.imread(shared_data / folder / "masks" / f"{name}.png")
    return image, (mask[..., 0] if mask.ndim == 3 else mask) > 0


def test_all_three_are_bundled_and_listed(capsys):
    from napari_temdefect.cli.main import main

    assert set(BUNDLED) <= set(bundled_paths())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in BUNDLED:
        assert any(line.startswith(name + " ") for line in out.splitlines()), out


def test_bundled_models_fit_in_the_wheel_budget():
    total = sum(bundled_paths()[n].stat().st_size for n in BUNDLED)
    assert total <= 30e6


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_metadata(name):
    from napari_temdefect.models import load_model

    model = load_model(name, device="cpu")
    assert model.name == name
    assert model.metadata["description"]
    assert "2507.16779" in model.metadata["provenance"]
    assert model.spec.pixel_size_nm is None  # the training images are uncalibrated
    assert model.history and model.history[-1]["kind"] == "train"
    assert model.history[-1]["steps"] > 0


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_reaches_floor_f1_on_real_image(name, shared_data):
    from napari_temdefect import predict
    from napari_temdefect.metrics import pixel_f1
    from napari_temdefect.models import load_model

    folder, image_name, floor = FLOORS[name]
    image, truth = _read(shared_data, folder, image_name)
    result = predict(load_model(name, device="cpu"), image, device="cpu", threshold=0.5)
    f1 = pixel_f1(result.mask > 0, truth).f1
    assert f1 >= floor, f"{name} on {image_name}: pixel F1 {f1:.3f} < floor {floor}"
    # and it is not a trivial all-defect answer
    assert np.mean(result.mask > 0) < 0.6


def test_bubble_model_finds_over_focus_bubbles_with_invert(shared_data):
    """An over-focus micrograph (dark bubbles, bright fringe; here bubble3 inverted) with
    ``invert=True`` scores like the under-focus original."""
    from napari_temdefect import predict
    from napari_temdefect.metrics import pixel_f1
    from napari_temdefect.models import load_model

    image, truth = _read(shared_data, "he_bubbles", "bubble3")
    negative = (image.max() - (image - image.min())).astype(image.dtype)
    result = predict(load_model("bubble", device="cpu"), negative, device="cpu", threshold=0.5,
                     invert=True)
    f1 = pixel_f1(result.mask > 0, truth).f1
    assert f1 >= FLOORS["bubble"][2], f"bubble on inverted bubble3, invert=True: F1 {f1:.3f}"


def test_bundled_models_record_their_cross_validated_operating_threshold():
    from napari_temdefect.models import load_model

    for name in ("grain-boundary", "bubble"):
        model = load_model(name, device="cpu")
        cv = model.metadata["cv_metrics"]
        assert cv["threshold"] == model.threshold and 0 < model.threshold < 1
        assert cv["tuning_folds"] == [0] and cv["at_threshold_untuned_folds"]["images"] > 0
    # thin boundaries need a threshold below 0.5 to stay closed
    assert load_model("grain-boundary", device="cpu").threshold < 0.5


def test_grain_count_at_the_operating_threshold_is_close_to_the_truth(shared_data):
    from napari_temdefect import predict
    from napari_temdefect.models import load_model
    from napari_temdefect.quantify import quantify

    image, truth = _read(shared_data, "uo2_grain_boundaries", "gb9")
    model = load_model("grain-boundary", device="cpu")
    result = predict(model, image, device="cpu")  # the model's own threshold
    assert result.threshold == model.threshold
    count = quantify(result.mask > 0, "grains").summary["grain_count"].iloc[0]
    true = quantify(truth, "grains").summary["grain_count"].iloc[0]
    assert abs(count - true) <= GRAIN_COUNT_TOLERANCE * true, (count, true)
