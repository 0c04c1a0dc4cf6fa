"""Models: specs, building, checkpoints, bundled registry.

``Model`` couples a torch module with the spec and provenance needed to use and save it::

    model = load_model("bubble")            # bundled, by name
    model = load_model("my_model.safetensors", device="cuda")
    model.module   # torch.nn.Module
    model.spec     # ModelSpec
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TemDefectError
from .checkpoint import (DEFAULT_THRESHOLD, read_checkpoint, read_metadata,
                         recorded_split_touching, recorded_threshold, save_checkpoint)
from .registry import bundled_paths, default_model_name, list_models
from .spec import ARCHITECTURES, ModelSpec

__all__ = [
    "ARCHITECTURES", "Model", "ModelSpec", "create_model", "default_model_name",
    "checkpoint_path", "list_models", "load_model", "model_classes", "model_split_touching",
    "model_threshold", "save_model",
    "DEFAULT_THRESHOLD",
]

@dataclass
class Model:
    """A network ready for inference or fine-tuning."""

    module: object
    spec: ModelSpec
    name: str = "unnamed"
    #: training history: one dict per training round (see training.TrainResult.to_dict)
    history: list = field(default_factory=list)
    parent: str | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def device(self):
        try:
            return next(self.module.parameters()).device
        except StopIteration:  # pragma: no cover
            import torch

            return torch.device("cpu")

    @property
    def threshold(self) -> float:
        """The probability above which a pixel is a defect when the caller does not choose:
        the value the checkpoint records (``metadata["threshold"]``), else 0.5."""
        return recorded_threshold(self.metadata)

    @property
    def split_touching(self) -> bool:
        """Whether the Quantification panel and ``analyze`` split touching blobs by default
        for this model's masks (``metadata["split_touching"]``; False when not recorded)."""
        return recorded_split_touching(self.metadata)

    def to(self, device=None) -> "Model":
        from ..device import resolve_device

        self.module.to(resolve_device(device))
        return self

    def copy_weights(self) -> dict:
        """A CPU copy of the current weights (for Revert)."""
        return {k: v.detach().to("cpu").clone() for k, v in self.module.state_dict().items()}

    def restore_weights(self, state: dict) -> None:
        self.module.load_state_dict(state)

    def clone(self) -> "Model":
        return Model(
            module=copy.deepcopy(self.module), spec=copy.deepcopy(self.spec), name=self.name,
            history=copy.deepcopy(self.history), parent=self.parent, source=self.source,
            metadata=copy.deepcopy(self.metadata),
        )

    def save(self, path, overwrite: bool = False, half: bool = False, **extra) -> Path:
        meta = dict(self.metadata)
        meta.update(extra)
        meta.update(name=self.name, history=self.history, parent=self.parent)
        return save_checkpoint(self.module, self.spec, path, metadata=meta,
                               overwrite=overwrite, half=half)


def create_model(spec: ModelSpec | dict | None = None, *, encoder_weights=None, device=None,
                 name: str = "new model", **spec_kwargs) -> Model:
    """Build a new model from a spec (random init, ImageNet, or a local encoder weights file)."""
    from .build import build_module

    if spec is None:
        spec = ModelSpec(**spec_kwargs)
    elif isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    module = build_module(spec, encoder_weights=encoder_weights)
    model = Model(module=module, spec=spec, name=name,
                  metadata={"encoder_weights": str(encoder_weights) if encoder_weights else None})
    model.module.eval()
    return model.to(device)


def checkpoint_path(name_or_path) -> tuple[Path, str]:
    """(checkpoint file, model name) of a bundled name or a path; one sentence if neither.

    The one place that turns a ``--model`` / widget value into a file: :func:`load_model`,
    :func:`model_threshold` and the batch runner's run key all use it."""
    text = str(name_or_path).strip()
    bundled = bundled_paths()
    path = Path(text).expanduser()
    if text in bundled:
        return bundled[text], text
    if path.is_dir():
        raise TemDefectError(
            f"{text!r} is a folder, not a checkpoint; give the path of a .safetensors file "
            "or a bundled name (see `temdefect models`)."
        )
    if path.exists():
        return path, path.stem
    known = ", ".join(bundled) or "none bundled yet"
    looks_like_path = any(s in text for s in ("/", "\\", ".safetensors", ".pt"))
    what = "No checkpoint file" if looks_like_path else "Unknown model"
    raise TemDefectError(
        f"{what} {text!r}; use a bundled name ({known}; see `temdefect models`) "
        "or the path of a .safetensors checkpoint."
    )


def load_model(name_or_path, device=None) -> Model:
    """Load a bundled model by name, or a checkpoint by path, onto ``device`` (auto by default)."""
    from .build import build_module

    if isinstance(name_or_path, Model):
        return name_or_path.to(device) if device is not None else name_or_path
    path, name = checkpoint_path(name_or_path)
    spec, state, meta = read_checkpoint(path)
    module = build_module(spec, encoder_weights=None)
    # encoder parts that build_module now drops (never run) may be in older checkpoints
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith("encoder.")}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise TemDefectError(
            f"{path.name} does not match its own spec ({spec.arch}/{spec.encoder}): "
            "the checkpoint is damaged or was edited."
        ) from exc
    module.eval()
    extra = {k: v for k, v in meta.items() if k not in ("spec", "history", "parent", "name")}
    model = Model(module=module, spec=spec, name=meta.get("name") or name,
                  history=list(meta.get("history") or []), parent=meta.get("parent"),
                  source=str(path), metadata=extra)
    return model.to(device)


def model_threshold(name_or_model) -> float:
    """The operating threshold of a Model, a bundled name or a checkpoint path, read from the
    checkpoint's metadata without building the network (0.5 when none is recorded)."""
    if isinstance(name_or_model, Model):
        return name_or_model.threshold
    return recorded_threshold(read_metadata(checkpoint_path(name_or_model)[0]))


def model_split_touching(name_or_model) -> bool:
    """Whether a Model, a bundled name or a checkpoint path asks for touching blobs to be
    split when counted, read from the checkpoint's metadata without building the network."""
    if isinstance(name_or_model, Model):
        return name_or_model.split_touching
    return recorded_split_touching(read_metadata(checkpoint_path(name_or_model)[0]))


def model_classes(name_or_model) -> list[str]:
    """The class names of a Model, a bundled name or a checkpoint path, read from the
    checkpoint's metadata without building the network (empty when none are recorded)."""
    if isinstance(name_or_model, Model):
        return list(name_or_model.spec.classes)
    spec = read_metadata(checkpoint_path(name_or_model)[0]).get("spec") or {}
    return list(spec.get("classes") or [])


def save_model(model: Model, path, overwrite: bool = False, half: bool = False, **extra) -> Path:
    return model.save(path, overwrite=overwrite, half=half, **extra)
