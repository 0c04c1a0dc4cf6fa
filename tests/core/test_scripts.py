"""The bundled-model scripts import: they share scripts/bundled_data.py, which no other test
loads, so a name it stops defining would otherwise first show up in a long training run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
USERS = ("train_bundled", "evaluate_bundled", "compare_architectures", "transfer_loops",
         "bubble_polarity", "boundary_offsets")


@pytest.mark.parametrize("name", USERS)
def test_bundled_model_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    for mod in (name, "bundled_data"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    module = importlib.import_module(name)
    assert callable(module.main)
