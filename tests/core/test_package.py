"""The package surface: every lazily exported name resolves, and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import etr_core


@pytest.mark.parametrize("name", sorted(etr_core._EXPORTS))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(etr_core, name) is not None


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        etr_core.nope  # noqa: B018


def test_importing_the_package_does_not_import_streamlit() -> None:
    code = ("import sys, etr_core, etr_core.optim, etr_core.training, etr_core.curvature, etr_core.live; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
