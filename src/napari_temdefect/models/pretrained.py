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


def offline_message(encoder: str) -> str:
    return (
        f"ImageNet weights for encoder {encoder!r} are not in the local cache and the internet "
        "cannot be reached; connect once to let smp download them, or pass a local weights file "
        "(encoder_weights=PATH, CLI --encoder-weights PATH), or use encoder_weights=None."
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


def load_encoder_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local encoder weights file into ``module.encoder``.

    Accepts an encoder-only state dict (timm/torchvision naming as smp uses it) or a whole-model
    state dict whose encoder keys start with ``encoder.``. Classifier keys (``fc.``) are dropped.
    A 3-channel first convolution is summed to the model's input channels, as smp does.
    """
    import torch

    state = read_state_dict(path)
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    encoder = module.encoder
    own = encoder.state_dict()
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
