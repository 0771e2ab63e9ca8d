"""The shared method palette: fixed colours, aliases, and distinguishability under colour-vision
deficiencies (simulated with Machado, Oliveira & Fernandes 2009 matrices, compared in CIELAB)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from etr_core.viz.palette import (
    METHOD_COLOURS,
    OKABE_ITO,
    TOL_MUTED,
    canonical_method,
    method_colour,
    method_dash,
    rgba,
)

# Machado et al. (2009), severity 1.0, applied to linear RGB.
CVD = {
    "normal": np.eye(3),
    "deuteranopia": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    ),
    "protanopia": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
    ),
    "tritanopia": np.array(
        [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]
    ),
}


def _linear(hex_colour: str) -> np.ndarray:
    c = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb: np.ndarray) -> np.ndarray:
    rgb = np.clip(linear_rgb, 0.0, 1.0)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _min_delta_e(names: list[str]) -> float:
    return min(
        float(np.linalg.norm(_lab(m @ _linear(METHOD_COLOURS[a])) - _lab(m @ _linear(METHOD_COLOURS[b]))))
        for m in CVD.values()
        for a, b in itertools.combinations(names, 2)
    )


REQUIRED = ["TR_uni", "TR_ada", "TR_rms", "TR_hess", "ARC_rms", "SGD", "Adagrad", "RMSprop", "Adam", "GD"]


def test_every_method_of_the_project_has_a_distinct_colour_from_the_two_safe_palettes():
    for name in [*REQUIRED, "FO_TR_uni", "FO_TR_ada"]:
        assert name in METHOD_COLOURS
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    safe = set(OKABE_ITO.values()) | set(TOL_MUTED.values())
    assert set(METHOD_COLOURS.values()) <= safe


@pytest.mark.parametrize(
    "group",
    [
        ["TR_uni", "TR_ada", "TR_rms", "SGD", "Adagrad", "RMSprop", "Adam"],  # paper Figs. 3, 4, 9, 10
        ["GD", "Adagrad", "Adagrad_full", "RMSprop", "Adam", "FO_TR_uni", "FO_TR_ada"],  # Figs. 1, 5
        ["TR_uni", "TR_ada", "TR_rms", "TR_hess", "ARC_rms"],
    ],
)
def test_colours_drawn_together_stay_apart_under_colour_vision_deficiencies(group):
    # CIELAB delta E >= 15 is far above the ~2-3 just-noticeable difference
    assert _min_delta_e(group) >= 15.0


def test_aliases_and_run_labels_find_the_method_colour():
    assert method_colour("Adam (lr=0.001)") == METHOD_COLOURS["Adam"]
    assert method_colour("TR_rms [authors preset]") == METHOD_COLOURS["TR_rms"]
    assert method_colour("adagrad") == METHOD_COLOURS["Adagrad"]
    assert canonical_method("tr_sphere") == "FO_TR_uni"
    assert canonical_method("gd") == "GD"
    assert canonical_method("something else") is None
    assert method_colour("something else") == method_colour("something else")  # stable fallback
    assert method_colour("something else") not in METHOD_COLOURS.values()


def test_dash_separates_families():
    assert method_dash("TR_rms") == "solid"
    assert method_dash("Adam (lr=0.001)") == "dash"
    assert method_dash("tr_adagrad") == "dot"


def test_rgba_and_bad_input():
    assert rgba("#0072B2", 0.2) == "rgba(0,114,178,0.2)"
    with pytest.raises(ValueError, match="hex_colour"):
        rgba("blue", 0.5)
    with pytest.raises(ValueError, match="alpha"):
        rgba("#000000", 2.0)
    with pytest.raises(TypeError, match="method name"):
        canonical_method(3)
