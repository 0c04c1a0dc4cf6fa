"""napari sample data (npe2 ``sample_data`` contributions): calibrated synthetic micrographs.

Each function returns the micrograph as an image layer (``scale`` = pixel size in nm, metadata as
the file reader writes it) and its exact ground truth as a Labels layer named ``<name> truth``.
The images are generated with a fixed seed, so every user sees the same sample.
"""

from __future__ import annotations

from .io import Micrograph
from .reader import layer_data
from .synthetic import SyntheticMicrograph, make_micrograph

SEED = 2024

# key -> (kind, size, nm/px, extra generator parameters); keep display names in napari.yaml in step
SAMPLES = {
    "grains": ("grains", (1024, 1024), 0.5, {}),
    "bubbles": ("bubbles", (1024, 1024), 0.25, {}),
    "loops": ("loops", (768, 768), 0.25, {}),
}


def _layers(key: str) -> list[tuple]:
    kind, size, px, extra = SAMPLES[key]
    synth: SyntheticMicrograph = make_micrograph(kind, size=size, pixel_size_nm=px, seed=SEED,
                                                 **extra)
    name = f"synthetic {key}"
    micrograph = Micrograph(
        data=synth.image, pixel_size_nm=px, unit_original="nm", scale_original=px,
        metadata={"format": "synthetic", "kind": synth.kind, "params": synth.params, "notes": []},
        name=name, path=None,
    )
    data, kwargs, _ = layer_data(micrograph)
    kwargs["metadata"]["source"] = f"napari_temdefect.synthetic.make_micrograph({kind!r}, seed={SEED})"
    kwargs["metadata"]["ground_truth"] = {
        "classes": list(synth.masks), "objects": synth.objects,
    }
    truth = synth.truth_labels()
    truth_kwargs = {
        "name": f"{name} truth",
        "scale": kwargs["scale"],
        "opacity": 0.45,
        "visible": False,  # the demo shows the model's answer first; tick the eye to compare
        "metadata": {"pixel_size_nm": px, "calibrated": True, "unit": "nm",
                     "classes": list(synth.masks), "source": kwargs["metadata"]["source"]},
    }
    if "units" in kwargs:
        truth_kwargs["units"] = kwargs["units"]
    return [(data, kwargs, "image"), (truth, truth_kwargs, "labels")]


def sample_grains():
    """Polycrystal with grain boundaries a few px wide (0.5 nm/px); truth = boundaries."""
    return _layers("grains")


def sample_bubbles():
    """Helium bubbles with under-focus Fresnel rims (0.25 nm/px); truth = one label per bubble."""
    return _layers("bubbles")


def sample_loops():
    """Dislocation loops and black dots (0.25 nm/px); truth = one label per loop."""
    return _layers("loops")
