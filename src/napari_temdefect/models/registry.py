"""Bundled models: checkpoints shipped inside the package, loadable by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import read_metadata, recorded_threshold

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Preferred default for the widget and CLI, first one present wins.
DEFAULT_ORDER = ("generic", "bubble", "grain-boundary")


@dataclass
class ModelInfo:
    name: str
    path: Path
    description: str
    classes: list[str]
    arch: str
    encoder: str
    size_mb: float
    #: operating threshold recorded in the checkpoint (0.5 when none is)
    threshold: float = 0.5


def bundled_paths() -> dict[str, Path]:
    return {p.name[: -len(".safetensors")]: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def list_models() -> list[ModelInfo]:
    """Describe every bundled model without building it (reads the safetensors header only)."""
    infos = []
    for name, path in bundled_paths().items():
        meta = read_metadata(path)
        spec = meta.get("spec", {})
        infos.append(ModelInfo(
            name=name, path=path, description=meta.get("description", ""),
            classes=list(spec.get("classes", [])), arch=spec.get("arch", "?"),
            encoder=spec.get("encoder", "?"), size_mb=path.stat().st_size / 1e6,
            threshold=recorded_threshold(meta),
        ))
    return infos


def default_model_name() -> str | None:
    names = bundled_paths()
    for name in DEFAULT_ORDER:
        if name in names:
            return name
    return next(iter(names), None)
