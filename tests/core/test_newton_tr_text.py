"""Words and formulas of the "Newton vs trust region" page against hand-written expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etr_core.toy import local_models, newton_steps, quadratic_model, tr_local_step
from etr_core.toy.functions import get_function
from etr_core.toy.local_models import all_local_steps
from etr_core.viz.newton_tr_text import (
    clip_box,
    runs_summary,
    stationary_note,
    tex_mat,
    tex_num,
    tex_vec,
    view_box,
    why_note,
)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (None, r"\text{—}"),
        (math.inf, r"\infty"),
        (-math.inf, r"-\infty"),
        (math.nan, r"\text{NaN}"),
        (0.5, "0.5"),
        (-1.0 / 3.0, "-0.3333"),
        (1234567.0, r"1.235\cdot 10^{6}"),
        (-2.5e-7, r"-2.5\cdot 10^{-7}"),
    ],
)
def test_tex_num(x, expected):
    assert tex_num(x) == expected


def test_tex_vector_and_matrix():
    assert tex_vec(None) == r"\text{undefined}"
    assert tex_vec(np.array([1.0, -2.0])) == r"\begin{pmatrix}1\\-2\end{pmatrix}"
    assert tex_mat(np.array([[1.0, 0.5], [0.5, 3e6]])) == (
        r"\begin{pmatrix}1 & 0.5\\0.5 & 3\cdot 10^{6}\end{pmatrix}"
    )


def test_view_box_widens_only_for_a_point_outside():
    view = (-2.0, 2.0, -1.0, 1.0)  # pad = 0.1 * 4 = 0.4
    assert view_box(view, np.array([0.0, 0.0])) == view
    assert view_box(view, np.array([3.0, -1.0])) == pytest.approx((-2.0, 3.4, -1.4, 1.0))
    assert clip_box((-7.0, 3.0, -1.0, 9.0), (-5.0, 5.0)) == (-5.0, 3.0, -1.0, 5.0)


def test_sentences_name_the_stationary_point_and_the_steps():
    fn = get_function("paper")
    at_saddle = all_local_steps(fn, np.zeros(2), 0.5)
    H = fn.hessian(np.zeros(2))
    lam = np.linalg.eigvalsh(H)
    note = stationary_note(lam, local_models.inertia(H), at_saddle["trust_region"])
    assert "(a saddle;" in note and "hard case" in note
    fig7_right = all_local_steps(fn, np.array([1.0, 0.2]), 0.5)
    lam = np.linalg.eigvalsh(fn.hessian(np.array([1.0, 0.2])))
    why = why_note(lam, 1, fig7_right["newton"], fig7_right["trust_region"], 0.5)
    assert why.startswith("**Why.** Here H has a negative eigenvalue")
    assert f"classified *{fig7_right['newton'].kind}*" in why


def test_runs_summary_says_how_each_run_ended():
    class Run:
        def __init__(self, status, message="", final_point=(0.0, 0.0)):
            self.status, self.message, self.final_point = status, message, final_point

    table = [
        {"method": "Newton", "ended at": "—", "to ‖g‖ ≤ gtol": None, "iterations": 3, "final f": 1.5},
        {"method": "TR_uni", "ended at": "minimum", "to ‖g‖ ≤ gtol": 7, "iterations": 7, "final f": 0.0},
        {"method": "GD", "ended at": "—", "to ‖g‖ ≤ gtol": None, "iterations": 2, "final f": 0.0},
    ]
    runs = {"newton": Run("maxiter", final_point=(1.0, 2.0)), "tr_uniform": Run("converged"),
            "gd": Run("diverged", "f overflowed")}
    assert runs_summary(table, runs) == (
        "**Newton** stopped after 3 iterations at (1, 2), f = 1.5. "
        "**TR_uni** ended at the minimum after 7 iterations. "
        "**GD** diverged: f overflowed"
    )


def test_local_models_keeps_its_public_names():
    assert local_models.newton_step is newton_steps.newton_step
    assert local_models.trust_region_step is tr_local_step.trust_region_step
    assert local_models.QuadraticModel is quadratic_model.QuadraticModel
    for name in local_models.__all__:
        assert hasattr(local_models, name), name
