"""napari dock widgets (Qt). Each gathers inputs, starts a thread_worker that calls the core,
and puts results into layers on the main thread. No computation lives here."""

from .._llvm import avoid_llvm_clash

avoid_llvm_clash()  # the canvas may already be up; see napari_temdefect._llvm
