"""Adaptive methods are trust-region methods (paper section 3.1, Theorem 1, Corollary 1, Fig. 1, Fig. 5).

Every number comes from ``etr_core.toy`` (quadratics, first-order methods with their implicit trust
regions, random starts) and every figure from ``etr_core.viz.geometry``.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from etr_core.toy.first_order import METHOD_LABELS, METHOD_NAMES, TR_METHODS, run_method
from etr_core.toy.quadratics import make_quadratic
from etr_core.toy.random_starts import suboptimality_bands
from etr_core.toy.theorem1 import check_theorem1
from etr_core.viz.geometry import add_step_region, as_figure, suboptimality_figure, trajectory_figure_spec
from ui.common import (
    global_seed,
    preset_buttons,
    url_checkbox,
    url_select_slider,
    url_selectbox,
    url_slider,
    url_toggle,
)
from ui.frame import ensure_app_frame
from ui.interaction import start_setter
from ui.presentation import control_panel, page_columns, presentable

ensure_app_frame()

P = "itr"  # widget-key prefix of this page
BOUNDS = (-3.3, 3.3, -3.3, 3.3)
KAPPAS = [1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000, 5000, 10000]
GD_RELATIVE = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 1.75, 1.9, 2.0, 2.05, 2.2, 2.5, 3.0]
STEP_SIZES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]
RADII = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]
DEFAULT_LR = {"gd": 0.5, "adagrad": 0.5, "adagrad_full": 0.5, "rmsprop": 0.1, "adam": 0.2,
              "tr_sphere": 0.3, "tr_adagrad": 0.3}
DEFAULT_ON = {"gd": True, "adagrad": True}
N_STARTS = 30


def _method_state(on: set[str], lr: dict[str, float] | None = None) -> dict:
    values: dict = {f"{P}_use_{m}": m in on for m in METHOD_NAMES}
    for m, v in (lr or {}).items():
        values[f"{P}_lr_{m}"] = v
    return values


PRESETS = {
    "Fig. 1 left": {f"{P}_kappa": 1, f"{P}_theta": 0, f"{P}_x0": -2.5, f"{P}_y0": 1.5, f"{P}_iters": 40,
                    **_method_state({"gd", "adagrad"}, {"gd": 0.5, "adagrad": 0.5})},
    "Fig. 1 centre": {f"{P}_kappa": 20, f"{P}_theta": 0, f"{P}_x0": -2.5, f"{P}_y0": 1.5, f"{P}_iters": 40,
                      **_method_state({"gd", "adagrad"}, {"gd": 0.5, "adagrad": 0.5})},
    "Fig. 1 right": {f"{P}_kappa": 20, f"{P}_theta": 30, f"{P}_x0": -2.5, f"{P}_y0": 1.5, f"{P}_iters": 40,
                     **_method_state({"gd", "adagrad", "adagrad_full"},
                                     {"gd": 0.5, "adagrad": 0.5, "adagrad_full": 0.5})},
    "Fig. 5": {f"{P}_kappa": 100, f"{P}_theta": 0, f"{P}_x0": 2.0, f"{P}_y0": 1.0, f"{P}_iters": 60,
               **_method_state({"gd", "adagrad", "tr_sphere", "tr_adagrad"},
                               {"gd": 1.0, "adagrad": 1.0, "tr_sphere": 0.3, "tr_adagrad": 0.3})},
}


@st.cache_data(max_entries=256, show_spinner=False)
def _geometry_note(kappa: float, theta: float) -> str:
    """One sentence on whether a diagonal ellipse can fit the current level sets."""
    tilt = abs(((float(theta) + 45.0) % 90.0) - 45.0)  # angle to the nearest coordinate axis
    if kappa <= 1.0:
        return ("Here κ = 1: the level sets are circles, so the sphere is already the right shape and "
                "every method's region only rescales it.")
    if tilt < 1.0:
        return ("Here the level sets are axis-aligned, so a diagonal ellipse can match them; rotate them "
                "(preset Fig. 1 right) and it no longer fits.")
    return (f"Here the level sets are tilted {tilt:.0f}° from the axes: no diagonal ellipse can follow the "
            "valley, while the full-matrix Adagrad ellipse can rotate with it (section 3.2).")


KEY_T = f"{P}_check_t"  # the iteration shown by Step and checked against Theorem 1


def _advance(last: int) -> None:
    """Step button: the next iteration (back to 0 after the last) and show it on the chart."""
    current = int(st.session_state.get(KEY_T, 0))
    st.session_state[KEY_T] = 0 if current >= last else current + 1
    st.session_state[f"{P}_step_on"] = True


def _trajectory(kappa: float, theta: float, x0: float, y0: float, n_iter: int, method: str, lr: float):
    return run_method(make_quadratic(kappa, theta), method, lr, n_iter, (x0, y0))


@st.cache_data(max_entries=32, show_spinner=False)
def _figure(kappa: float, theta: float, x0: float, y0: float, n_iter: int, runs: tuple, show_tr: bool):
    problem = make_quadratic(kappa, theta)
    trajectories = [_trajectory(kappa, theta, x0, y0, n_iter, m, lr) for m, lr in runs]
    return trajectory_figure_spec(problem, trajectories, bounds=BOUNDS, show_trust_regions=show_tr,
                                  click_bounds=(-3.0, 3.0, -3.0, 3.0))


@st.cache_data(max_entries=32, show_spinner=False)
def _band_figure(kappa: float, theta: float, start_radius: float, n_iter: int, runs: tuple, seed: int):
    problem = make_quadratic(kappa, theta)
    bands = suboptimality_bands(problem, dict(runs), n_iter, n_starts=N_STARTS, start_radius=start_radius,
                                seed=seed)
    diverged = {METHOD_LABELS[m]: b.n_diverged for m, b in bands.items() if b.n_diverged}
    return suboptimality_figure(bands), diverged


def _log_sub(tr) -> str:
    return f"{np.log10(max(float(tr.values[-1]), 1e-300)):.3g}"


def _adagrad_vs_tr(trajectories: dict) -> str:
    """Two sentences on Fig. 5: what the reader sees and how it relates to appendix B's claim."""
    ada, tr = trajectories["adagrad"], trajectories["tr_adagrad"]
    rejected = int((~tr.accepted).sum())
    sphere = ""
    if "gd" in trajectories and "tr_sphere" in trajectories:
        sphere = (f" (GD {_log_sub(trajectories['gd'])}, 1st-order TR sphere "
                  f"{_log_sub(trajectories['tr_sphere'])})")
    return (
        "**Adagrad and its trust-region twin.** Both step along −A_t⁻¹g_t in the same Adagrad ellipse "
        "(Theorem 1) and differ only in the step's length: Adagrad's η‖g_t‖ in the A_t⁻¹-norm shrinks with "
        "the gradient, while the TR radius Δ_t shrinks only after a rejected step (÷1.5), so near w* its "
        f"steps overshoot and {rejected} of its {tr.n_steps} steps were rejected, ending at log10(f − f*) = "
        f"{_log_sub(tr)} against Adagrad's {_log_sub(ada)}. Appendix B's \"very similar to their "
        "constant-stepsize analogues\" holds for the paths and for the ellipse beating the sphere"
        f"{sphere}, not for the final rate, which a first-order TR's radius rule sets."
    )


def _vec(v: np.ndarray, digits: int) -> str:
    return rf"\begin{{pmatrix}}{v[0]:.{digits}g} \\ {v[1]:.{digits}g}\end{{pmatrix}}"


def _mat(a: np.ndarray) -> str:
    return rf"\begin{{pmatrix}}{a[0, 0]:.4g} & {a[0, 1]:.4g} \\ {a[1, 0]:.4g} & {a[1, 1]:.4g}\end{{pmatrix}}"


st.title("Adaptive methods are trust-region methods")
st.markdown("Every step of GD, Adagrad, RMSProp or Adam minimises a *linear* model of f over an ellipse "
            "around the current iterate (paper Theorem 1). Change the problem and watch the ellipses.")

preset_buttons(PRESETS, f"{P}_preset")

# The chart's column comes first, so on a phone (columns stacked) the picture is above the controls.
chart_col, ctrl_col = page_columns()
controls = control_panel(ctrl_col)
with controls:
    st.markdown("**Problem** f(w) = ½ (w − w*)ᵀ Q (w − w*)")
    kappa = url_select_slider("Condition number κ (log scale)", f"{P}_kappa", KAPPAS, 20)
    theta = url_slider("Rotation θ of the level sets (degrees)", f"{P}_theta", 0, 90, 0, step=5)
    c1, c2 = st.columns(2)
    with c1:
        x0 = url_slider("Start w₁", f"{P}_x0", -3.0, 3.0, -2.5, step=0.1)
    with c2:
        y0 = url_slider("Start w₂", f"{P}_y0", -3.0, 3.0, 1.5, step=0.1)
    n_iter = url_slider("Iterations", f"{P}_iters", 1, 200, 40)
    show_tr = url_toggle("Show trust regions", f"{P}_show_tr", True)
    st.markdown("**Methods** and their step sizes (GD: η·L; TR methods: initial radius Δ₀)")
    runs: list[tuple[str, float]] = []
    problem = make_quadratic(float(kappa), float(theta))
    for method in METHOD_NAMES:
        c_use, c_lr = st.columns([1, 1.1])
        with c_use:
            use = url_checkbox(METHOD_LABELS[method], f"{P}_use_{method}", DEFAULT_ON.get(method, False))
        with c_lr:
            if method == "gd":
                rel = url_select_slider("η·L", f"{P}_lr_gd", GD_RELATIVE, DEFAULT_LR["gd"],
                                        label_visibility="collapsed", format_func=lambda v: f"η·L = {v:g}")
                lr = float(rel) / problem.L
            elif method in TR_METHODS:
                lr = float(url_select_slider("Δ₀", f"{P}_lr_{method}", RADII, DEFAULT_LR[method],
                                             label_visibility="collapsed",
                                             format_func=lambda v: f"Δ₀ = {v:g}"))
            else:
                lr = float(url_select_slider("η", f"{P}_lr_{method}", STEP_SIZES, DEFAULT_LR[method],
                                             label_visibility="collapsed",
                                             format_func=lambda v: f"η = {v:g}"))
        if use:
            runs.append((method, lr))

kappa, theta, x0, y0, n_iter = float(kappa), float(theta), float(x0), float(y0), int(n_iter)
trajectories = {m: _trajectory(kappa, theta, x0, y0, n_iter, m, lr) for m, lr in runs}
checkable = [m for m in trajectories if trajectories[m].n_steps > 0]
method, t, step_on = None, 0, False
with controls:
    st.markdown("**One iteration** (its implicit trust region and Theorem 1 below)")
    if checkable:
        method = url_selectbox("Method", f"{P}_check_method", checkable, checkable[0],
                               format_func=lambda m: METHOD_LABELS[m])
        last = trajectories[method].n_steps - 1
        if st.session_state.get(KEY_T, 0) > last:
            st.session_state[KEY_T] = last
        t = min(int(url_slider("Iteration t", KEY_T, 0, max(last, 1), 0)) if last > 0 else 0, last)
        step_on = url_toggle("Show iteration t on the chart", f"{P}_step_on", False)
        st.button("Step ▶ (next iteration)", key=f"{P}_step_next", on_click=_advance, args=(last,),
                  width="stretch")

with chart_col:
    for tr in trajectories.values():
        if tr.message:
            st.warning(tr.message)
        for note in tr.notes:
            st.info(f"{tr.label}: {note}")
    if not runs:
        st.info("Switch on at least one method to see its iterates and trust regions.")
    fig = as_figure(_figure(kappa, theta, x0, y0, n_iter, tuple(runs), bool(show_tr)))
    if step_on and method is not None:
        add_step_region(fig, trajectories[method], t)
    st.plotly_chart(presentable(fig), key=f"{P}_geometry", width="stretch", selection_mode="points",
                    on_select=start_setter(f"{P}_geometry", f"{P}_x0", f"{P}_y0", -3.0, 3.0, 0.1))
    region_text = ("Dashed: the implicit trust region of every k-th step (at most 12 per method); scrub "
                   "the slider or press Play to replay the run in the browser.") if show_tr else \
        "Trust regions hidden."
    st.caption(f"{problem.describe()}; start w₀ = ({x0:g}, {y0:g}) (click the landscape to move it), "
               f"{n_iter} iterations. "
               + "; ".join(f"{tr.label}: f(w_{tr.n_steps}) = {tr.values[-1]:.3g}"
                           for tr in trajectories.values())
               + f". {region_text}")

st.markdown(f"**Why.** GD's trust region is a circle: it cannot tell the steep direction (curvature "
            f"L = {problem.L:g}) from the flat one (μ = {problem.mu:g}), so one step size must stay below "
            f"2/L = {2 / problem.L:.4g} and crawls along the valley. Adagrad's ellipse "
            "A = diag(√(Σ g² + ε)) is short where gradients were large and long where they were small, "
            f"so the same step travels further along the flat direction. {_geometry_note(kappa, theta)}")

if "adagrad" in trajectories and "tr_adagrad" in trajectories:
    st.markdown(_adagrad_vs_tr(trajectories))

st.subheader("Log suboptimality over random starts")
if runs:
    start_radius = max(float(np.hypot(x0, y0)), 0.1)
    with st.spinner(f"Running {N_STARTS} random starts per method..."):
        band_fig, diverged = _band_figure(kappa, theta, start_radius, n_iter, tuple(runs), global_seed())
    st.plotly_chart(presentable(band_fig), key=f"{P}_bands", width="stretch")
    st.caption(f"Mean and 90 % band (5th to 95th percentile) of log10(f(w_t) − f*) over {N_STARTS} starts "
               f"drawn on the circle of radius {start_radius:.3g} around w* (seed {global_seed()}), "
               "as in Fig. 1 (bottom)."
               + ("" if not diverged else " Diverged runs (dropped after divergence): "
                  + ", ".join(f"{k}: {v}/{N_STARTS}" for k, v in diverged.items()) + "."))

st.subheader("Check Theorem 1 at one iterate")
if method is None:
    st.info("Switch on a method (with at least one step) to check Theorem 1.")
else:
    tr = trajectories[method]
    try:
        check = check_theorem1(tr, t)
    except ValueError as err:
        st.info(f"Theorem 1 needs a non-zero gradient: {err}.")
    else:
        s, c, d = check.method_step, check.closed_form_step, check.boundary_search_step
        q, A = check.model_gradient, check.shape
        st.latex(rf"s_t = -\eta_t A_t^{{-1}} q_t = {_vec(s, 6)},\quad "
                 rf"\arg\min_{{\|s\|_{{A_t}} \le r_t}} q_t^\top s = {_vec(c, 6)}")
        st.latex(rf"A_t = {_mat(A)},\; q_t = {_vec(q, 4)},\; r_t = \eta_t \|q_t\|_{{A_t^{{-1}}}} = "
                 rf"{check.radius:.6g},\; \|s_t\|_{{A_t}} = {check.step_norm_A:.6g}")
        st.latex(rf"\big\|q_t + \lambda A_t s_t / \|s_t\|_{{A_t}}\big\| = {check.kkt_residual:.2e}\quad "
                 rf"(\lambda = \|q_t\|_{{A_t^{{-1}}}} = {check.multiplier:.6g})")
        st.markdown(
            "| | step s_t | model change qᵀs |\n|---|---|---|\n"
            f"| {tr.label} (the method) | ({s[0]:.10g}, {s[1]:.10g}) | {check.method_model_change:.10g} |\n"
            f"| closed form −r A⁻¹q / ‖q‖_A⁻¹ (Cholesky) | ({c[0]:.10g}, {c[1]:.10g}) | "
            f"{check.closed_form_model_change:.10g} |\n"
            f"| search over {check.n_boundary} boundary points, refined | ({d[0]:.10g}, {d[1]:.10g}) | "
            f"{check.boundary_search_model_change:.10g} |"
        )
        model_grad = "the bias-corrected momentum m̂_t" if method == "adam" else "the gradient g_t"
        verdict = "holds" if check.holds else "does NOT hold to rounding"
        st.caption(f"Step {t} of {tr.label} from w_t = ({check.centre[0]:.4g}, {check.centre[1]:.4g}): "
                   f"q_t is {model_grad}, η_t = {check.step_size:.4g}. Theorem 1 {verdict}: the method's "
                   f"step differs from the closed form by {check.closed_form_error:.1e} and from the "
                   f"boundary search by {check.boundary_search_error:.1e}.")
