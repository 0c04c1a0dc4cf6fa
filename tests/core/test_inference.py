"""Tiled inference: blending maths, tiled == untiled, progress/cancel, awkward inputs,
and a confidence map that marks wrong pixels."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_temdefect.errors import CancelledError, TemDefectError
from napari_temdefect.inference import PredictionResult, predict
from napari_temdefect.inference.confidence import combine, entropy_confidence, tta_agreement
from napari_temdefect.inference.tiling import extract_tile, plan_axis, plan_tiles
from napari_temdefect.metrics import auroc
from napari_temdefect.models import Model, ModelSpec
from napari_temdefect.preprocess import apply_normalization, normalization_stats


class SmallNet(nn.Module):
    """Two 3×3 convolutions: a 5 px receptive field, so tiling should not change the output."""

    def __init__(self, classes=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, classes, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Smoother(nn.Module):
    """A rotation/flip-symmetric 'detector': 3×3 mean, then a steep logistic around 0.5."""

    def __init__(self, gain=8.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return self.gain * (nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - 0.5)


def _model(module, classes=("defect",), depth=3):
    spec = ModelSpec(arch="unet", classes=list(classes), options={"encoder_depth": depth})
    return Model(module=module.eval(), spec=spec, name="test")


@pytest.mark.parametrize("window", ["cosine", "gaussian", "constant"])
@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 32), (257, 64, 16), (50, 64, 8),
                                                  (4096, 1024, 64), (130, 128, 0)])
def test_blending_weights_sum_to_one_everywhere(length, tile, overlap, window):
    plan = plan_axis(length, tile, overlap, multiple=32, kind=window)
    assert plan.tile % 32 == 0 and plan.tile <= max(tile, 32 * -(-length // 32))
    total = np.zeros(length)
    for p, w in zip(plan.positions, plan.weights):
        total[p:p + len(w)] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    # tiles cover the image with at least the requested overlap
    starts, ends = np.array(plan.positions), np.array(plan.positions) + plan.tile
    assert starts[0] == 0 and ends[-1] >= length
    assert np.all(ends[:-1] - starts[1:] >= overlap - 1)


def test_2d_weights_sum_to_one():
    plan = plan_tiles((300, 517), 128, 24)
    total = np.zeros((300, 517))
    for i, j, y0, x0 in plan.tiles():
        wgt = plan.weight(i, j)
        total[y0:y0 + wgt.shape[0], x0:x0 + wgt.shape[1]] += wgt
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_extract_tile_reflects_past_the_edge():
    img = np.arange(20 * 30).reshape(20, 30)
    padded = np.pad(img, ((0, 12), (0, 2)), mode="reflect")
    np.testing.assert_array_equal(extract_tile(img, 0, 0, 32, 32), padded)
    np.testing.assert_array_equal(extract_tile(img, 4, 5, 8, 8), img[4:12, 5:13])


def test_tiled_equals_untiled(rng):
    model = _model(SmallNet())
    img = rng.normal(100, 20, (200, 232)).astype(np.float32)
    whole = predict(model, img, tile=512, device="cpu")
    tiled = predict(model, img, tile=64, overlap=24, device="cpu")
    assert whole.n_tiles == 1 and tiled.n_tiles > 9
    np.testing.assert_allclose(tiled.probability, whole.probability, atol=1e-2)
    assert np.abs(tiled.probability - whole.probability).mean() < 1e-3


def test_single_tile_equals_raw_forward_on_odd_sizes(tiny_model, rng):
    img = rng.integers(0, 255, (75, 101), dtype=np.uint8)  # smaller than one tile, odd sizes
    res = predict(tiny_model, img, device="cpu")
    assert res.probability.shape == (1, 75, 101) and res.mask.shape == (75, 101)
    assert res.tile == (80, 104)  # rounded up to the network's multiple (8 for depth 3)
    offset, scale = normalization_stats(img)
    x = np.pad(apply_normalization(img, offset, scale), ((0, 5), (0, 3)), mode="reflect")
    with torch.inference_mode():
        raw = torch.sigmoid(tiny_model.module(torch.from_numpy(x)[None, None])).numpy()
    np.testing.assert_allclose(res.probability[0], raw[0, 0, :75, :101], atol=1e-5)


def test_unet_tiles_blend_close_to_whole_image(tiny_model, rng):
    img = rng.integers(0, 255, (160, 160), dtype=np.uint8)
    whole = predict(tiny_model, img, tile=256, device="cpu")
    tiled = predict(tiny_model, img, tile=96, overlap=32, device="cpu")
    assert tiled.n_tiles == 4
    assert np.abs(tiled.probability - whole.probability).mean() < 0.05


def test_progress_is_called_per_batch_and_ends_at_total(rng):
    calls = []
    img = rng.random((128, 128)).astype(np.float32)
    res = predict(_model(SmallNet()), img, tile=64, overlap=16, batch_size=2, device="cpu",
                  progress=lambda d, t: calls.append((d, t)))
    total = -(-res.n_tiles // 2)
    assert calls[-1] == (total, total) and len(calls) == total
    assert [d for d, _ in calls] == list(range(1, total + 1))


@pytest.mark.parametrize("use_event", [True, False])
def test_cancel_raises_within_one_batch(rng, use_event):
    img = rng.random((256, 256)).astype(np.float32)
    event = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        event.set()

    cancel = event if use_event else event.is_set
    with pytest.raises(CancelledError):
        predict(_model(SmallNet()), img, tile=64, overlap=16, batch_size=1, device="cpu",
                progress=progress, cancel=cancel)
    assert calls == [1]  # stopped at the next batch after the request


def test_tta_inverts_its_transforms(rng):
    img = rng.random((96, 64)).astype(np.float32)
    img[10:30, 5:20] += 2  # an asymmetric structure: a wrong inverse would move it
    model = _model(Smoother())
    plain = predict(model, img, device="cpu")
    tta = predict(model, img, device="cpu", tta=True)
    np.testing.assert_allclose(tta.probability, plain.probability, atol=1e-5)
    # all members agree on a symmetric model, so confidence is the entropy term alone
    np.testing.assert_allclose(tta.confidence, plain.confidence, atol=1e-5)


def test_confidence_definition_pieces():
    p = np.array([[0.0, 0.5, 1.0, 0.9]], dtype=np.float32)
    np.testing.assert_allclose(entropy_confidence(p), [1.0, 0.0, 1.0, 1 - 0.4689956], atol=1e-4)
    members = np.array([[[0.9]]] * 8 + [[[0.1]]] * 0, dtype=np.float32)  # (T=8, C=1, 1)
    assert tta_agreement(members)[0] == 1.0
    split = np.array([[[0.9]]] * 4 + [[[0.1]]] * 4, dtype=np.float32)
    assert combine(np.ones(1, np.float32), tta_agreement(split))[0] == 0.0


def test_low_confidence_marks_wrong_pixels(rng):
    """On noisy synthetic disks a simple detector errs near edges and in noise; the pixels
    it gets wrong must have clearly lower confidence than those it gets right."""
    yy, xx = np.mgrid[:192, :192]
    truth = np.zeros((192, 192), bool)
    for cy, cx, r in rng.uniform([20, 20, 5], [172, 172, 14], (12, 3)):
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    img = truth * 1.0 + rng.normal(0, 0.9, truth.shape)
    res = predict(_model(Smoother(gain=4.0)), img.astype(np.float32), device="cpu",
                  normalization_stats=(0.0, 1.0), tta=True)
    wrong = (res.mask > 0) != truth
    assert 0.01 < wrong.mean() < 0.3
    assert auroc(1 - res.confidence, wrong) > 0.8
    assert res.confidence[wrong].mean() < res.confidence[~wrong].mean() - 0.2


def test_mask_takes_the_most_probable_class_above_threshold():
    class Fixed(nn.Module):
        def forward(self, x):
            a = torch.zeros_like(x)
            a[..., :, :8] = 3.0    # class 1 sure on the left
            b = torch.zeros_like(x)
            b[..., :, 4:12] = 4.0  # class 2 surer in the middle
            return torch.cat([a, b], 1) - 1.0

    res = predict(_model(Fixed(), classes=("bubble", "loop")), np.zeros((16, 16)), device="cpu")
    assert res.classes == ["bubble", "loop"] and res.probability.shape == (2, 16, 16)
    np.testing.assert_array_equal(res.mask[0], [1] * 4 + [2] * 8 + [0] * 4)
    res = predict(_model(Fixed(), classes=("bubble", "loop")), np.zeros((16, 16)),
                  device="cpu", threshold=0.9)
    np.testing.assert_array_equal(res.mask[0], [0] * 4 + [2] * 8 + [0] * 4)


def test_dtypes_give_the_same_answer(rng):
    model = _model(SmallNet())
    base = rng.integers(0, 200, (64, 80)).astype(np.uint8)
    ref = predict(model, base, device="cpu")
    assert isinstance(ref, PredictionResult)
    assert ref.probability.dtype == np.float32 and ref.confidence.dtype == np.float32
    assert ref.mask.dtype == np.uint8
    for img in (base.astype(np.uint16) * 257, base.astype(np.float32) / 255.0,
                base.astype(np.float64) * 3 - 7, base.astype(np.int16) - 100):
        np.testing.assert_allclose(predict(model, img, device="cpu").probability,
                                   ref.probability, atol=1e-4)


def test_awkward_inputs_work_or_fail_in_one_sentence(rng):
    model = _model(SmallNet())
    gray = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    ref = predict(model, gray, device="cpu").probability
    rgb_gray = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(predict(model, rgb_gray, device="cpu").probability, ref, atol=1e-6)
    colour = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert predict(model, colour, device="cpu").mask.shape == (64, 64)
    assert predict(model, gray > 128, device="cpu").mask.shape == (64, 64)  # bool

    const = predict(model, np.full((40, 40), 7, np.uint16), device="cpu")
    assert np.isfinite(const.probability).all() and np.isfinite(const.confidence).all()

    nan = gray.astype(np.float32)
    nan[10:20, 10:20] = np.nan
    res = predict(model, nan, device="cpu")
    assert np.isfinite(res.probability).all()
    assert (res.confidence[10:20, 10:20] == 0).all() and res.confidence[30:, 30:].max() > 0
    # no data is no defect, whatever the threshold (NaN padding of a montage is never counted)
    low = predict(model, nan, device="cpu", threshold=0.001)
    assert (low.mask[10:20, 10:20] == 0).all() and (low.probability[:, 10:20, 10:20] == 0).all()
    assert low.mask[30:, 30:].any()

    for bad, words in [(rng.random((5, 64, 64)), "2D"), (np.full((32, 32), np.nan), "finite"),
                       (rng.random((4, 64)), "8×8")]:
        with pytest.raises(TemDefectError, match=words) as info:
            predict(model, bad, device="cpu")
        assert "\n" not in str(info.value)
    with pytest.raises(TemDefectError, match="Threshold"):
        predict(model, gray, device="cpu", threshold=1.5)
    with pytest.raises(TemDefectError, match="Overlap"):
        predict(model, gray, device="cpu", tile=64, overlap=0.7)
    with pytest.raises(TemDefectError, match="device"):
        predict(model, gray, device="tpu")
    for option in ("tile", "overlap", "threshold"):
        with pytest.raises(TemDefectError, match=f"(?i){option}.*abc"):
            predict(model, gray, device="cpu", **{option: "abc"})


@pytest.mark.parametrize("tile", [32, 64, 100, 255])
def test_a_small_tile_gets_a_smaller_automatic_overlap(rng, tile):
    """The automatic overlap (64 px on a CPU) was kept for any tile, so --tile 96 failed."""
    model = _model(SmallNet())
    image = rng.random((300, 300)).astype(np.float32)
    res = predict(model, image, device="cpu", tile=tile)
    assert res.overlap == min(64, tile // 4) and res.n_tiles > 1
    whole = predict(model, image, device="cpu").probability  # one tile
    assert np.abs(res.probability - whole).mean() < 0.01  # blended, no seams or holes


def test_given_normalization_stats_are_used(rng):
    model = _model(SmallNet())
    img = rng.integers(0, 255, (64, 64)).astype(np.float32)
    own = predict(model, img, device="cpu")
    same = predict(model, img, device="cpu", normalization_stats=own.normalization)
    np.testing.assert_array_equal(same.probability, own.probability)
    other = predict(model, img, device="cpu", normalization_stats=(0.0, 1000.0))
    assert np.abs(other.probability - own.probability).max() > 0.01
    with pytest.raises(TemDefectError, match="normalization_stats"):
        predict(model, img, device="cpu", normalization_stats=(0.0, 0.0))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_invert_equals_the_model_on_the_contrast_inverted_image(tiny_model, rng, dtype):
    img = rng.gamma(2.0, 30.0, (96, 96)).clip(0, 255).astype(dtype)
    negative = (img.max() - (img - img.min())).astype(dtype)  # the same micrograph, inverted
    plain = predict(tiny_model, img, device="cpu", threshold=0.5)
    back = predict(tiny_model, negative, device="cpu", threshold=0.5, invert=True)
    np.testing.assert_allclose(back.probability, plain.probability, atol=1e-4)
    assert back.inverted and not plain.inverted and "contrast inverted" in back.summary()
    wrong = predict(tiny_model, negative, device="cpu", threshold=0.5)
    assert np.abs(wrong.probability - plain.probability).max() > 0.01
    # with a montage's shared statistics too
    stats = predict(tiny_model, negative, device="cpu").normalization
    again = predict(tiny_model, negative, device="cpu", threshold=0.5, invert=True,
                    normalization_stats=stats)
    np.testing.assert_allclose(again.probability, back.probability, atol=1e-5)


def test_model_given_by_name_or_path(tmp_path, tiny_checkpoint, rng):
    img = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    assert predict(str(tiny_checkpoint), img, device="cpu").mask.shape == (64, 64)
    with pytest.raises(TemDefectError, match="Unknown model 'no-such-model'"):
        predict("no-such-model", img, device="cpu")
    with pytest.raises(TemDefectError, match="needs a model"):
        predict(object(), img, device="cpu")


def test_threshold_defaults_to_the_operating_threshold_the_model_records():
    class Ramp(nn.Module):  # probability rises from left to right: sigmoid(-3) .. sigmoid(3)
        def forward(self, x):
            ramp = torch.linspace(-3.0, 3.0, x.shape[-1]).expand_as(x[:, :1])
            return ramp.contiguous()

    image = np.zeros((16, 64))
    model = _model(Ramp())
    plain = predict(model, image, device="cpu")
    assert plain.threshold == 0.5 and model.threshold == 0.5
    model.metadata["threshold"] = 0.3
    low = predict(model, image, device="cpu")
    assert low.threshold == 0.3
    assert (low.mask > 0).sum() > (plain.mask > 0).sum()
    np.testing.assert_array_equal(low.mask[0] > 0, low.probability[0, 0] > 0.3)
    # an explicit threshold still wins
    np.testing.assert_array_equal(predict(model, image, device="cpu", threshold=0.5).mask,
                                  plain.mask)
    for bad in (1.5, "high", None, 0):  # an unusable recorded value falls back to 0.5
        model.metadata["threshold"] = bad
        assert model.threshold == 0.5


def test_inverting_an_image_with_missing_pixels_keeps_the_others(rng):
    from napari_temdefect.preprocess import invert_image

    img = rng.random((20, 20))
    img[0, 0] = np.nan
    out = invert_image(img)
    assert np.isnan(out[0, 0]) and np.isfinite(out).sum() == 399
    lo, hi = np.nanmin(img), np.nanmax(img)
    np.testing.assert_allclose(out[1:], hi + lo - img[1:])
    counts = np.array([[0, 5], [250, 255]], np.uint8)
    np.testing.assert_array_equal(invert_image(counts), [[255, 250], [5, 0]])


def test_float64_values_beyond_float32_are_normalised_not_zeroed(rng):
    from napari_temdefect.preprocess import normalize_image

    img = rng.random((32, 32))
    big = normalize_image(img * 1e300)
    np.testing.assert_allclose(big, normalize_image(img), atol=1e-5)
