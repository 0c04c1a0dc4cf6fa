"""Checkpoints: one ``.safetensors`` file with the weights and JSON metadata in its header.

Metadata (key ``temdefect`` of the safetensors header) holds the model spec (architecture,
encoder, channels, class names, input normalisation, training pixel size), the training history,
the parent model, a description, and the project version. Loading never unpickles: foreign
``.pt/.pth`` files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._version import __version__
from ..constants import as_threshold
from ..errors import TemDefectError
from ..files import atomic_write
from .spec import ModelSpec

META_KEY = "temdefect"
FORMAT_VERSION = 1
#: Operating threshold of a model whose checkpoint records none (the seed paper's).
DEFAULT_THRESHOLD = 0.5


def save_checkpoint(module, spec: ModelSpec, path, *, metadata: dict | None = None,
                    overwrite: bool = False, half: bool = False) -> Path:
    """Atomically write ``module``'s weights and metadata to ``path`` (.safetensors)."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise TemDefectError(f"Save checkpoints as .safetensors (got {path.name!r}).")
    state = {}
    for key, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        if half and t.is_floating_point() and "running_var" not in key:
            t = t.to(torch.float16)
        state[key] = t.clone()
    meta = dict(metadata or {})
    meta.update(format=FORMAT_VERSION, spec=spec.to_dict(), version=__version__)
    with atomic_write(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def read_metadata(path) -> dict:
    """The metadata of a checkpoint without its weights (a safetensors header is read alone)."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            return json.loads(header.get(META_KEY, "{}"))
        except Exception as exc:
            raise TemDefectError(
                f"{path.name} is not a valid checkpoint (corrupt or truncated safetensors file)."
            ) from exc
    return read_checkpoint(path)[2]


def recorded_threshold(metadata: dict | None) -> float:
    """The operating threshold a checkpoint's metadata records (key ``threshold``), else 0.5.

    The bundled models record the threshold chosen by cross-validation (docs/evaluation.md);
    a value outside (0, 1) or not a number is ignored."""
    t = as_threshold((metadata or {}).get("threshold"))
    return DEFAULT_THRESHOLD if t is None else t


def recorded_split_touching(metadata: dict | None) -> bool:
    """Whether a checkpoint asks for touching objects to be counted apart (key
    ``split_touching``, true only when it is the boolean True). The bundled ``bubble`` model
    does: its labels draw touching bubbles now joined, now apart, and counted as bubbles
    (touching ones split) its count matches theirs (docs/evaluation.md)."""
    return (metadata or {}).get("split_touching") is True


def read_checkpoint(path) -> tuple[ModelSpec, dict, dict]:
    """Return (spec, state_dict in float32, metadata) from a checkpoint file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise TemDefectError(f"Checkpoint {path} does not exist; check the path.")
    if path.is_dir():
        raise TemDefectError(f"{path} is a folder; give the .safetensors checkpoint file.")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise TemDefectError(
                f"{path.name} is not a valid checkpoint (corrupt or truncated safetensors file)."
            ) from exc
        if META_KEY not in header:
            raise TemDefectError(
                f"{path.name} holds weights but no napari-temdefect metadata; save it with "
                "napari_temdefect.save_model or give a .pt file with 'spec' and 'state_dict'."
            )
        try:
            meta = json.loads(header[META_KEY])
        except json.JSONDecodeError as exc:
            raise TemDefectError(f"{path.name} has corrupt metadata (bad JSON).") from exc
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TemDefectError(
                f"{path.name} was refused: it is not a safe checkpoint (it may contain code, "
                "or it is corrupt); use a .safetensors checkpoint."
            ) from exc
        if not (isinstance(obj, dict) and isinstance(obj.get("spec"), dict)
                and isinstance(obj.get("state_dict"), dict)):
            raise TemDefectError(
                f"{path.name} is not a napari-temdefect checkpoint: it needs 'spec' and "
                "'state_dict' entries; convert it with napari_temdefect.save_model."
            )
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        state = obj["state_dict"]
        odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
        if odd is not None:
            raise TemDefectError(
                f"{path.name} is not a valid checkpoint: its weight {odd!r} is not a tensor.")
    if not isinstance(meta.get("spec"), dict):
        raise TemDefectError(f"{path.name} has no model spec in its metadata.")
    try:
        spec = ModelSpec.from_dict(meta["spec"])
    except (TypeError, ValueError) as exc:
        raise TemDefectError(f"{path.name} has an invalid model spec ({exc}).") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return spec, state, meta
