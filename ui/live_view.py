"""What one browser session has received of a live run, and the figures drawn from it (paper section 5).

A polling page asks the run only for the rows it has not seen yet (:meth:`RunView.receive`) and
rebuilds its four Plotly figures only when rows, method states, the axis, the scale or presentation
mode changed (:meth:`RunView.charts`). Figures pass through :func:`ui.presentation.presentable`
once, when they are built, so presentation mode enlarges their fonts exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from etr_core.live import EVAL_COLUMNS, STEP_COLUMNS, STEP_EXTRAS, LiveRun, LiveSnapshot
from etr_core.viz.live_plots import accuracy_figure, cg_iterations_figure, loss_figure, trust_region_figure
from ui.presentation import presentable, presenting

__all__ = ["FINAL_POINTS", "LIVE_POINTS", "RunView", "empty_loss_figure", "session_view"]

LIVE_POINTS, FINAL_POINTS = 600, 1500  # points per curve while training / once ended


def empty_loss_figure(x: str, log_y: bool) -> go.Figure:
    """The loss chart before any run: axes and a "press Start" note."""
    empty = pd.DataFrame(columns=list(STEP_COLUMNS)), pd.DataFrame(columns=list(EVAL_COLUMNS))
    return presentable(loss_figure(*empty, x=x, log_y=log_y))


def session_view(run_id: str, key: str) -> RunView:
    """This session's :class:`RunView` of run ``run_id``, kept in ``st.session_state[key]`` (a new,
    empty one when the session looked at another run before)."""
    view = st.session_state.get(key)
    if not isinstance(view, RunView) or view.run_id != run_id:
        view = RunView(run_id)
        st.session_state[key] = view
    return view


@dataclass
class RunView:
    """What this session has received of one run: the rows so far and the figures built from them."""

    run_id: str
    steps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*STEP_COLUMNS, *STEP_EXTRAS]))
    evals: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(EVAL_COLUMNS)))
    figures_key: tuple | None = None
    figures: tuple[go.Figure, ...] = ()
    csv: bytes | None = None

    def receive(self, run: LiveRun) -> tuple[LiveSnapshot, bool]:
        """Ask only for rows not seen yet; returns the snapshot and whether anything new came."""
        snap = run.snapshot(steps_since=len(self.steps), evals_since=len(self.evals))
        new = len(snap.steps) > 0 or len(snap.evals) > 0
        if len(snap.steps):
            self.steps = snap.steps if self.steps.empty else pd.concat([self.steps, snap.steps])
        if len(snap.evals):
            self.evals = snap.evals if self.evals.empty else pd.concat([self.evals, snap.evals])
        return snap, new

    def charts(self, snap: LiveSnapshot, x: str, log_y: bool) -> tuple[go.Figure, ...]:
        """Loss, accuracy, Krylov iterations and radius figures, rebuilt only when rows, method states,
        axis, scale or presentation mode changed."""
        ends = {m: s for m, s in snap.method_status.items() if s in ("converged", "stalled", "diverged")}
        present = presenting()
        key = (len(self.steps), len(self.evals), tuple(sorted(ends.items())), x, log_y, snap.running, present)
        if key != self.figures_key:
            settings, points = snap.settings, LIVE_POINTS if snap.running else FINAL_POINTS
            kw = {"x": x, "methods": snap.methods, "max_points": points}
            figures = (
                loss_figure(self.steps, self.evals, log_y=log_y, loss_target=settings.get("loss_target"),
                            ends=ends, **kw),
                accuracy_figure(self.evals, accuracy_target=settings.get("accuracy_target"), **kw),
                cg_iterations_figure(self.steps, **kw),
                trust_region_figure(self.steps, eta1=settings.get("eta1"), eta2=settings.get("eta2"),
                                    ends=ends, **kw),
            )
            self.figures = tuple(presentable(fig) for fig in figures)
            self.figures_key = key
        return self.figures
