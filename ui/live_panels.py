"""Streamlit parts of the live-training page that do not depend on its widgets (paper section 5).

:func:`url_run_id` reads the run id of a link, :func:`show_run` draws one run as a poll sees it
(status line, the four charts, the race sentences, the summary table and the CSV download) and
:func:`show_tr_step_formula` / :func:`radius_start_text` explain one step of Algorithm 1 with the
values the sliders hold.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from etr_core.live import (
    LiveRun,
    LiveSnapshot,
    default_registry,
    describe_race,
    metrics_csv,
    summarize,
    valid_run_id,
)
from ui.live_view import RunView, empty_loss_figure, session_view

__all__ = [
    "SUMMARY_LABELS",
    "radius_start_text",
    "show_run",
    "show_tr_step_formula",
    "steps_to_unit_radius",
    "url_run_id",
]

SUMMARY_LABELS = {
    "final_batch_loss": "last mini-batch loss", "final_train_loss": "train loss",
    "final_train_acc": "train acc.", "final_test_acc": "test acc.",
    "backprops_to_acc": "backprops to acc. target",
    "seconds_to_acc": "seconds to acc. target", "backprops_to_loss": "backprops to loss target",
    "seconds_to_loss": "seconds to loss target", "detail": "why it ended early",
    "warnings": "optimiser warnings", "preset": "TR preset",
}


def url_run_id() -> tuple[str | None, bool]:
    """The run id in ``?run=`` (the last well-formed one if repeated) and whether a bad one was given."""
    try:
        values = [str(v) for v in st.query_params.get_all("run")]
    except Exception:  # no query string available (bare script run)
        return None, False
    good = [v for v in values if valid_run_id(v)]
    return (good[-1] if good else None), bool(values) and not good


def show_run(
    run_id: str | None, prefix: str, x_axis: str, log_y: bool, rerun_when_ended: bool,
    poll_s: float | None = None,
) -> None:
    """Draw run ``run_id`` of the server's registry as this session has received it so far.

    ``prefix`` starts every widget key, ``x_axis`` ("backprops" | "epochs" | "seconds") and ``log_y``
    choose the chart axes. No run (or an unknown id): an empty loss chart and a hint. A run that has
    ended while ``rerun_when_ended`` (the page's poll timer was set for it) reruns the whole page once.
    ``poll_s``: the seconds between the page's polls, named in the note of a queued run.
    """
    current = default_registry().get(run_id) if run_id else None
    if current is None:
        st.plotly_chart(empty_loss_figure(x_axis, log_y), key=f"{prefix}_loss_chart", width="stretch")
        st.info("Choose the methods and press **Start**. Curves appear here as the worker trains.")
        return
    view = session_view(current.id, f"{prefix}_view")
    snap, _ = view.receive(current)
    if not _show_status(snap, poll_s):
        return
    _show_charts(view, snap, prefix, x_axis, log_y)
    _show_results(view, snap, current, prefix, rerun_when_ended)


def _show_status(snap: LiveSnapshot, poll_s: float | None = None) -> bool:
    """Progress bar, failure and per-method errors; ``False`` while the run waits in the queue."""
    st.progress(snap.progress, text=f"{snap.status} · {snap.elapsed:.1f} s · {snap.message}")
    if snap.queued:
        checks = f"this page checks every {poll_s:g} s; " if poll_s else ""
        st.info(f"This run waits for a training slot; {checks}the charts appear when it starts.")
        return False
    if snap.status == "failed":
        st.error(snap.message)
    for method, error in snap.errors.items():
        label = "diverged" if snap.method_status.get(method) == "diverged" else "failed"
        st.warning(f"{method} {label}: {error}")
    return True


def _show_charts(view: RunView, snap: LiveSnapshot, prefix: str, x_axis: str, log_y: bool) -> None:
    """Loss on top, accuracy and Krylov iterations side by side, the radius below."""
    loss, acc, cg, tr = view.charts(snap, x_axis, log_y)
    st.plotly_chart(loss, key=f"{prefix}_loss_chart", width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(acc, key=f"{prefix}_acc_chart", width="stretch")
    right.plotly_chart(cg, key=f"{prefix}_cg_chart", width="stretch")
    st.plotly_chart(tr, key=f"{prefix}_tr_chart", width="stretch")


def _show_results(
    view: RunView, snap: LiveSnapshot, run: LiveRun, prefix: str, rerun_when_ended: bool
) -> None:
    """The accuracy race sentence; once the run has ended also its outcome, the loss race sentence,
    the summary table and the CSV download."""
    settings = snap.settings
    loss_target, acc_target = settings.get("loss_target"), settings.get("accuracy_target")
    summary = _summary(view, snap, f"{prefix}_summary_memo")
    if acc_target is not None:
        st.markdown(describe_race(summary, "backprops_to_acc", f"{acc_target:.0%} training accuracy"))
    if snap.running:
        return
    if rerun_when_ended:  # the timer was set for this run: one full rerun drops it and enables Start
        st.rerun()
    if snap.status == "finished":
        st.success(f"Run finished. {snap.message}")
    elif snap.status == "stopped":
        st.info(f"Run stopped. {snap.message}")
    if loss_target is not None:
        st.markdown(describe_race(summary, "backprops_to_loss", f"a training loss of {loss_target:g}"))
    st.dataframe(summary.rename(columns=SUMMARY_LABELS), key=f"{prefix}_summary", hide_index=True,
                 width="stretch")
    if view.csv is None:
        view.csv = metrics_csv(view.steps, view.evals)
    st.download_button("Download the run's metrics (CSV)", view.csv,
                       file_name=f"live_training_{run.id}.csv", mime="text/csv", key=f"{prefix}_download")


def _summary(view: RunView, snap: LiveSnapshot, memo_key: str) -> pd.DataFrame:
    """The run's summary table (:func:`etr_core.live.summarize`), recomputed only when this session
    received rows or the run's method states, notes, warnings or settings changed since the last
    poll; kept in ``st.session_state[memo_key]`` as ``(key, table)``."""
    settings = snap.settings
    key = (view.run_id, len(view.steps), len(view.evals), tuple(snap.methods),
           tuple(sorted(snap.method_status.items())), tuple(sorted(snap.notes.items())),
           tuple(sorted(snap.warnings.items())), repr(sorted(settings.items())))
    memo = st.session_state.get(memo_key)
    if isinstance(memo, tuple) and len(memo) == 2 and memo[0] == key:
        return memo[1]
    summary = summarize(view.steps, view.evals, methods=snap.methods, statuses=snap.method_status,
                        loss_target=settings.get("loss_target"),
                        accuracy_target=settings.get("accuracy_target"), notes=snap.notes,
                        warnings=snap.warnings, presets=settings.get("presets"))
    st.session_state[memo_key] = (key, summary)
    return summary


def show_tr_step_formula(
    eta1: float, eta2: float, gamma1: float, max_radius: float, gamma2_rms: float
) -> None:
    """The TR subproblem, rho and the radius update of Algorithm 1 with these parameters (LaTeX)."""
    st.markdown("**One TR step** (Algorithm 1): solve the subproblem in the ellipsoid of the method, then "
                "judge the step by the ratio of actual to predicted decrease.")
    st.latex(
        r"\min_{\|s\|_{A_t}\le\Delta_t} m_t(s)=f_t+g_t^\top s+\tfrac12 s^\top H_t s,\qquad "
        r"\rho_t=\frac{f(w_t)-f(w_t+s_t)}{m_t(0)-m_t(s_t)}"
    )
    st.latex(
        rf"\Delta_{{t+1}}=\begin{{cases}}\min({gamma1:g}\,\Delta_t,\ {max_radius:g}) & "
        rf"\rho_t\ge {eta2:g}\\ \Delta_t & {eta1:g}\le\rho_t<{eta2:g}\\ "
        rf"\Delta_t/{gamma2_rms:g}\ (\text{{TR\_rms}}) & "
        rf"\rho_t<{eta1:g}\ (\text{{step rejected}})\end{{cases}}"
    )


def steps_to_unit_radius(radius0: float, gamma1: float) -> float:
    """Very successful steps (each growing the radius by ``gamma1 > 1``) from ``radius0 > 0`` to a
    radius of 1: ``log(max(1, 1 / radius0)) / log(gamma1)`` (0 when ``radius0 >= 1``)."""
    return math.log(max(1.0, 1.0 / radius0)) / math.log(gamma1)


def radius_start_text(preset: str, radius0: float, gamma1: float) -> str:
    """How the TR radius starts under ``preset`` ("paper" | "fast" | "authors"), in one or two
    sentences; ``radius0`` and ``gamma1`` are the sliders' Δ₀ and γ₁. KeyError for another preset."""
    texts = {
        "paper": f"The radius starts at Δ₀ = {radius0:g} and can grow by at most ×{gamma1:g} per step, so it "
                 f"needs about {steps_to_unit_radius(radius0, gamma1):.0f} very successful steps to reach 1.",
        "fast": "With the fast preset Δ₀ is chosen at the first step: the length, in the method's norm, of "
                f"that step's Cauchy point (Δ₀ = {radius0:g} only where the model has no positive curvature "
                f"along the gradient); from there the radius grows by at most ×{gamma1:g} per step.",
        "authors": "With the authors' preset Δ₀, η₁, η₂, γ₁, γ₂ and the batch come from their files; the "
                   "formula above shows the Table 1 sliders, which that preset does not use.",
    }
    return texts[preset]
