"""Words and formulas of the "Newton vs trust region" page (paper appendix B, Figs. 7 and 8).

LaTeX for numbers, vectors and matrices; the picture's box; and the sentences that explain where
the local steps of :mod:`etr_core.toy.local_models` go and how the whole runs of
:mod:`etr_core.toy.second_order` ended. Plain strings (Markdown or LaTeX), no Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from etr_core.toy.local_models import LocalStep

__all__ = [
    "clip_box",
    "runs_summary",
    "stationary_note",
    "tex_mat",
    "tex_num",
    "tex_vec",
    "view_box",
    "why_note",
]

Box = tuple[float, float, float, float]


def tex_num(x: float | None, digits: int = 4) -> str:
    """``x`` in LaTeX with ``digits`` significant digits (``a\\cdot 10^{b}`` for large or small values,
    ``\\infty``, ``-\\infty``, NaN; a dash for ``None``)."""
    if x is None:
        return r"\text{—}"
    if not math.isfinite(x):
        return r"\infty" if x > 0 else (r"-\infty" if x < 0 else r"\text{NaN}")
    text = f"{x:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = rf"{mant}\cdot 10^{{{int(exp)}}}"
    return text


def tex_vec(v: np.ndarray | None) -> str:
    """A column vector ``v`` (shape ``(n,)``) in LaTeX; "undefined" for ``None``."""
    if v is None:
        return r"\text{undefined}"
    return r"\begin{pmatrix}" + r"\\".join(tex_num(float(x)) for x in v) + r"\end{pmatrix}"


def tex_mat(a: np.ndarray) -> str:
    """A matrix ``a`` (shape ``(n, k)``) in LaTeX."""
    rows = [" & ".join(tex_num(float(x)) for x in row) for row in a]
    return r"\begin{pmatrix}" + r"\\".join(rows) + r"\end{pmatrix}"


def view_box(fn_view: Box, w: np.ndarray) -> Box:
    """The function's view ``(x0, x1, y0, y1)``, widened (keeping it square-ish) when the chosen point
    ``w`` (shape ``(2,)``) lies outside it."""
    x0, x1, y0, y1 = fn_view
    pad = 0.1 * max(x1 - x0, y1 - y0)
    return (min(x0, w[0] - pad), max(x1, w[0] + pad), min(y0, w[1] - pad), max(y1, w[1] + pad))


def clip_box(box: Box, coord: tuple[float, float]) -> Box:
    """``box`` cut to the square ``coord x coord`` of points a click may choose."""
    return (max(box[0], coord[0]), min(box[1], coord[1]), max(box[2], coord[0]), min(box[3], coord[1]))


def stationary_note(lam: np.ndarray, counts: tuple[int, int, int], tr: LocalStep) -> str:
    """What happens at a point with zero gradient (footnote 11): the kind of stationary point from the
    Hessian's eigenvalues ``lam`` (ascending) and inertia ``counts`` (positive, negative, zero), and
    the trust-region step ``tr`` (the hard case of the subproblem at a saddle)."""
    pos, neg, zero = counts
    kind = (
        "a saddle"
        if neg and pos
        else (
            "a minimiser"
            if not neg and not zero
            else ("a maximiser" if not pos and not zero else "a degenerate point")
        )
    )
    tr_move = (
        f"the exact trust-region step is the hard case of the subproblem: it moves a full radius "
        f"along the eigenvector of the most negative eigenvalue ({lam[0]:.3g}) to "
        f"({tr.target[0]:.3g}, {tr.target[1]:.3g}) and lowers the model by {tr.model_decrease:.3g}"
        if tr.defined and np.any(tr.step)
        else "the trust-region step is zero as well"
    )
    return (
        f"**The gradient is exactly zero here: w is a stationary point of f ({kind}; Hessian eigenvalues "
        f"{lam[0]:.3g}, {lam[1]:.3g}).** The Newton step −H⁻¹g is zero, so Newton, gradient descent, "
        f"Gauss-Newton and saddle-free Newton cannot move (the manifold of attraction of footnote 11). "
        f"With the model alone, {tr_move}. The whole runs below stop at once because their first test, "
        f"‖g‖ < tolerance, already holds."
    )


def why_note(lam: np.ndarray, neg: int, newton: LocalStep, tr: LocalStep, radius: float) -> str:
    """Why the Newton and trust-region steps differ here (Figs. 7-8): ``lam`` the Hessian's eigenvalues
    (ascending), ``neg`` how many are negative, ``radius`` the region's Delta."""
    critical = newton.details.get("model_critical_point", "none")
    if neg and newton.defined:
        why = (
            f"**Why.** Here H has a negative eigenvalue ({lam[0]:.3g}): the Newton model is unbounded below "
            f"and its only critical point is a {critical}, yet Newton solves ∇m(s) = 0 without asking what "
            f"kind of point that is, so its step is classified *{newton.kind}*. The trust-region step "
            "minimises the same model over a ball, a problem that always has a solution; it uses the "
            "negative curvature instead of being pulled by it"
            + (f", and lowers f by {tr.actual_decrease:.3g} here." if tr.actual_decrease is not None else ".")
        )
    elif newton.defined and newton.step is not None and np.any(newton.step):
        length = float(np.linalg.norm(newton.step))
        why = (
            f"**Why.** Here H is positive definite, so the Newton step is the model's minimiser, of length "
            f"{length:.3g}. The trust-region step equals it when it fits in the region (Δ = {radius:g}) and "
            "otherwise stops on the boundary: far from a minimiser the model is only trusted nearby."
        )
    else:
        why = (
            "**Why.** Newton needs a non-zero gradient and an invertible Hessian; here one of them fails, "
            "while the trust-region subproblem is solvable for any g and H."
        )
    return why + (
        " Gauss-Newton and saddle-free Newton make the model convex instead (Fig. 8): no more pull towards "
        "the saddle, but neither can leave it when the gradient has no component pointing away (footnote 11)."
    )


def runs_summary(table: Sequence[Mapping[str, Any]], runs: Mapping[str, Any]) -> str:
    """One sentence per whole run: how it ended (diverged, stopped, reached a critical point of f, or
    ran out of iterations); ``table`` is :func:`etr_core.toy.second_order.iterations_table` of
    ``runs``, row by row in the same order."""
    sentences = []
    for row, run in zip(table, runs.values()):
        if run.status == "diverged":
            sentences.append(f"**{row['method']}** diverged: {run.message}")
        elif run.status == "singular":
            sentences.append(f"**{row['method']}** stopped: {run.message}")
        elif row["ended at"] != "—":
            reached = row["to ‖g‖ ≤ gtol"]
            when = (
                f"after {reached} iterations"
                if reached is not None
                else f"within {row['iterations']} iterations"
            )
            sentences.append(f"**{row['method']}** ended at the {row['ended at']} {when}.")
        else:
            sentences.append(
                f"**{row['method']}** stopped after {row['iterations']} iterations at "
                f"({run.final_point[0]:.3g}, {run.final_point[1]:.3g}), f = {row['final f']:.4g}."
            )
    return " ".join(sentences)
