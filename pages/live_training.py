"""Live training: ellipsoidal vs spherical trust regions vs first-order methods (paper section 5).

A run belongs to the server (``etr_core.live.default_registry``): it trains in a worker process,
its id goes into the URL (``?run=<id>``), and any tab with that link re-attaches to it, running or
finished, with every curve, the summary and the CSV. Only the browser that started a run may stop it
(``ui.owner``: a per-browser id from Streamlit's own cookie, never a token in the link); anyone else
with the link watches it and may start a copy of it that they own. A run's worker CPU counts against
its owner's rolling budget (``etr_core.cpu_budget``). This page only submits, stops and draws; each
poll asks the run for the rows it has not seen yet and rebuilds the charts only when there are some.
Polls are spaced by :func:`etr_core.live.settings.poll_seconds`: a queued tab checks every few
seconds, a training tab more often, less so the more runs the server has active.
"""

from __future__ import annotations

import streamlit as st
import torch

from etr_core.cpu_budget import default_budget, describe_wait
from etr_core.data import FILE_DATASETS, available_datasets, default_root
from etr_core.devices import describe_device
from etr_core.devices import device as resolve_device
from etr_core.live import (
    TIME_LIMITS_S,
    LiveRun,
    RunRefused,
    comparison_configs,
    default_registry,
    env_limit,
    max_steps_cap,
    start_worker_server,
)
from etr_core.live.foreground import default_gate, max_wait_seconds
from etr_core.live.settings import poll_seconds
from etr_core.models import MODEL_DESCRIPTIONS
from etr_core.training import METHODS, resolve_tr_config
from etr_core.viz.live_plots import X_AXES
from etr_core.viz.measured_results import measured_markdown
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
from ui.live_panels import radius_start_text, show_run, show_tr_step_formula, url_run_id
from ui.owner import browser_owner, owner_is_per_browser

ensure_app_frame()

P = "lt"  # widget-key prefix of this page

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
TR_KNOBS = ("radius", "max_radius", "eta1", "eta2", "gamma1")
PRESET_LABELS = {  # the TR methods' starting configuration (etr_core.training.resolve_tr_config)
    "paper": "paper: Table 1",
    "fast": "fast: automatic initial radius",
    "authors": "authors: their parameter files",
}
TABLE1 = {  # paper appendix C, Table 1
    f"{P}_radius": 1e-4, f"{P}_max_radius": 10.0, f"{P}_eta1": 1e-4, f"{P}_eta2": 0.95,
    f"{P}_gamma1": 1.1, f"{P}_gamma2_uni": 1.5, f"{P}_gamma2_rms": 1.75, f"{P}_tr_batch": 512,
    f"{P}_tr_preset": "paper",
}


@st.cache_resource(show_spinner=False)
def worker_server() -> float:
    """Start the fork server the training workers come from, once per server process."""
    return start_worker_server()


@st.cache_data(ttl=60, show_spinner=False)
def file_datasets_present(root: str) -> list[str]:
    """File data sets whose files are under ``root`` (presence only; the worker reads them)."""
    return [name for name in available_datasets(root) if name in FILE_DATASETS]


def _state(key: str):
    return st.session_state[f"{P}_{key}"]


def start_run() -> None:
    """Start button: one config per method from the widgets; the run is filed under a new id."""
    st.session_state[f"{P}_start_error"] = None
    methods = list(_state("methods"))
    preset = _state("tr_preset")
    knobs = preset != "authors"  # the authors' files set every TR parameter, batch included
    try:
        dataset = _state("dataset")
        data_options = {"max_train": int(_state("max_train"))} if dataset in FILE_DATASETS else {}
        configs = comparison_configs(
            methods, dataset=dataset, model=_state("model"), seed=global_seed(), preset=preset,
            tr_batch_size=int(_state("tr_batch")) if knobs else None,
            first_order_batch_size=int(_state("fo_batch")),
            learning_rates={m: float(st.session_state.get(f"{P}_lr_{m}", METHODS[m].default_lr))
                            for m in methods if m in FIRST_ORDER},
            tr_options={name: float(_state(name)) for name in TR_KNOBS} if knobs else None,
            gamma2={"TR_uni": float(_state("gamma2_uni")), "TR_ada": float(_state("gamma2_uni")),
                    "TR_rms": float(_state("gamma2_rms"))} if knobs else None,
            max_steps=int(_state("max_steps")), eval_every=int(_state("eval_every")),
            device=_state("device"), data_options=data_options,
        )
        tr_configs = [resolve_tr_config(c) for c in configs if c.is_tr]
        eta1, eta2 = ((tr_configs[0].eta1, tr_configs[0].eta2) if tr_configs
                      else (float(_state("eta1")), float(_state("eta2"))))
        settings = {"accuracy_target": float(_state("acc_target")),
                    "loss_target": float(_state("loss_target")), "eta1": eta1, "eta2": eta2,
                    "preset": preset, "presets": {c.method: c.preset for c in configs if c.is_tr}}
        run = default_registry().submit(
            configs, owner=browser_owner(), max_seconds=float(_state("max_seconds")),
            max_backprops=int(_state("budget")), schedule=_state("schedule"),
            nice=int(env_limit("ETR_LIVE_NICE")), sched_idle=bool(env_limit("ETR_LIVE_SCHED_IDLE")),
            foreground=gate.path if (gate := default_gate()) is not None else None,
            yield_max_wait=max_wait_seconds(), settings=settings)
    except (ValueError, TypeError, RunRefused) as exc:
        st.session_state[f"{P}_start_error"] = str(exc)
        return
    st.query_params["run"] = run.id


def stop_run(run_id: str) -> None:
    """Stop button: only signals the worker (and only for the browser that started the run); it stops
    after its current step, keeping every row."""
    default_registry().stop(run_id, browser_owner())


def copy_run(run_id: str) -> None:
    """Button "Start a copy of this run": the same settings as a new run this browser owns."""
    st.session_state[f"{P}_start_error"] = None
    try:
        run = default_registry().copy(run_id, browser_owner())
    except (ValueError, TypeError, RunRefused) as exc:
        st.session_state[f"{P}_start_error"] = str(exc)
        return
    st.query_params["run"] = run.id


worker_server()
run_id, bad_run_id = url_run_id()
run: LiveRun | None = default_registry().get(run_id) if run_id else None

st.title("Live training: do ellipsoidal trust regions train faster?")
st.markdown(
    "Train the same network with the spherical trust region (**TR_uni**), the ellipsoidal ones "
    "(**TR_ada**, **TR_rms**) and first-order methods, and watch the loss fall against the paper's "
    "cost unit, backpropagations (Figs. 3 and 4)."
)
if bad_run_id:
    st.warning("The link's `run` value is not a run id; showing a new comparison instead.")
elif run_id and run is None:
    st.warning(
        f"Run `{run_id}` is not on this server (any more). Finished runs are kept for "
        f"{env_limit('ETR_LIVE_KEEP_SECONDS') / 60:g} minutes, at most the last "
        f"{env_limit('ETR_LIVE_KEEP_RUNS')}, and all runs are lost when the server restarts."
    )

# ---------------------------------------------------------------- controls
files_here = file_datasets_present(str(default_root()))
col_data, col_methods, col_budget = st.columns(3)
with col_data:
    dataset = url_selectbox("Data set", f"{P}_dataset", GENERATED + files_here, "digits",
                            format_func=lambda n: DATASET_LABELS.get(n, n))
    if dataset == "fashion_mnist":
        st.caption("If these are the project's shared files, their train/test split is reconstructed "
                   "(see the data README): report results as *Fashion-MNIST (reconstructed split)*.")
    missing = [name for name in FILE_DATASETS if name not in files_here]
    if missing:
        st.caption(f"Not on this server: {', '.join(DATASET_LABELS[n].split(' (')[0] for n in missing)} "
                   "(put the files under the folder named by ETR_DATA).")
    if dataset in FILE_DATASETS:
        url_select_slider("Training examples used", f"{P}_max_train", [1000, 2000, 5000, 10000, 20000, 60000],
                          5000, help="The worker keeps a copy of the first examples only.")
    model = url_selectbox("Network", f"{P}_model", NETWORKS, "mlp_small",
                          format_func=lambda n: f"{n}: {MODEL_DESCRIPTIONS[n]}")
    devices_offered = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    chosen_device = url_selectbox("Device", f"{P}_device", devices_offered, "auto",
                                  format_func=lambda d: {"auto": "auto (CUDA when present)"}.get(d, d))
    runs_on = describe_device(resolve_device(chosen_device))
    st.caption(f"Runs on **{runs_on.split(' (')[0]}** in a worker process" +
               (", one torch thread" if runs_on.startswith("cpu") else f" ({runs_on})"))
with col_methods:
    methods = url_multiselect("Methods", f"{P}_methods", list(METHODS), ["TR_uni", "TR_rms", "Adam"],
                              help="TR_* are the second-order trust-region methods of Algorithm 1; the "
                              "others are first-order baselines.")
    preset = url_radio("TR preset", f"{P}_tr_preset", list(PRESET_LABELS), "paper",
                       format_func=PRESET_LABELS.get, horizontal=False,
                       help="Where the TR methods start from. paper: Table 1 (Δ₀ = 1e-4). fast: Table 1, "
                       "but Δ₀ is chosen at the first step as the length of that step's Cauchy point "
                       "(one extra Hessian-vector product). authors: the values of the authors' files "
                       "for this data set, with their warm-up and batch-size pivot.")
    if preset == "authors":
        st.caption("The authors' files set every TR parameter (batch size included): the TR batch size and "
                   "the Table 1 parameters below are not used. Available for digits (their MNIST values), "
                   "MNIST, Fashion-MNIST and CIFAR-10.")
    url_select_slider("TR batch size (paper: 512)", f"{P}_tr_batch", [32, 64, 128, 256, 512, 1024], 512)
    url_select_slider("First-order batch size (paper: 32)", f"{P}_fo_batch", [8, 16, 32, 64, 128, 256], 32)
    url_radio("Order of the methods", f"{P}_schedule", list(SCHEDULE_LABELS), "backprops",
              format_func=SCHEDULE_LABELS.get, horizontal=False,
              help="Interleaving lets all curves grow together; one method computes at a time either way.")
with col_budget:
    url_select_slider("Budget per method (backprops)", f"{P}_budget",
                      [100, 200, 500, 1000, 2000, 5000, 10000, 20000], 2000,
                      help="With Table 1's Δ₀ = 1e-4 and γ₁ = 1.1 the radius reaches 0.1 after roughly "
                      "150-200 backprops on digits; 2,000 leave room for the race after that.")
    url_select_slider("Max steps per method", f"{P}_max_steps",
                      [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000], 5000)
    if max_steps_cap() is not None:
        st.caption(f"This server caps every method at {max_steps_cap()} steps.")
    url_select_slider("Time limit for the whole run (s)", f"{P}_max_seconds",
                      list(TIME_LIMITS_S), 60)
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

me, budget = browser_owner(), default_budget()
mine = run is not None and run.owner == me
active = run is not None and run.running
out_of_cpu = budget.exhausted(me)
buttons = st.columns([1, 2, 5])
buttons[0].button("Start", key=f"{P}_start", type="primary", on_click=start_run,
                  disabled=(active and mine) or not methods or out_of_cpu)
if run is None or mine:
    buttons[1].button("Stop", key=f"{P}_stop", on_click=stop_run, args=(run_id or "",), disabled=not active)
else:  # someone else's run: watch it, or train the same settings as a run of one's own
    buttons[1].button("Start a copy of this run", key=f"{P}_copy", on_click=copy_run, args=(run.id,),
                      disabled=out_of_cpu)
if not methods:
    buttons[2].warning("Select at least one method.")
elif run is not None and not mine:
    buttons[2].caption("This run was started in another browser: you see every curve, the summary and the "
                       "CSV, but only that browser can stop it. *Start a copy of this run* trains the same "
                       "settings as a run of your own.")
elif run is not None:
    buttons[2].caption(f"Run `{run.id}`: this page's link re-attaches to it from any tab, also after "
                       "the run ends; only this browser can stop it" +
                       ("." if owner_is_per_browser() else " (here: only this tab, as the server sets no "
                        "XSRF cookie)."))
if out_of_cpu:
    st.warning(budget.message(me))
start_error = st.session_state.get(f"{P}_start_error")
if start_error:
    st.error(f"Could not start: {start_error}")

view_cols = st.columns([3, 2])
with view_cols[0]:
    x_axis = url_radio("x-axis", f"{P}_x", list(X_AXES), "backprops", horizontal=True,
                       format_func=X_LABELS.get)
with view_cols[1]:
    log_y = url_toggle("Log-scale loss axis", f"{P}_log", True)


def poll_interval(watched: LiveRun) -> float:
    """Seconds between this tab's polls of ``watched`` (an active run), from the server's load."""
    active_runs = sum(r.running for r in default_registry().runs())
    return poll_seconds(watched.status == "queued", active_runs)


poll = poll_interval(run) if active else None


# ---------------------------------------------------------------- live part
@st.fragment(run_every=poll)
def live_view() -> None:
    show_run(run_id, P, x_axis, log_y, rerun_when_ended=active, poll_s=poll)
    if poll is not None and run.running and poll_interval(run) != poll:
        st.rerun()  # the run left the queue or the server's load changed: only a full run resets the timer


live_view()

# ---------------------------------------------------------------- the formula and why
eta1, eta2 = float(_state("eta1")), float(_state("eta2"))
gamma1, gamma2_rms = float(_state("gamma1")), float(_state("gamma2_rms"))
show_tr_step_formula(eta1, eta2, gamma1, float(_state("max_radius")), gamma2_rms)
tr_selected = [m for m in methods if m in TR_METHODS]
first_selected = [m for m in methods if m in FIRST_ORDER]
radius0 = float(_state("radius"))
st.caption(
    f"{radius_start_text(preset, radius0, gamma1)} A_t is the identity for TR_uni and the Adagrad / "
    f"RMSProp diagonal for TR_ada / TR_rms. Selected: {', '.join(tr_selected) or 'no TR method'} with batch "
    f"{'of the files' if preset == 'authors' else int(_state('tr_batch'))}; "
    f"{', '.join(first_selected) or 'no first-order method'} with batch {int(_state('fo_batch'))}."
)
st.markdown(
    "Why backprops: a TR step costs one gradient backprop plus one extra backprop per Hessian-vector "
    "product inside CG, so counting backprops (not steps) compares methods at equal work. "
    "Switch the x-axis to *epochs* to see the price of the larger TR batch (Fig. 9), or to *seconds* for "
    "wall-clock cost (Fig. 10)."
)
with st.expander("What this project measured on the real data (not the paper's numbers)"):
    st.markdown(measured_markdown())
beyond = [m for m in methods if m in ("TR_hess", "ARC_rms")]
st.markdown(
    "**Beyond the paper: TR_hess and ARC_rms** (its section 6 and footnote 4). TR_hess draws its ellipsoid "
    "from the Hessian's diagonal, estimated every step with a Hutchinson probe (a random ±1 vector z and "
    "one Hessian-vector product, diag(H) ≈ z ⊙ Hz), smoothed like RMSProp and floored at √ε (smoothing "
    "the squares of one probe, its m follows the Hessian's row norms rather than |diag(H)|); those "
    "products are counted as backprops, so its loss curve pays for them on the x-axis. ARC_rms has no "
    "region: it minimises the quadratic model plus σ/3·‖s‖³ in the RMSProp norm, and in the radius panel "
    "its line, labelled “sigma (ARC)”, is σ, which moves the opposite way to a radius: it starts where "
    "the first step's Cauchy point puts it, is halved after a very successful step and multiplied by 4 "
    "after a rejected one; its Krylov panel counts Lanczos products. "
    + (f"Selected now: {', '.join(beyond)}." if beyond else "Add them under Methods to see both.")
)
st.caption(
    "A method is marked **converged** when its training loss reaches the rounding floor of float32 "
    "(1.2e-7), and **stalled** when all of its last 50 trust-region steps were rejected or its radius fell "
    "below 1e-10; either way it stops and leaves its budget unused. Runs belong to the server: at most "
    f"{env_limit('ETR_LIVE_MAX_RUNS')} train at once (the rest queue, first come first served), one "
    f"per browser; a run's worker CPU counts against its browser's budget of {budget.seconds:g} s per "
    f"{describe_wait(budget.window)} (shared with the Hessian page), and a run that uses it up stops, "
    "keeping what it computed."
)
