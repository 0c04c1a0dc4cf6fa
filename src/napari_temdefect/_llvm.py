"""A process-level guard against two LLVMs in one process (no Qt or napari imports here)."""

from __future__ import annotations


def avoid_llvm_clash() -> None:
    """Keep triton from loading next to Mesa's LLVM (segfault on software OpenGL).

    napari's canvas on Mesa (llvmpipe: Xvfb, VMs, remote desktops) loads libLLVM; importing
    triton afterwards (torchvision.ops -> torch._dynamo -> triton, i.e. the first model load)
    loads a second LLVM and crashes the process. Inference and training here never need
    triton, so when libLLVM is already mapped and triton is not, it is marked unavailable.

    Called when the widgets package is imported and again just before smp (and with it
    torchvision) is first imported, so a model built from napari's console or a script that
    opened a viewer is covered too.
    """
    import sys

    if "triton" in sys.modules:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            mapped = f.read()
    except OSError:  # not Linux
        return
    if "libLLVM" in mapped:
        sys.modules["triton"] = None  # `import triton` now raises ImportError
