"""Newton vs trust region (paper appendix B, Figs. 7 and 8): where second-order steps go on a
non-convex function, and what whole runs from the same start do."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from etr_core.toy.functions import FUNCTION_NAMES, FUNCTIONS, get_function
from etr_core.toy.local_models import LocalStep, all_local_steps, inertia, rms_diagonal_at
from etr_core.toy.second_order import compare_runs, iterations_table
from etr_core.viz.landscape import add_click_grid, local_steps_figure, paths_figure, run_history_figure
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
from ui.common import (
    preset_buttons,
    show_table,
    url_multiselect,
    url_number,
    url_radio,
    url_select_slider,
    url_selectbox,
    url_toggle,
)
from ui.frame import ensure_app_frame
from ui.interaction import start_setter
from ui.presentation import control_panel, page_columns, presentable

ensure_app_frame()

RADII = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]
DAMPINGS = [0.0, 0.001, 0.01, 0.1, 0.3, 1.0]
RATIOS = [0.01, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 100.0]
NORMS = ["spherical", "ellipsoidal: RMSProp diagonal at w", "ellipsoidal: custom diagonal"]
RUN_CHOICES = ["newton", "tr_uniform", "tr_adagrad", "tr_rms", "gd"]
RUN_LABELS = {
    "newton": "Newton",
    "tr_uniform": "TR_uni",
    "tr_adagrad": "TR_ada",
    "tr_rms": "TR_rms",
    "gd": "GD",
}
LEARNING_RATES = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0]
ITERATIONS = [5, 10, 20, 50, 100, 200]
COORD = (-5.0, 5.0)
GTOL = 1e-6

_SHOW_ALL = {"nvt_show_newton": True, "nvt_show_tr": True, "nvt_show_model": True}
PRESETS = {
    "Fig. 7 left": {
        "nvt_function": "paper",
        "nvt_w0": 0.1,
        "nvt_w1": 0.4,
        "nvt_radius": 0.5,
        "nvt_norm": NORMS[0],
        "nvt_show_gn": False,
        "nvt_show_sfn": False,
        **_SHOW_ALL,
    },
    "Fig. 7 right": {
        "nvt_function": "paper",
        "nvt_w0": 1.0,
        "nvt_w1": 0.2,
        "nvt_radius": 0.5,
        "nvt_norm": NORMS[0],
        "nvt_show_gn": False,
        "nvt_show_sfn": False,
        **_SHOW_ALL,
    },
    "Fig. 8": {
        "nvt_function": "paper",
        "nvt_w0": 1.0,
        "nvt_w1": 0.05,
        "nvt_radius": 0.5,
        "nvt_norm": NORMS[0],
        "nvt_damping": 0.1,
        "nvt_show_gn": True,
        "nvt_show_sfn": True,
        "nvt_show_newton": True,
        "nvt_show_tr": False,
        "nvt_show_model": False,
    },
    "Start on the saddle": {
        "nvt_function": "paper",
        "nvt_w0": 0.0,
        "nvt_w1": 0.0,
        "nvt_radius": 0.5,
        "nvt_norm": NORMS[0],
        "nvt_show_gn": False,
        "nvt_show_sfn": False,
        **_SHOW_ALL,
    },
}


@st.cache_data(max_entries=64, show_spinner=False)
def local_steps(
    name: str, w: tuple[float, float], radius: float, m: tuple[float, float] | None, damping: float
) -> dict[str, LocalStep]:
    return all_local_steps(
        get_function(name), np.array(w), radius, None if m is None else np.array(m), damping
    )


@st.cache_data(max_entries=32, show_spinner=False)
def whole_runs(
    name: str, w: tuple[float, float], methods: tuple[str, ...], radius: float, lr: float, max_iter: int
):
    fn = get_function(name)
    runs = compare_runs(fn, w, methods, max_iter=max_iter, gtol=GTOL, radius=radius, lr=lr)
    return runs, iterations_table(runs, fn, gtol=GTOL)


st.title("Newton vs trust region")
st.markdown(
    "**Where does a second-order step go when the function is not convex?** Newton's method jumps to the "
    "*critical point* of its quadratic model, which may be a maximum or a saddle; a trust-region method "
    "takes the model's *minimiser* inside a region (paper appendix B, Figs. 7 and 8)."
)

preset_buttons(PRESETS, "nvt_preset")
st.caption(
    "Presets: Fig. 7 left, Newton ascends; Fig. 7 right, Newton is attracted by the saddle; Fig. 8, "
    "Gauss-Newton and saddle-free Newton (damped, λ = 0.1); a start exactly on the saddle."
)

# The chart's column comes first, so on a phone (columns stacked) the picture is above the controls.
chart_col, ctrl_col = page_columns()
with control_panel(ctrl_col):
    name = url_selectbox(
        "Function", "nvt_function", FUNCTION_NAMES, "paper", format_func=lambda n: FUNCTIONS[n].title
    )
    p1, p2 = st.columns(2)
    with p1:
        w0 = url_number("Point w₀", "nvt_w0", *COORD, 0.1, step=0.05, format="%.4f")
    with p2:
        w1 = url_number("Point w₁", "nvt_w1", *COORD, 0.4, step=0.05, format="%.4f")
    radius = url_select_slider("Trust-region radius Δ", "nvt_radius", RADII, 0.5)
    norm = url_radio("Norm of the region", "nvt_norm", NORMS, NORMS[0])
    ratio = 1.0
    if norm == NORMS[2]:
        ratio = url_select_slider(
            "m₁ / m₀ (the ellipse is ‖s‖_M = sqrt(m₀s₀² + m₁s₁²) ≤ Δ)", "nvt_ratio", RATIOS, 4.0
        )
    damping = url_select_slider(
        "Damping λ for GN and saddle-free Newton (Eq. 37)", "nvt_damping", DAMPINGS, 0.0
    )
    t1, t2 = st.columns(2)
    with t1:
        show_newton = url_toggle("Show Newton", "nvt_show_newton", True)
        show_tr = url_toggle("Show TR", "nvt_show_tr", True)
        show_model = url_toggle("Show model", "nvt_show_model", True)
    with t2:
        show_gn = url_toggle("Show GN", "nvt_show_gn", False)
        show_sfn = url_toggle("Show SFN", "nvt_show_sfn", False)

fn = get_function(name)
w = np.array([float(w0), float(w1)])
with np.errstate(all="ignore"):
    g = fn.gradient(w)
    H = fn.hessian(w)
if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H)) and math.isfinite(fn.value(w))):
    st.error(f"f or its derivatives overflow at w = ({w0:g}, {w1:g}); choose a point closer to the origin.")
    st.stop()

m = None
if norm == NORMS[1]:
    m = tuple(float(v) for v in rms_diagonal_at(g))
elif norm == NORMS[2]:
    m = (1.0, float(ratio))
steps = local_steps(name, (float(w0), float(w1)), float(radius), m, float(damping))

shown = {
    key: step
    for key, step in steps.items()
    if {
        "newton": show_newton,
        "trust_region": show_tr,
        "gauss_newton": show_gn,
        "saddle_free_newton": show_sfn,
    }[key]
}
box = view_box(fn.view, w)
# Newton and TR share one model (B = H); GN and SFN each have their own.
model_keys = ["newton"] if (show_newton or show_tr) else []
model_keys += [key for key in ("gauss_newton", "saddle_free_newton") if key in shown and shown[key].defined]
models = {key: steps[key] for key in model_keys} if show_model else {}
region = (float(radius), None if m is None else np.array(m)) if show_tr else None
fig = local_steps_figure(fn, w, shown, box=box, region=region, models=models)
add_click_grid(fig, clip_box(box, COORD))
chart_col.plotly_chart(presentable(fig), key="nvt_local_chart", width="stretch", selection_mode="points",
                       on_select=start_setter("nvt_local_chart", "nvt_w0", "nvt_w1", *COORD))

newton = steps["newton"]
tr = steps["trust_region"]
lam = np.linalg.eigvalsh(H)
pos, neg, zero = inertia(H)
grad_norm = float(np.linalg.norm(g))
outside = [
    st_.label
    for st_ in shown.values()
    if st_.defined and not (box[0] <= st_.target[0] <= box[1] and box[2] <= st_.target[1] <= box[3])
]
caption = (
    f"At w = ({w0:.4g}, {w1:.4g}) on {fn.title}: f(w) = {fn.value(w):.4g}, ‖∇f‖ = {grad_norm:.3g}, "
    f"Hessian eigenvalues {lam[0]:.3g} and {lam[1]:.3g}."
)
if "newton" in models:
    caption += " Dashed blue: level sets of the Newton model m(s) = f + gᵀs + ½sᵀHs."
if region is not None:
    caption += (
        f" Dashed green: the region ‖s‖₂ ≤ {radius:g}."
        if m is None
        else f" Dashed green: the region ‖s‖_M ≤ {radius:g} with M = diag({m[0]:.3g}, {m[1]:.3g})."
    )
if outside:
    caption += f" Off the picture: the {', '.join(outside)} step target(s)."
chart_col.caption(caption + " Click the landscape to move w.")

if grad_norm == 0.0:
    st.info(stationary_note(lam, (pos, neg, zero), tr))

st.subheader("The numbers at w")
st.latex(
    rf"g = \nabla f(w) = {tex_vec(g)},\quad H = \nabla^2 f(w) = {tex_mat(H)},\quad "
    rf"\lambda(H) = \{{{tex_num(lam[0])},\ {tex_num(lam[1])}\}}"
)
if newton.defined:
    st.latex(
        rf"s_N = -H^{{-1}} g = {tex_vec(newton.step)},\qquad "
        rf"g^\top s_N = {tex_num(newton.directional_derivative)}"
    )
    change = None if newton.actual_decrease is None else -newton.actual_decrease
    st.latex(rf"f(w + s_N) - f(w) = {tex_num(change)}\quad\Rightarrow\quad \text{{{newton.kind}}}")
else:
    st.latex(rf"H s_N = -g:\ \text{{{newton.kind}}}")
critical = newton.details.get("model_critical_point", "none")
st.markdown(
    f"**Newton step: {newton.kind}.** The model's critical point is a **{critical}** "
    f"(H has {pos} positive, {neg} negative and {zero} zero eigenvalues). {newton.message}"
)
if tr.defined:
    norm_tex = r"\|s\|_2" if m is None else r"\|s\|_M"
    m_tex = "" if m is None else rf",\qquad M = \mathrm{{diag}}({tex_num(m[0])}, {tex_num(m[1])})"
    st.latex(
        rf"s_{{TR}} = \arg\min_{{{norm_tex} \le {tex_num(radius)}}} m(s) = {tex_vec(tr.step)},\qquad "
        rf"\lambda^\star = {tex_num(tr.details.get('multiplier'))}{m_tex}"
    )
    st.latex(
        rf"m(0) - m(s_{{TR}}) = {tex_num(tr.model_decrease)},\qquad "
        rf"f(w) - f(w + s_{{TR}}) = {tex_num(tr.actual_decrease)}"
    )
    st.markdown(f"**Trust-region step: {tr.kind}.** {tr.message}")
gn, sfn = steps["gauss_newton"], steps["saddle_free_newton"]
if show_gn or show_sfn:
    parts = []
    if show_gn:
        kappa_gn = gn.details.get("undamped_condition_number", math.nan)
        parts.append(
            rf"s_{{GN}} = -(J^\top J + {tex_num(damping)} I)^{{-1}} g = {tex_vec(gn.step)},\ "
            rf"\kappa(J^\top J) = {tex_num(kappa_gn)}"
        )
    if show_sfn:
        parts.append(
            rf"s_{{SFN}} = -(|H| + {tex_num(damping)} I)^{{-1}} g = {tex_vec(sfn.step)},\ "
            rf"\kappa(|H|) = {tex_num(abs(lam).max() / abs(lam).min() if abs(lam).min() > 0 else math.inf)}"
        )
    for part in parts:
        st.latex(part)
    notes = [s.message for s, on in ((gn, show_gn), (sfn, show_sfn)) if on]
    st.markdown(" ".join(notes))
    if show_gn and fn.is_least_squares:
        st.caption(
            f"Here f is written as ½‖r(w)‖² {fn.residual_offset:+g} and JᵀJ is its Gauss-Newton matrix, with "
            f"condition number {gn.details.get('undamped_condition_number', math.nan):.4g} at this point. "
            "The paper's Fig. 8 quotes κ_GN = 49,487,554 and κ_|H| = 1.03 for a Gauss-Newton split it "
            "does not state, so those two numbers are not reproduced; the ill-conditioning of JᵀJ near "
            "w₁ = 0 (κ = 1/(2w₁²)) is the same effect."
            if name == "paper"
            else f"JᵀJ has condition number {gn.details.get('undamped_condition_number', math.nan):.4g} here."
        )

st.markdown(why_note(lam, neg, newton, tr, radius))

st.divider()
st.subheader("Whole runs from the same start")
st.markdown(
    f"Each method starts at w = ({w0:.4g}, {w1:.4g}). The TR runs (Algorithm 1, deterministic, paper rules) "
    f"start with Δ₀ = {radius:g}; the lines show the iterates, the dotted curves the trust region at each "
    "iterate."
)
r1, r2, r3, r4 = st.columns([2.2, 1, 1, 0.8])
with r1:
    methods = url_multiselect(
        "Methods",
        "nvt_methods",
        RUN_CHOICES,
        ["newton", "tr_uniform", "tr_rms", "gd"],
        format_func=lambda k: RUN_LABELS[k],
    )
with r2:
    max_iter = url_select_slider("Max iterations", "nvt_iters", ITERATIONS, 50)
with r3:
    lr = url_select_slider("GD step size", "nvt_lr", LEARNING_RATES, 0.1)
with r4:
    show_regions = url_toggle("Regions", "nvt_regions", True)

if not methods:
    st.info("Choose at least one method to run.")
    st.stop()
runs, table = whole_runs(
    name, (float(w0), float(w1)), tuple(methods), float(radius), float(lr), int(max_iter)
)
st.plotly_chart(
    presentable(paths_figure(fn, runs, box=box, show_regions=show_regions)), key="nvt_paths_chart",
    width="stretch",
)
st.plotly_chart(presentable(run_history_figure(runs)), key="nvt_history_chart", width="stretch")
show_table(table)

st.markdown(runs_summary(table, runs))
if "newton" in runs and runs["newton"].nit:
    kinds = runs["newton"].exits
    st.caption(
        "Newton's steps, classified: "
        + ", ".join(kinds[:12])
        + (" …" if len(kinds) > 12 else "")
        + f". Tolerance: ‖∇f‖ ≤ {GTOL:g}."
    )
