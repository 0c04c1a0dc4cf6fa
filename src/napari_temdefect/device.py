"""Choosing the torch device: CUDA, then Apple MPS, then CPU, with a user override."""

from __future__ import annotations

from .errors import TemDefectError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (``cpu`` is always last)."""
    import torch

    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def resolve_device(device=None):
    """Return a ``torch.device`` for ``None``/"auto" (best available) or an explicit name."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise TemDefectError(
            f"Unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}."
        )
    if base not in available_devices():
        raise TemDefectError(
            f"Device {name!r} is not available on this machine; use one of "
            f"{', '.join(available_devices())} or 'auto'."
        )
    return torch.device(name)
