"""Second-order trust regions in 2-D (section 4, Algorithm 1): spherical vs ellipsoidal regions on
tunable quadratics and Rosenbrock, before any neural network."""

from __future__ import annotations

import numpy as np
import streamlit as st

from etr_core.toy.beyond_paper import BEYOND_LABELS, ArcHistory, hessian_diagonal_limit, run_beyond
from etr_core.toy.functions import ToyFunction, get_function, quadratic_function
from etr_core.toy.quadratics import make_quadratic
from etr_core.toy.second_order import compare_runs, iterations_table
from etr_core.toy.step_detail import tr_step_detail
from etr_core.viz.landscape import paths_figure, run_history_figure
from etr_core.viz.palette import method_colour
from ui.common import (
    preset_buttons,
    readable,
    show_table,
    url_multiselect,
    url_number,
    url_radio,
    url_select_slider,
    url_selectbox,
    url_slider,
    url_toggle,
)
from ui.frame import ensure_app_frame
from ui.interaction import start_setter
from ui.presentation import control_panel, page_columns, presentable

ensure_app_frame()

PROBLEMS = ["quadratic", "rosenbrock"]
PROBLEM_LABELS = {"quadratic": "Quadratic ½(w − w*)ᵀQ(w − w*)", "rosenbrock": "Rosenbrock"}
KAPPAS = [1, 3, 10, 30, 100, 300, 1000]
RADII = [0.001, 0.01, 0.1, 1.0, 10.0]
ITERATIONS = [50, 100, 200, 500, 1000]
CG_CAPS = [1, 50]
CG_LABELS = {1: "1 CG step (truncated, as in a network)", 50: "until Eq. 36 holds (≤ 2 steps in 2-D)"}
PAPER_METHODS = ["tr_uniform", "tr_adagrad", "tr_rms"]
BEYOND = ["tr_hess", "arc_rms"]  # the paper's future work (section 6, footnote 4)
METHODS = PAPER_METHODS + BEYOND
LABELS = {"tr_uniform": "TR_uni", "tr_adagrad": "TR_ada", "tr_rms": "TR_rms", **BEYOND_LABELS}
QUAD_VIEW = (-2.5, 2.5, -2.5, 2.5)
COORD = (-2.5, 2.5)
GTOL = 1e-6
MAX_STEP_T = max(ITERATIONS) - 1
FTOL = 1e-8

PRESETS = {
    "Axis-aligned, κ = 100": {
        "so_problem": "quadratic",
        "so_kappa": 100,
        "so_theta": 0,
        "so_cg": 1,
        "so_radius": 1.0,
        "so_w0": 2.0,
        "so_w1": 1.0,
        "so_iters": 500,
    },
    "Rotated 45°, κ = 100": {
        "so_problem": "quadratic",
        "so_kappa": 100,
        "so_theta": 45,
        "so_cg": 1,
        "so_radius": 1.0,
        "so_w0": 2.0,
        "so_w1": 1.0,
        "so_iters": 200,
    },
    "Full CG solve": {
        "so_problem": "quadratic",
        "so_kappa": 100,
        "so_theta": 0,
        "so_cg": 50,
        "so_radius": 1.0,
        "so_w0": 2.0,
        "so_w1": 1.0,
        "so_iters": 200,
    },
    "Rosenbrock": {
        "so_problem": "rosenbrock",
        "so_cg": 50,
        "so_radius": 1.0,
        "so_w0": -1.2,
        "so_w1": 1.0,
        "so_iters": 200,
    },
}


def build_problem(problem: str, kappa: float, theta: float) -> ToyFunction:
    if problem == "rosenbrock":
        return get_function("rosenbrock")
    q = make_quadratic(kappa, theta)
    return quadratic_function(q.Q, q.w_star, title=q.describe(), view=QUAD_VIEW)


@st.cache_data(max_entries=32, show_spinner=False)
def runs_for(
    problem: str,
    kappa: float,
    theta: float,
    w: tuple[float, float],
    methods: tuple[str, ...],
    radius: float,
    cg_cap: int,
    max_iter: int,
):
    fn = build_problem(problem, kappa, theta)
    paper = [m for m in methods if m not in BEYOND]
    runs = compare_runs(
        fn, w, paper, max_iter=max_iter, gtol=GTOL, radius=radius, tr_options={"max_krylov": cg_cap}
    )
    for m in methods:
        if m in BEYOND:
            runs[m] = run_beyond(fn, w, m, max_iter=max_iter, gtol=GTOL, radius=radius, max_krylov=cg_cap)
    runs = {m: runs[m] for m in methods}
    return runs, iterations_table(runs, fn, gtol=GTOL, ftol=FTOL)


def advance_step(last: int) -> None:
    """Step button: show the next iteration (from the start again after the last one)."""
    current = int(st.session_state.get("so_step_t", 0))
    st.session_state["so_step_t"] = 0 if current >= last else current + 1
    st.session_state["so_step_on"] = True


def _click_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return (max(box[0], COORD[0]), min(box[1], COORD[1]), max(box[2], COORD[0]), min(box[3], COORD[1]))


st.title("Second-order trust regions in 2-D")
st.markdown(
    "**Does the shape of the trust region matter for a second-order method?** Algorithm 1 with a sphere "
    "(TR_uni) and with the Adagrad and RMSProp ellipsoids (TR_ada, TR_rms) on the same problem, from the "
    "same start: paths, the region at each iterate, and the radius, ρ and CG work per step."
)
preset_buttons(PRESETS, "so_preset")

# The chart's column comes first, so on a phone (columns stacked) the picture is above the controls.
chart_col, ctrl_col = page_columns()
controls = control_panel(ctrl_col)
with controls:
    problem = url_radio("Problem", "so_problem", PROBLEMS, "quadratic", format_func=PROBLEM_LABELS.get)
    is_quadratic = problem == "quadratic"
    kappa = url_select_slider("Condition number κ", "so_kappa", KAPPAS, 100, disabled=not is_quadratic)
    theta = url_slider("Rotation θ (degrees)", "so_theta", 0, 90, 0, step=5, disabled=not is_quadratic)
    radius = url_select_slider("Initial radius Δ₀", "so_radius", RADII, 1.0)
    cg_cap = url_radio("Krylov solver per step", "so_cg", CG_CAPS, 1, format_func=CG_LABELS.get)
    max_iter = url_select_slider("Max iterations", "so_iters", ITERATIONS, 200)
    c3, c4 = st.columns(2)
    with c3:
        w0 = url_number("Start w₀", "so_w0", *COORD, 2.0, step=0.1, format="%.3f")
    with c4:
        w1 = url_number("Start w₁", "so_w1", *COORD, 1.0, step=0.1, format="%.3f")
    methods = url_multiselect("Methods", "so_methods", METHODS, PAPER_METHODS, format_func=LABELS.get,
                              help="TR_hess and ARC_rms go beyond the paper: its section 6 and footnote 4.")
    show_regions = url_toggle("Draw the trust region at each iterate", "so_regions", True)

if not methods:
    chart_col.info("Choose at least one method to run.")
    st.stop()

fn = build_problem(problem, float(kappa), float(theta))
with st.spinner("Running the trust-region methods..."):
    runs, table = runs_for(
        problem,
        float(kappa),
        float(theta),
        (float(w0), float(w1)),
        tuple(methods),
        float(radius),
        int(cg_cap),
        int(max_iter),
    )
box = fn.view

with controls:
    st.markdown("**Step through one run**")
    stepping = [m for m in methods if runs[m].nit > 0]
    step_method = url_selectbox("Method", "so_step_method", METHODS, METHODS[0], format_func=LABELS.get)
    last = max((runs[m].nit for m in stepping), default=1) - 1
    step_on = url_toggle("Show one iteration (model, region, CG iterates, ρ)", "so_step_on", False)
    step_t = url_slider("Iteration t", "so_step_t", 0, max(MAX_STEP_T, 1), 0)
    st.button("Step ▶ (next iteration)", key="so_step_next", on_click=advance_step, args=(max(last, 0),),
              width="stretch")

detail = arc_t = None
if step_on and step_method in runs and runs[step_method].nit > 0:
    run = runs[step_method]
    if isinstance(run, ArcHistory):
        arc_t = min(int(step_t), run.nit - 1)
    else:
        detail = tr_step_detail(fn, run, min(int(step_t), run.nit - 1))

with chart_col:
    fig = paths_figure(fn, runs, box=box, show_regions=show_regions, click_box=_click_box(box), step=detail)
    for trace in fig.data:  # the palette's colours for the methods beyond the paper
        if trace.legendgroup in BEYOND_LABELS and trace.line is not None:
            colour = method_colour(LABELS[trace.legendgroup])
            trace.line.color = colour
            if trace.marker is not None and trace.mode and "markers" in trace.mode:
                trace.marker.color = colour
    if arc_t is not None:
        arc = runs[step_method]
        end = arc.iterates[arc_t] + arc.steps[arc_t]
        fig.add_scatter(x=[arc.iterates[arc_t][0], end[0]], y=[arc.iterates[arc_t][1], end[1]],
                        mode="lines+markers", name=f"cubic-model step at w_{arc_t}",
                        line={"color": "black", "width": 3}, marker={"symbol": ["circle", "arrow"],
                        "size": [4, 15], "angleref": "previous", "color": "black"})
    st.plotly_chart(presentable(fig), key="so_paths_chart", width="stretch", on_select=start_setter(
        "so_paths_chart", "so_w0", "so_w1", *COORD), selection_mode="points")
    drawn = ", ".join(f"{r.label}: {len(range(0, r.nit, max(1, -(-r.nit // 15))))} of {r.nit}"
                      for r in runs.values())
    st.caption(
        f"{fn.title}. Start ({w0:.4g}, {w1:.4g}) (click the landscape to move it), Δ₀ = {radius:g}, "
        f"{CG_LABELS[int(cg_cap)]}. Dotted: the region ‖s‖_M ≤ Δ_t at evenly spaced iterates ({drawn}); "
        "▶ Play replays the runs with each region at the current iterate."
        if show_regions
        else f"{fn.title}. Start ({w0:.4g}, {w1:.4g}) (click the landscape to move it), Δ₀ = {radius:g}, "
        f"{CG_LABELS[int(cg_cap)]}."
    )
    if detail is not None:
        verdict = "accepted" if detail.accepted else "rejected (w stays put, Δ shrinks)"
        st.markdown(
            f"**{LABELS[step_method]}, iteration {detail.iteration}:** Δ_t = {readable(detail.radius)}, "
            f"M_t = diag({readable(detail.m[0])}, {readable(detail.m[1])}), "
            f"{len(detail.cg_points) - 1} CG iterate(s) (black diamonds, exit: {detail.exit}), predicted "
            f"decrease {readable(detail.predicted_decrease)}, ρ_t = {readable(detail.rho)}: {verdict}."
        )
    elif arc_t is not None:
        arc = runs[step_method]
        verdict = "accepted" if arc.accepted[arc_t] else "rejected (w stays put)"
        st.markdown(
            f"**{LABELS[step_method]}, iteration {arc_t}:** σ_t = {readable(arc.sigma[arc_t])}, "
            f"M_t = diag({readable(arc.m[arc_t][0])}, {readable(arc.m[arc_t][1])}); the black arrow is the "
            f"minimiser of the cubic model for this σ_t ({arc.cg_iterations[arc_t]} Lanczos product(s)), "
            f"‖s‖_M = {readable(float(np.sqrt(arc.steps[arc_t] @ (arc.m[arc_t] * arc.steps[arc_t]))))}, "
            f"ρ_t = {readable(arc.rho[arc_t])}: {verdict}; σ becomes {readable(arc.sigma_after[arc_t])}."
        )
    elif step_on:
        st.info(f"{LABELS[step_method]} is not among the runs shown: choose it under Methods.")

st.plotly_chart(presentable(run_history_figure(runs)), key="so_history_chart", width="stretch")
st.subheader("Iterations to tolerance")
show_table(table)
st.caption(
    f"‖g‖ ≤ {GTOL:g} (the runs stop there) and f − f* ≤ {FTOL:g}; “None” = not reached within "
    f"{max_iter} iterations."
)

st.latex(
    r"\min_{s}\ f(w_t) + g_t^\top s + \tfrac12 s^\top H_t s \quad \text{s.t.}\quad "
    r"\|s\|_{M_t} = \sqrt{\textstyle\sum_i m_{t,i}\, s_i^2} \le \Delta_t,\qquad "
    r"m_{t} = \sqrt{v_t + \epsilon}\ \ (\text{uniform: } m_t = 1)"
)

# ---- what the numbers say (generated from the table)
reached = {row["method"]: row["to f − f* ≤ ftol"] for row in table}
done = {k: v for k, v in reached.items() if v is not None}
lines = []
if done:
    best = min(done, key=done.get)
    ranking = ", ".join(f"{k} {v}" for k, v in sorted(done.items(), key=lambda kv: kv[1]))
    missing = [k for k, v in reached.items() if v is None]
    lines.append(
        f"Here **{best}** needed the fewest iterations to reach f − f* ≤ {FTOL:g} ({ranking}"
        + (f"; {', '.join(missing)} did not get there in {max_iter})" if missing else ")")
        + "."
    )
else:
    lines.append(f"No method reached f − f* ≤ {FTOL:g} within {max_iter} iterations.")
uni = reached.get("TR_uni")
ellipsoidal = {k: v for k, v in done.items() if k != "TR_uni"}
if "TR_uni" in reached and ellipsoidal:
    best_e = min(ellipsoidal, key=ellipsoidal.get)
    n_e = ellipsoidal[best_e]
    if uni is None:
        lines.append(f"The best ellipsoid ({best_e}, {n_e}) converged where the sphere did not.")
    elif n_e < uni:
        lines.append(
            f"The best ellipsoid ({best_e}) needed {uni / max(n_e, 1):.1f}× fewer iterations than the "
            f"sphere ({n_e} vs {uni})."
        )
    elif n_e > uni:
        lines.append(
            f"The sphere needed {n_e / max(uni, 1):.1f}× fewer iterations than the best ellipsoid "
            f"({best_e}: {uni} vs {n_e})."
        )
    else:
        lines.append(f"The sphere and the best ellipsoid ({best_e}) needed the same number of iterations.")
if is_quadratic and int(cg_cap) == 1:
    lines.append(
        "With one CG step per iteration the step lies along the *preconditioned* gradient −M⁻¹g: the "
        "ellipsoid's diagonal doubles as the CG preconditioner (appendix B.2), much as in a network where "
        "the Krylov budget is tiny compared with d. "
        + (
            "The curvature directions are the coordinate axes here (θ = 0), which is the case a diagonal M "
            "can rescale."
            if int(theta) == 0
            else f"At θ = {int(theta)}° the curvature directions are tilted and a *diagonal* M cannot align "
            "with "
            "them (section 3.2): the ellipses stay axis-parallel, so compare this with θ = 0."
        )
        + (" With κ = 1 there is no ill-conditioning for the ellipse to fix." if int(kappa) == 1 else "")
    )
elif is_quadratic:
    lines.append(
        "With the subproblem solved to Eq. 36 (in 2-D that is the exact model minimiser) every method takes "
        "the "
        "Newton step as soon as it fits in the region, so the shape matters only through how fast the region "
        "grows to contain it. The ellipsoids' m scales with |g|, so their regions are small in Euclidean "
        "terms "
        "while the gradient is large."
    )
else:
    lines.append(
        "On Rosenbrock the curvature changes along the curved valley, so the ellipsoid (accumulated squared "
        "gradients) and the region lag behind the landscape; the radius and ρ panels show where steps were "
        "rejected (crosses)."
    )
cg_total = {row["method"]: row["CG iterations"] for row in table}
lines.append(
    "Total CG iterations (= Hessian-vector products): "
    + ", ".join(f"{k} {v}" for k, v in cg_total.items())
    + "."
)
st.markdown(" ".join(lines))

# ---- beyond the paper: the Hessian-diagonal ellipsoid and ARC (generated from the runs shown)
if any(m in runs for m in BEYOND):
    arcs = {m: r for m, r in runs.items() if isinstance(r, ArcHistory) and r.nit > 0}
    if arcs:
        st.line_chart({r.label: r.sigma for r in arcs.values()}, x_label="iteration t",
                      y_label="σ_t (ARC's cubic weight)",
                      color=[method_colour(r.label) for r in arcs.values()])
    beyond = ["**Beyond the paper.**"]
    hess = runs.get("tr_hess")
    if hess is not None and hess.nit > 0:
        beyond.append(
            "TR_hess draws its region from the Hessian's diagonal (the ellipsoid section 6 names as future "
            "work): each iteration estimates diag(H) with the probes (1, 1) and (1, −1), whose Hutchinson "
            "mean is exactly diag(H) in 2-D (2 Hessian-vector products, counted), and smooths its square "
            "like RMSProp (β = 0.8)."
        )
        if is_quadratic:
            Q = make_quadratic(float(kappa), float(theta)).Q
            limit = hessian_diagonal_limit(Q, hess.nit)
            beyond.append(
                f"On this quadratic H = Q everywhere, so m_t = √((1 − 0.8ᵗ) diag(Q)² + ε) → |diag(Q)| = "
                f"({readable(abs(Q[0, 0]))}, {readable(abs(Q[1, 1]))}): after {hess.nit} iterations the "
                f"run's m is ({readable(hess.m[-1][0])}, {readable(hess.m[-1][1])}) (closed form "
                f"({readable(limit[0])}, {readable(limit[1])})). Its dotted regions are the ellipses "
                "sᵀ diag(Q) s ≤ const with axis ratio √(q₁₁/q₀₀): the exact diagonal (Jacobi) "
                "preconditioner. "
                + ("With θ = 0 that diagonal holds Q's eigenvalues, so the region has the model's own shape."
                   if int(theta) == 0 else
                   f"At θ = {int(theta)}° Q's eigenvalues are (1, {kappa:g}) but its diagonal is not: a "
                   "diagonal M cannot follow the tilt, however exact.")
            )
        else:
            beyond.append("On Rosenbrock diag(H) changes along the valley and the EMA follows it with a lag.")
    for arc in arcs.values():
        rejected = int(np.sum(~arc.accepted))
        beyond.append(
            f"{arc.label} has no region: it adds the cubic penalty σ/3·‖s‖_M³ in the RMSProp norm to the "
            "model (footnote 4; Cartis, Gould & Toint 2011), takes the model's global minimiser for the "
            "current σ (Step through one run to see it), halves σ after a very successful step (ρ ≥ 0.9) "
            f"and doubles it after a rejected one; 1/σ plays the radius's part (σ₀ = 1/Δ₀ = {1 / radius:g}). "
            f"Here σ went from {readable(arc.sigma[0])} to {readable(arc.sigma_after[-1])} in {arc.nit} "
            f"iterations with {rejected} rejected step(s) (chart above)."
        )
    st.markdown(" ".join(beyond))
    if arcs:
        st.latex(
            r"\min_{s}\ g_t^\top s + \tfrac12 s^\top H_t s + \tfrac{\sigma_t}{3}\|s\|_{M_t}^3,\qquad "
            r"\sigma_{t+1} = \begin{cases} \sigma_t/2 & \rho_t \ge 0.9 \\ \sigma_t & 0.1 \le \rho_t < 0.9 \\ "
            r"2\sigma_t & \rho_t < 0.1\ (\text{rejected}) \end{cases}"
        )
