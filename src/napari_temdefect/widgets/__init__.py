"""napari dock widgets (Qt). Each gathers inputs, starts a thread_worker that calls the core,
and puts results into layers on the main thread. No computation lives here."""


def _avoid_llvm_clash() -> None:
    """Keep triton from loading next to Mesa's LLVM (segfault on software OpenGL).

    napari's canvas on Mesa (llvmpipe: Xvfb, VMs, remote desktops) loads libLLVM; importing
    triton afterwards (torchvision.ops -> torch._dynamo -> triton, i.e. the first model load)
    loads a second LLVM and crashes the process. Inference and training here never need
    triton, so when libLLVM is already mapped and triton is not, it is marked unavailable.
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


_avoid_llvm_clash()
