"""The bundled-model scripts import: they share scripts/bundled_data.py, which no other test
loads, so a name it stops defining would otherwise first show up in a long training run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
USERS = ("train_bundled", "evaluate_bundled", "compare_architectures", "transfer_loops",
         "bubble_polarity", "boundary_offsets", "bn_adaptation", "confidence_threshold",
         "fit_own_images", "count_errors", "threshold_ceiling")


@pytest.mark.parametrize("name", USERS)
def test_bundled_model_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    for mod in (name, "bundled_data"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    module = importlib.import_module(name)
    assert callable(module.main)


@pytest.fixture
def train_bundled(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    for mod in ("train_bundled", "bundled_data"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    return importlib.import_module("train_bundled")


def test_confidence_definitions_rank_a_calibrated_models_errors(monkeypatch):
    """For a calibrated model the mask ``p > t`` is wrong with probability 1 − p above t and p
    below, so ``1 − P(mask right)`` ranks its errors best, and entropy centred on t (which
    treats p = t ± ε alike) worst; at t = 0.5 the two entropies are the same."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.delitem(sys.modules, "confidence_threshold", raising=False)
    script = importlib.import_module("confidence_threshold")
    rng = np.random.default_rng(0)
    prob = rng.beta(0.5, 0.5, 200_000).astype(np.float32)
    truth = rng.random(prob.shape) < prob  # calibrated by construction
    low = script.error_aurocs(prob, truth, 0.25)
    assert low["p_right"] >= low["centred_0.5"] > low["centred_t"] + 0.02
    half = script.error_aurocs(prob, truth, 0.5)
    assert abs(half["centred_0.5"] - half["centred_t"]) < 1e-6


def test_threshold_ceiling_bounds_every_threshold_rule(monkeypatch):
    """The area-matching threshold keeps as many pixels as the probabilities sum to, and the
    oracle (best threshold against the labels) is at least as good as 0.5 and the area rule;
    on a model that is calibrated but too wide, the oracle finds the tighter cut."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.delitem(sys.modules, "threshold_ceiling", raising=False)
    script = importlib.import_module("threshold_ceiling")
    rng = np.random.default_rng(1)
    prob = rng.random((64, 64)).astype(np.float32)
    t = script.area_matching_threshold(prob)
    assert (prob > t).sum() == round(float(prob.sum(dtype=np.float64)))
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    truth = r <= 10
    prob = np.clip(1.2 - r / 12.0, 0, 1).astype(np.float32)  # 0.5 at r = 8.4, too narrow
    row = script.ceiling_row(prob, truth)
    assert row["f1_oracle"] >= max(row["f1_0.5"], row["f1_area"])
    assert row["f1_oracle"] > row["f1_0.5"] + 0.05 and row["t_oracle"] < 0.5
    assert row["area_true"] == pytest.approx(truth.mean())


def test_recipe_variants_keep_their_cv_folder_names(train_bundled):
    """The CV folders that evaluate_bundled.py --arch reads are named by Variant.tag; the
    folders of the runs in docs/models.md must keep resolving, and two variants never share one."""
    V = train_bundled.Variant
    assert train_bundled.RECIPE.tag == "unet-resnet18"
    assert V(seed=2).tag == "unet-resnet18-seed2"
    assert V(cldice=0.5).tag == "unet-resnet18-cldice0.5"
    assert V(ema=0.99).tag == "unet-resnet18-ema0.99"
    assert V(ema=0.99).config(10).ema == 0.99 and V().config(10).ema == 0.0
    assert V(invert=0.5).tag == "unet-resnet18-invert0.5"
    assert V(xinit=True).tag == "unet-resnet18-xinit"
    assert V(arch="unet-mobilenet_v2", scale=(0.75, 1.33)).tag == "unet-mobilenet_v2-scale"
    assert V(arch="unet-mobilenet_v2", cont=True).tag == "unet-mobilenet_v2-cont"
    assert V(arch="unet-efficientnet_lite0", random_init=True).tag == \
        "unet-efficientnet_lite0-random"
    assert V(random_init=True).tag == "unet-resnet18"  # resnet18 starts from random anyway
    assert V(patch=512, batch=1).tag == "unet-resnet18-patch512-batch1"
    assert V(cldice=1, seed=1).tag == "unet-resnet18-cldice1-seed1"
    assert V(intensity=2, blur=1.5, shading=0.3).tag == \
        "unet-resnet18-intensity2-blur1.5-shading0.3"
    # the shipped bubble recipe adds appearance augmentation; its folds live under that tag
    recipe_for = train_bundled.recipe_for
    assert recipe_for("bubble").tag == "unet-resnet18-intensity2-blur1.5-shading0.3"
    assert recipe_for("grain-boundary") == recipe_for("generic") == train_bundled.RECIPE
    assert recipe_for("bubble", V(seed=1)).tag == \
        "unet-resnet18-intensity2-blur1.5-shading0.3-seed1"
    assert recipe_for("bubble", V(blur=1.0), given=True).tag == "unet-resnet18-blur1"
    assert V(l2=1e-4).tag == "unet-resnet18-l20.0001"
    assert V(l2=1e-4).config(10).l2 == 1e-4 and V().config(10).l2 == 1e-5
    assert V(images=3, subset=1).tag == "unet-resnet18-n3s1"
    assert V(lovasz=1).tag == "unet-resnet18-lovasz1"
    assert V(lovasz=1).config(10).lovasz_weight == 1 and V().config(10).lovasz_weight == 0
    assert recipe_for("bubble", V(lovasz=1)).tag == \
        "unet-resnet18-lovasz1-intensity2-blur1.5-shading0.3"
    assert V(separation=10).config(10).separation == 10 and V().config(10).separation == 0
    assert recipe_for("bubble", V(separation=10)).tag == \
        "unet-resnet18-separation10-intensity2-blur1.5-shading0.3"
    assert recipe_for("bubble", V(images=2)).tag == \
        "unet-resnet18-intensity2-blur1.5-shading0.3-n2s0"
    assert recipe_for("bubble", V(images=2, seed=1, monitor="val_f1")).tag == \
        "unet-resnet18-intensity2-blur1.5-shading0.3-valf1-n2s0-seed1"
    assert V(monitor="val_f1").config(10).monitor == "val_f1"


def test_learning_curve_subsets_are_disjoint_groups_of_the_training_images(train_bundled):
    names = ["a", "b", "c", "d", "e", "f"]
    V = train_bundled.Variant
    assert V().training_names(names) == names
    assert V(images=3, subset=0).training_names(names) == ["a", "b", "c"]
    assert V(images=3, subset=1).training_names(names) == ["d", "e", "f"]
    with pytest.raises(SystemExit, match="needs 9 training images; this fold has 6"):
        V(images=3, subset=2).training_names(names)


def test_recipe_config_carries_every_variant_field(train_bundled):
    shipped = train_bundled.RECIPE.config(1200)
    assert (shipped.steps, shipped.lr, shipped.batch_size, shipped.patch_size) == (1200, 2e-3, 4, 256)
    assert (shipped.seed, shipped.invert, shipped.cldice_weight, shipped.scale_range) == \
        (0, 0.0, 0.0, None)
    assert (shipped.depth, shipped.freeze_bn, shipped.monitor) == ("all", False, "val_loss")
    c = train_bundled.Variant(seed=3, invert=0.5, cldice=0.25, scale=(0.8, 1.2), patch=384,
                              batch=2).config(50, lr=5e-4)
    assert (c.steps, c.lr, c.seed, c.invert, c.cldice_weight) == (50, 5e-4, 3, 0.5, 0.25)
    assert (tuple(c.scale_range), c.patch_size, c.batch_size) == ((0.8, 1.2), 384, 2)
    assert (shipped.intensity, shipped.blur, shipped.shading) == (1.0, 0.0, 0.0)
    c = train_bundled.Variant(intensity=2, blur=1.5, shading=0.3).config(10)
    assert (c.intensity, c.blur, c.shading) == (2, 1.5, 0.3)


def test_selection_rule_of_the_finetune_harness_is_the_trainers(monkeypatch, tiny_model):
    """finetune_gain_real.py --selection scores 'the weights finetune keeps' from its own
    reading of the history; that reading must pick the step the trainer kept."""

    from napari_temdefect.synthetic import make_micrograph
    from napari_temdefect.training import TrainConfig, TrainingEntry, TrainingSet, finetune

    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.delitem(sys.modules, "finetune_gain_real", raising=False)
    harness = importlib.import_module("finetune_gain_real")
    entries = []
    for seed in (0, 1):
        m = make_micrograph("bubbles", size=(128, 128), seed=seed)
        entries.append(TrainingEntry(m.image, m.class_map()))
    config = TrainConfig(steps=12, batch_size=2, patch_size=64, eval_every=2, seed=0,
                         device="cpu", patience=None)
    result = finetune(tiny_model, TrainingSet(entries), config)
    kept = harness.kept_steps(result.history)
    assert kept["val_loss"] == result.best_step
    assert kept["last"] == 12
    f1s = {h["step"]: h["val_f1"] for h in result.history}
    assert f1s[kept["val_f1"]] == max(f1s.values())
    with pytest.raises(ValueError, match="no tile back"):
        harness.kept_steps([{"step": 3, "val_loss": None, "val_f1": None}])
