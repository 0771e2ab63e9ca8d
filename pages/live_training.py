"""Live training: ellipsoidal vs spherical trust regions vs first-order methods (paper section 5).

The training runs in a background worker (``etr_core.live.LiveRun``); this page only starts and
stops it and redraws a snapshot of its histories every half second while it runs.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st
import torch

from etr_core.data import FILE_DATASETS
from etr_core.devices import describe_device
from etr_core.devices import device as resolve_device
from etr_core.live import (
    EVAL_COLUMNS,
    STEP_COLUMNS,
    LiveRun,
    RunHolder,
    comparison_configs,
    describe_race,
    local_dataset_status,
    max_steps_cap,
    metrics_csv,
    release_holder,
    summarize,
    warm_up_training,
)
from etr_core.models import MODEL_DESCRIPTIONS
from etr_core.training import METHODS
from etr_core.viz.live_plots import (
    X_AXES,
    accuracy_figure,
    cg_iterations_figure,
    loss_figure,
    trust_region_figure,
)
from ui.common import (
    global_seed,
    preset_buttons,
    url_multiselect,
    url_radio,
    url_select_slider,
    url_selectbox,
    url_toggle,
)
from ui.frame import ensure_app_frame

ensure_app_frame()

P = "lt"  # widget-key prefix of this page
POLL_SECONDS = 0.5

TR_METHODS = [m for m, spec in METHODS.items() if spec.family == "tr"]
FIRST_ORDER = [m for m, spec in METHODS.items() if spec.family != "tr"]
GENERATED = ["digits", "blobs", "moons", "spirals"]
DATASET_LABELS = {
    "digits": "digits (8x8 scans, bundled)",
    "blobs": "blobs (2-D, generated)",
    "moons": "moons (2-D, generated)",
    "spirals": "spirals (2-D, generated)",
    "mnist": "MNIST (local files)",
    "fashion_mnist": "Fashion-MNIST (local files)",
    "cifar10": "CIFAR-10 (local files)",
}
NETWORKS = ["mlp_tiny", "mlp_small", "mlp_paper", "mlp_cifar", "cnn_small"]
X_LABELS = {"backprops": "backprops", "epochs": "epochs", "seconds": "seconds"}
SCHEDULE_LABELS = {
    "backprops": "interleaved, fewest backprops first",
    "steps": "interleaved, one step each",
    "sequential": "one method after another",
}
SUMMARY_LABELS = {
    "final_batch_loss": "last mini-batch loss", "final_train_loss": "train loss",
    "final_train_acc": "train acc.", "final_test_acc": "test acc.",
    "backprops_to_acc": "backprops to acc. target",
    "seconds_to_acc": "seconds to acc. target", "backprops_to_loss": "backprops to loss target",
    "seconds_to_loss": "seconds to loss target",
}
TR_KNOBS = ("radius", "max_radius", "eta1", "eta2", "gamma1")
TABLE1 = {  # paper appendix C, Table 1
    f"{P}_radius": 1e-4, f"{P}_max_radius": 10.0, f"{P}_eta1": 1e-4, f"{P}_eta2": 0.95,
    f"{P}_gamma1": 1.1, f"{P}_gamma2_uni": 1.5, f"{P}_gamma2_rms": 1.75, f"{P}_tr_batch": 512,
}


@st.cache_resource(scope="session", on_release=release_holder, show_spinner=False)
def run_holder() -> RunHolder:
    """This browser session's run; released (run stopped) when the session ends."""
    return RunHolder()


@st.cache_resource(show_spinner="Preparing the training worker (once per server process)...")
def warm_up_worker() -> float:
    """One tiny run per process so a fresh worker never pays lazy imports under GIL contention."""
    return warm_up_training()


@st.cache_data(max_entries=16, ttl=60, show_spinner=False)
def dataset_status(name: str) -> tuple[bool, str]:
    return local_dataset_status(name)


def _state(key: str):
    return st.session_state[f"{P}_{key}"]


def start_run(holder: RunHolder) -> None:
    """Start button: build one config per method from the widgets and start the worker."""
    st.session_state[f"{P}_start_error"] = None
    methods = list(_state("methods"))
    try:
        dataset = _state("dataset")
        data_options = {"max_train": int(_state("max_train"))} if dataset in FILE_DATASETS else {}
        configs = comparison_configs(
            methods,
            dataset=dataset,
            model=_state("model"),
            seed=global_seed(),
            tr_batch_size=int(_state("tr_batch")),
            first_order_batch_size=int(_state("fo_batch")),
            learning_rates={m: float(st.session_state.get(f"{P}_lr_{m}", METHODS[m].default_lr))
                            for m in methods if m in FIRST_ORDER},
            tr_options={name: float(_state(name)) for name in TR_KNOBS},
            gamma2={"TR_uni": float(_state("gamma2_uni")), "TR_ada": float(_state("gamma2_uni")),
                    "TR_rms": float(_state("gamma2_rms"))},
            max_steps=int(_state("max_steps")),
            eval_every=int(_state("eval_every")),
            device=_state("device"),
            data_options=data_options,
        )
        run = LiveRun(configs, max_seconds=float(_state("max_seconds")), max_backprops=int(_state("budget")),
                      schedule=_state("schedule"))
    except (ValueError, TypeError) as exc:
        st.session_state[f"{P}_start_error"] = str(exc)
        return
    holder.replace(run)
    run.start()
    st.session_state[f"{P}_settings"] = {
        "accuracy_target": float(_state("acc_target")), "loss_target": float(_state("loss_target")),
        "eta1": float(_state("eta1")), "eta2": float(_state("eta2")),
    }


def stop_run(holder: RunHolder) -> None:
    """Stop button: only signals the worker; it stops after its current step."""
    run = holder.run
    if run is not None:
        run.stop()


warm_up_worker()
holder = run_holder()
run: LiveRun | None = holder.run

st.title("Live training: do ellipsoidal trust regions train faster?")
st.markdown(
    "Train the same network with the spherical trust region (**TR_uni**), the ellipsoidal ones "
    "(**TR_ada**, **TR_rms**) and first-order methods, and watch the loss fall against the paper's "
    "cost unit, backpropagations (Figs. 3 and 4)."
)

# ---------------------------------------------------------------- controls
available_files = [name for name in FILE_DATASETS if dataset_status(name)[0]]
col_data, col_methods, col_budget = st.columns(3)
with col_data:
    dataset = url_selectbox("Data set", f"{P}_dataset", GENERATED + available_files, "digits",
                            format_func=lambda n: DATASET_LABELS.get(n, n))
    missing = [name for name in FILE_DATASETS if name not in available_files and name != "mnist"]
    if missing:
        with st.expander("Fashion-MNIST / CIFAR-10 (paper data sets)"):
            for name in missing:
                st.caption(dataset_status(name)[1])
    if dataset in FILE_DATASETS:
        url_select_slider("Training examples used", f"{P}_max_train", [1000, 2000, 5000, 10000, 20000, 60000],
                          5000, help="Large sets are cut to their first examples to keep the live run short.")
    model = url_selectbox("Network", f"{P}_model", NETWORKS, "mlp_small",
                          format_func=lambda n: f"{n}: {MODEL_DESCRIPTIONS[n]}")
    devices_offered = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    chosen_device = url_selectbox("Device", f"{P}_device", devices_offered, "auto",
                                  format_func=lambda d: {"auto": "auto (CUDA when present)"}.get(d, d))
    runs_on = describe_device(resolve_device(chosen_device))
    st.caption(f"Runs on **{runs_on.split(' (')[0]}**" + (", one torch thread per method" if
               runs_on.startswith("cpu") else f" ({runs_on})"))
with col_methods:
    methods = url_multiselect("Methods", f"{P}_methods", list(METHODS), ["TR_uni", "TR_rms", "Adam"],
                              help="TR_* are the second-order trust-region methods of Algorithm 1; the "
                              "others are first-order baselines.")
    url_select_slider("TR batch size (paper: 512)", f"{P}_tr_batch", [32, 64, 128, 256, 512, 1024], 512)
    url_select_slider("First-order batch size (paper: 32)", f"{P}_fo_batch", [8, 16, 32, 64, 128, 256], 32)
    url_radio("Order of the methods", f"{P}_schedule", list(SCHEDULE_LABELS), "backprops",
              format_func=SCHEDULE_LABELS.get, horizontal=False,
              help="Interleaving lets all curves grow together; one thread computes at a time either way.")
with col_budget:
    url_select_slider("Budget per method (backprops)", f"{P}_budget",
                      [100, 200, 500, 1000, 2000, 5000, 10000, 20000], 2000)
    url_select_slider("Max steps per method", f"{P}_max_steps",
                      [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000], 5000)
    if max_steps_cap() is not None:
        st.caption(f"This server caps every method at {max_steps_cap()} steps.")
    url_select_slider("Time limit for the whole run (s)", f"{P}_max_seconds",
                      [5, 10, 20, 30, 60, 120, 300], 60)
    url_select_slider("Evaluate on the full data every (steps)", f"{P}_eval_every", [1, 2, 5, 10, 20, 50], 5)
    url_select_slider("Accuracy target", f"{P}_acc_target", [0.5, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0], 0.95,
                      format_func=lambda v: f"{v:.0%}")
    url_select_slider("Loss target", f"{P}_loss_target", [1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0], 0.1)

with st.expander("Trust-region parameters (paper Table 1) and first-order step sizes"):
    presets = {"Paper Table 1": TABLE1, "Larger initial radius (Δ₀ = 0.01)": {**TABLE1, f"{P}_radius": 0.01}}
    preset_buttons(presets, f"{P}_preset")
    tr_cols = st.columns(4)
    with tr_cols[0]:
        url_select_slider("Initial radius Δ₀", f"{P}_radius", [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0], 1e-4)
        url_select_slider("Max radius Δ_max", f"{P}_max_radius", [1.0, 10.0, 100.0], 10.0)
    with tr_cols[1]:
        url_select_slider("η₁ (accept if ρ ≥ η₁)", f"{P}_eta1", [1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.25], 1e-4)
        url_select_slider("η₂ (grow if ρ ≥ η₂)", f"{P}_eta2", [0.5, 0.75, 0.9, 0.95, 0.99], 0.95)
    with tr_cols[2]:
        url_select_slider("γ₁ (growth)", f"{P}_gamma1", [1.05, 1.1, 1.25, 1.5, 2.0, 3.0], 1.1)
        url_select_slider("γ₂ shrink, TR_uni / TR_ada", f"{P}_gamma2_uni", [1.25, 1.5, 1.75, 2.0, 3.0], 1.5)
        url_select_slider("γ₂ shrink, TR_rms", f"{P}_gamma2_rms", [1.25, 1.5, 1.75, 2.0, 3.0], 1.75)
    with tr_cols[3]:
        for method in [m for m in FIRST_ORDER if m in methods]:
            spec = METHODS[method]
            url_select_slider(f"{method} step size", f"{P}_lr_{method}", list(spec.lr_grid), spec.default_lr)
        if not any(m in FIRST_ORDER for m in methods):
            st.caption("Select a first-order method to set its step size.")

running = run is not None and run.running
buttons = st.columns([1, 1, 6])
buttons[0].button("Start", key=f"{P}_start", type="primary", on_click=start_run, args=(holder,),
                  disabled=running or not methods)
buttons[1].button("Stop", key=f"{P}_stop", on_click=stop_run, args=(holder,), disabled=not running)
if not methods:
    buttons[2].warning("Select at least one method.")
start_error = st.session_state.get(f"{P}_start_error")
if start_error:
    st.error(f"Could not start: {start_error}")

view = st.columns([3, 2])
with view[0]:
    x_axis = url_radio("x-axis", f"{P}_x", list(X_AXES), "backprops", horizontal=True,
                       format_func=X_LABELS.get)
with view[1]:
    log_y = url_toggle("Log-scale loss axis", f"{P}_log", True)


# ---------------------------------------------------------------- live part
@st.fragment(run_every=POLL_SECONDS if running else None)
def live_view() -> None:
    current = holder.run
    settings = st.session_state.get(f"{P}_settings") or {}
    if current is None:
        empty_steps, empty_evals = pd.DataFrame(columns=STEP_COLUMNS), pd.DataFrame(columns=EVAL_COLUMNS)
        st.plotly_chart(loss_figure(empty_steps, empty_evals, x=x_axis, log_y=log_y),
                        key=f"{P}_loss_chart", width="stretch")
        st.info("Choose the methods and press **Start**. Curves appear here as the worker trains.")
        return
    snap = current.snapshot()
    st.progress(snap.progress, text=f"{snap.status} · {snap.elapsed:.1f} s · {snap.message}")
    if snap.status.startswith("failed"):
        st.error(snap.status)
    for method, error in snap.errors.items():
        if snap.method_status.get(method) == "diverged":
            st.warning(f"{method} diverged: {error}")
    st.plotly_chart(
        loss_figure(snap.steps, snap.evals, x=x_axis, log_y=log_y, methods=snap.methods,
                    loss_target=settings.get("loss_target")),
        key=f"{P}_loss_chart", width="stretch",
    )
    left, right = st.columns(2)
    with left:
        st.plotly_chart(accuracy_figure(snap.evals, x=x_axis, methods=snap.methods,
                                        accuracy_target=settings.get("accuracy_target")),
                        key=f"{P}_acc_chart", width="stretch")
    with right:
        st.plotly_chart(cg_iterations_figure(snap.steps, x=x_axis, methods=snap.methods),
                        key=f"{P}_cg_chart", width="stretch")
    st.plotly_chart(trust_region_figure(snap.steps, x=x_axis, methods=snap.methods,
                                        eta1=settings.get("eta1"), eta2=settings.get("eta2")),
                    key=f"{P}_tr_chart", width="stretch")

    loss_target, acc_target = settings.get("loss_target"), settings.get("accuracy_target")
    summary = summarize(snap.steps, snap.evals, methods=snap.methods, statuses=snap.method_status,
                        loss_target=loss_target, accuracy_target=acc_target)
    if acc_target is not None:
        st.markdown(describe_race(summary, "backprops_to_acc", f"{acc_target:.0%} training accuracy"))
    if snap.running:
        return
    if running:  # the timer was set for this run: one full rerun drops it
        st.rerun()
    if snap.status == "finished":
        st.success(f"Run finished. {snap.message}")
    elif snap.status == "stopped":
        st.info(f"Run stopped. {snap.message}")
    if loss_target is not None:
        st.markdown(describe_race(summary, "backprops_to_loss", f"a training loss of {loss_target:g}"))
    st.dataframe(
        summary.rename(columns=SUMMARY_LABELS),
        key=f"{P}_summary", hide_index=True, width="stretch",
    )
    st.download_button("Download the run's metrics (CSV)", metrics_csv(snap.steps, snap.evals),
                       file_name="live_training_metrics.csv", mime="text/csv", key=f"{P}_download")


live_view()

# ---------------------------------------------------------------- the formula and why
eta1, eta2 = float(_state("eta1")), float(_state("eta2"))
gamma1, gamma2_rms = float(_state("gamma1")), float(_state("gamma2_rms"))
st.markdown("**One TR step** (Algorithm 1): solve the subproblem in the ellipsoid of the method, then "
            "judge the step by the ratio of actual to predicted decrease.")
st.latex(
    r"\min_{\|s\|_{A_t}\le\Delta_t} m_t(s)=f_t+g_t^\top s+\tfrac12 s^\top H_t s,\qquad "
    r"\rho_t=\frac{f(w_t)-f(w_t+s_t)}{m_t(0)-m_t(s_t)}"
)
st.latex(
    rf"\Delta_{{t+1}}=\begin{{cases}}\min({gamma1:g}\,\Delta_t,\ {float(_state('max_radius')):g}) & "
    rf"\rho_t\ge {eta2:g}\\ \Delta_t & {eta1:g}\le\rho_t<{eta2:g}\\ "
    rf"\Delta_t/{gamma2_rms:g}\ (\text{{TR\_rms}}) & \rho_t<{eta1:g}\ (\text{{step rejected}})\end{{cases}}"
)
tr_selected = [m for m in methods if m in TR_METHODS]
first_selected = [m for m in methods if m in FIRST_ORDER]
radius0 = float(_state("radius"))
st.caption(
    f"The radius starts at Δ₀ = {radius0:g} and can grow by at most ×{gamma1:g} per step, so it "
    f"needs about {math.log(max(1.0, 1.0 / radius0)) / math.log(gamma1):.0f} very successful "
    f"steps to reach 1. A_t is the identity for TR_uni and the Adagrad / RMSProp diagonal for TR_ada / "
    f"TR_rms. Selected: {', '.join(tr_selected) or 'no TR method'} with batch {int(_state('tr_batch'))}; "
    f"{', '.join(first_selected) or 'no first-order method'} with batch {int(_state('fo_batch'))}."
)
st.markdown(
    "Why backprops: a TR step costs one gradient backprop plus one extra backprop per Hessian-vector "
    "product inside CG, so counting backprops (not steps) compares methods at equal work. "
    "Switch the x-axis to *epochs* to see the price of the larger TR batch (Fig. 9), or to *seconds* for "
    "wall-clock cost (Fig. 10)."
)
