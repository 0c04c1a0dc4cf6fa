"""The npe2 manifest validates, ships inside the package, and napari finds it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import napari_temdefect

PACKAGE_MANIFEST = Path(napari_temdefect.__file__).resolve().parent / "napari.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _npe2() -> str:
    exe = Path(sys.executable).parent / "npe2"
    found = str(exe) if exe.exists() else shutil.which("npe2")
    if found is None:
        pytest.skip("the npe2 command is not installed")
    return found


def test_manifest_validates_with_npe2_including_imports():
    result = subprocess.run([_npe2(), "validate", "napari-temdefect", "--imports"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_a_broken_manifest_fails_validation(tmp_path):
    broken = tmp_path / "napari.yaml"
    broken.write_text(PACKAGE_MANIFEST.read_text(encoding="utf-8").replace(
        "napari_temdefect.sample_data:sample_grains", "napari_temdefect.sample_data:no_such_fn"),
        encoding="utf-8")
    result = subprocess.run([_npe2(), "validate", str(broken), "--imports"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_manifest_contents():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(PACKAGE_MANIFEST)
    assert pm.name == "napari-temdefect"
    assert {s.key for s in pm.contributions.sample_data} >= {"grains", "bubbles", "loops"}
    assert {w.display_name for w in pm.contributions.widgets} == {
        "Inference", "Corrections", "Fine-tune", "Quantification"}
    patterns = set(pm.contributions.readers[0].filename_patterns)
    from napari_temdefect.io import SUPPORTED_EXTENSIONS

    assert {f"*{ext}" for ext in SUPPORTED_EXTENSIONS} <= patterns


def test_installed_package_provides_the_manifest_through_its_entry_point():
    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-temdefect"]
    assert len(eps) == 1
    module, _, resource = eps[0].value.partition(":")
    assert (module, resource) == ("napari_temdefect", "napari.yaml")
    from importlib.resources import files

    shipped = files(module) / resource
    assert shipped.is_file()
    assert Path(str(shipped)).resolve() == PACKAGE_MANIFEST

    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    found = pm.get_manifest("napari-temdefect")  # what napari itself discovers
    assert found.display_name == "TEM Defects"


def test_top_level_manifest_is_a_link_to_the_package_copy():
    top = REPO_ROOT / "napari.yaml"
    if not top.exists():
        pytest.skip("not running from a source checkout")
    assert top.is_symlink()
    assert top.resolve() == PACKAGE_MANIFEST
