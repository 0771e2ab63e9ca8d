"""Is a network's Hessian diagonally dominant? (paper section 3.2, Fig. 2, Fig. 6, Proposition 1)

Every number comes from ``etr_core.hessian_plan`` (what to compute, its cost, the background jobs
that run it in worker processes) and ``etr_core.curvature.wigner`` (Proposition 1, corrected);
every figure from ``etr_core.viz.hessian_plots``. The first numbers and the heat map come from one
Hessian; the Fig. 2 bars over training and more seeds follow in the background, with progress
and a cancel button, and are shared with every other session that asks for the same thing. The CPU
they use counts against this browser's rolling budget (``etr_core.cpu_budget``); while it is used up
nothing new starts, and what was computed before still shows.
"""

from __future__ import annotations

import math
import time
import uuid

import pandas as pd
import streamlit as st

from etr_core.cpu_budget import default_budget
from etr_core.curvature import (
    paper_printed_wigner_mass,
    wigner_mass_closed_form,
    wigner_mass_exact,
)
from etr_core.data import available_datasets, default_root
from etr_core.errors import user_message
from etr_core.hessian_analysis import PHASES, layout, parameter_count
from etr_core.hessian_experiment import summarize
from etr_core.hessian_plan import (
    CPU_CAP,
    FIRST_ANSWER_CAP,
    PAGE_MAX_EXAMPLES,
    PAGE_MAX_PARAMS,
    PageSettings,
    background_units,
    first_units,
    fit_to_budget,
    page_dataset,
    registry,
)
from etr_core.viz.hessian_plots import eigenvalue_figure, hessian_heatmap, phase_bars
from ui.common import (
    global_seed,
    preset_buttons,
    url_radio,
    url_select_slider,
    url_selectbox,
    url_slider,
    url_toggle,
)
from ui.frame import ensure_app_frame
from ui.owner import browser_owner
from ui.presentation import presentable

ensure_app_frame()

P = "hd"  # widget-key prefix of this page
DATASETS = {"digits": "8×8 digits (scikit-learn)", "blobs": "generated: 3 Gaussian blobs (2-D)",
            "moons": "generated: two moons (2-D)", "spirals": "generated: 3 spirals (2-D)",
            "mnist": f"MNIST (first {PAGE_MAX_EXAMPLES:,} training images)",
            "fashion_mnist": f"Fashion-MNIST, reconstructed split (first {PAGE_MAX_EXAMPLES:,} images)"}
WIDTHS = [2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]
STEPS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000]
ALL_EXAMPLES = 1_000_000  # larger than any training set here: the full-data Hessian
BATCHES = [16, 32, 64, 128, 256, 512, 1024, ALL_EXAMPLES]
ACTIVATIONS = ["tanh", "sigmoid", "relu", "softplus", "gelu"]
PHASE_TEXT = {"init": "at initialisation", "middle": "after half of the steps", "end": "after all steps"}
FIT = f"{P}__fit"             # values the cost cap lowered, applied before the widgets of the next run


def _preset(width: int, depth: int) -> dict:
    return {f"{P}_data": "digits", f"{P}_width": width, f"{P}_depth": depth, f"{P}_steps": 200}


def _digits_d(width: int, depth: int) -> str:
    return f"d = {parameter_count([64, *[width] * depth, 10]):,}"


PRESETS = {
    f"Tiny ({_digits_d(2, 1)})": _preset(2, 1),
    f"Default ({_digits_d(16, 1)})": _preset(16, 1),
    f"Two layers ({_digits_d(16, 2)})": _preset(16, 2),
    f"Wide ({_digits_d(32, 1)})": _preset(32, 1),
    "Too large": _preset(256, 3),
}


@st.cache_data(ttl=60, show_spinner=False)
def _datasets(root: str) -> list[str]:
    present = set(available_datasets(root))
    return [name for name in DATASETS if name in present]


def _fmt(v: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}"


def _wait(job, label: str, timeout: float = 10.0):
    """Block (with a progress bar) until ``job`` has finished or ``timeout`` seconds passed; then, if
    it still runs (a busy server, the first visit starting the worker), poll it and stop the page."""
    bar = st.progress(0.0, text=label)
    deadline = time.monotonic() + timeout
    while not job.wait(0.1) and time.monotonic() < deadline:
        status = job.status()
        bar.progress(status.fraction, text=f"{label}: {status.message}")
    bar.empty()
    if job.status().finished:
        return job.status()

    @st.fragment(run_every=0.5)
    def poll() -> None:
        status = job.status()
        if status.finished:
            st.rerun()
        st.progress(status.fraction, text=f"{label}: {status.message}")

    poll()
    st.stop()


st.title("Is the Hessian of a neural network diagonally dominant?")
st.markdown(
    "The paper picks **diagonal** ellipsoids as trust regions because real network Hessians keep far "
    "more of their absolute mass on the diagonal than a random symmetric matrix would (section 3.2, "
    "Fig. 2). Test the claim on a network of your choice."
)

fit = st.session_state.pop(FIT, None)
if fit is not None:  # before the widgets exist, so the lowered values reach them and the URL
    for key, value in fit["values"].items():
        st.session_state[key] = value
    st.session_state[f"{FIT}_note"] = fit

preset_buttons(PRESETS, P)
left, right = st.columns(2)
with left:
    data = url_selectbox("Data", f"{P}_data", _datasets(str(default_root())), "digits",
                         format_func=DATASETS.get)
    width = url_select_slider("Hidden width", f"{P}_width", WIDTHS, 16)
    depth = url_slider("Hidden layers", f"{P}_depth", 1, 3, 1)
    activation = url_selectbox("Activation", f"{P}_act", ACTIVATIONS, "tanh")
with right:
    batch = url_select_slider("Examples in the Hessian's batch", f"{P}_batch", BATCHES, 256,
                              format_func=lambda b: "all" if b == ALL_EXAMPLES else str(b))
    steps = url_select_slider("RMSProp steps N (lr 0.01, batch 64)", f"{P}_steps", STEPS, 200)
    phase = url_radio("Hessian shown", f"{P}_phase", [p for p, _ in PHASES], "end",
                      format_func=PHASE_TEXT.get, horizontal=True)
    n_seeds = url_slider("Seeds for the phase bars", f"{P}_seeds", 1, 10, 1,
                         help="Fig. 2 shows the mean and 95% interval over 10 runs; 2 or more seeds "
                         "give an interval here (each seed costs three more Hessians, computed in the "
                         "background).")
show_blocks = url_toggle("Outline layer blocks", f"{P}_blocks", True)
note = st.session_state.get(f"{FIT}_note")
if note is not None:  # the reason stays on screen while the lowered values are in use
    if all(st.session_state.get(k) == v for k, v in note["values"].items()):
        st.warning(note["message"])
    else:
        del st.session_state[f"{FIT}_note"]

seed = global_seed()
root = str(default_root())  # resolved here: worker processes may have another environment
try:
    x_np, _, num_classes = page_dataset(data, root)
except (OSError, ValueError) as err:
    st.error(f"The data set {data!r} could not be loaded: {user_message(err) or err}")
    st.stop()
sizes = (x_np.shape[1], *([int(width)] * int(depth)), num_classes)
d = parameter_count(sizes)
layout_text = "-".join(map(str, sizes))

if d > PAGE_MAX_PARAMS:
    arch = "-".join([str(width)] * int(depth))
    larger = (
        f"run `etr hessian --dataset {data} --archs {arch}` (exact Hessians up to 12,000 parameters)"
        if d <= 12_000
        else "estimate δ_H from sampled exact rows (`etr_core.curvature.sampled_row_mass`, one HVP per row)"
    )
    st.warning(
        f"The network {layout_text} has d = {d:,} parameters, above this page's exact-Hessian limit of "
        f"{PAGE_MAX_PARAMS:,} (its Hessian would hold {d * d:,} entries). Pick a smaller width or depth, "
        f"or {larger}."
    )
    st.stop()

asked = PageSettings(data, sizes, activation, int(batch), int(steps), phase, int(n_seeds), seed, len(x_np),
                     root)
settings, reason = fit_to_budget(asked, BATCHES, STEPS)
if reason is not None and settings == asked:  # nothing left to lower (not reached on this page's widgets)
    st.warning(reason)
    st.stop()
if reason is not None:
    st.session_state[FIT] = {"message": reason, "values": {
        f"{P}_seeds": settings.seeds, f"{P}_batch": settings.batch, f"{P}_steps": settings.steps}}
    st.rerun()

owner = st.session_state.setdefault(f"{P}__owner", uuid.uuid4().hex)  # one job per lane and session
payer, budget = browser_owner(), default_budget()  # CPU counts against the browser
jobs = registry()
units = first_units(settings)
if budget.exhausted(payer) and not all(u.key in jobs.cache for u in units):
    jobs.release(owner, "first")
    st.warning(budget.message(payer))
    st.stop()
first = jobs.submit(owner, "first", tuple(u.key for u in units), units, priority=0, cpu_cap=FIRST_ANSWER_CAP,
                    payer=payer)
status = _wait(first, f"Training {layout_text} (d = {d:,}) and computing its Hessian")
shown = jobs.cache.get(units[-1].key)
if status.state != "done" or shown is None:
    st.warning(f"The Hessian could not be computed ({status.state}): {status.message}")
    st.stop()
snap = shown.snapshot
net = layout(sizes, activation)
cmp = snap.comparison
if not math.isfinite(cmp.delta_h):
    st.warning(f"Training diverged before the {phase} phase (loss {snap.train_loss}); the Hessian holds "
               "NaN or Inf entries, nothing to measure. Pick an earlier phase or fewer steps.")
    st.stop()

st.subheader(f"The Hessian of {layout_text} ({activation}) {PHASE_TEXT[phase]}: d = {d:,}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("δ_H (diagonal mass)", _fmt(cmp.delta_h), help="Σ|H_ii| / Σ|H_ij| (Becker et al., 1988)")
c2.metric("δ_W, equal scales = 1/d", _fmt(cmp.delta_w_equal), f"δ_H / δ_W = {cmp.ratio_equal:.1f}×",
          delta_color="off", help="Proposition 1 with σ_off = σ_diag")
c3.metric("δ_W, RMS-matched", _fmt(cmp.delta_w_rms), f"δ_H / δ_W = {cmp.ratio_rms:.2f}×",
          delta_color="off", help="Proposition 1 (corrected) with σ_off, σ_diag = RMS of H's off-diagonal "
          "and diagonal entries")
c4.metric("|H| in layer blocks", f"{100 * cmp.layer_block_mass:.1f}%",
          help="share of Σ|H_ij| inside the diagonal blocks of one layer's weights and biases")

fig = hessian_heatmap(snap.heatmap, d, net.layer_bounds, net.layer_names, show_blocks=show_blocks)
st.plotly_chart(presentable(fig), key=f"{P}_heatmap", width="stretch")
tile = d / snap.heatmap.shape[0]
examples = "all" if settings.batch >= settings.n_examples else settings.batch
st.caption(
    f"log10 |H_ij| of the mean cross entropy on {examples} training examples, "
    f"seed {seed}, step {snap.step} of {settings.steps} (loss {snap.train_loss:.3f})"
    + ("" if tile <= 1 else f"; each cell averages {tile:.1f}×{tile:.1f} entries")
    + (f"; white squares: the {len(net.layer_bounds)} layer blocks (weights and biases of one layer)"
       if show_blocks else "")
    + f". Layer 1's weights are ordered unit by unit: each run of {sizes[0]} indices holds the weights "
    "into one hidden unit, so bright squares of that size on the diagonal mean weights of the same unit "
    "interact more than weights of different units."
)

st.markdown("**Per layer** — where the mass sits. δ of a block is its own diagonal mass; "
            "'× uniform' compares it with 1/size.")
table = pd.DataFrame(
    [{"layer": name, "parameters": bm.size, "share of |H| mass": bm.share_of_total,
      "δ of the block": bm.delta, "× uniform (δ · size)": bm.delta_over_uniform}
     for name, bm in zip(net.layer_names, snap.layer_table)]
)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"share of |H| mass": st.column_config.NumberColumn(format="%.3f"),
                            "δ of the block": st.column_config.NumberColumn(format="%.4f"),
                            "× uniform (δ · size)": st.column_config.NumberColumn(format="%.1f")})

st.subheader("Fig. 2 for this network: δ_H / δ_W over training")
background = background_units(settings)
bg_key = tuple(u.key for u in background)
bg_job = None
if st.session_state.get(f"{P}__cancelled") == bg_key:
    jobs.release(owner, "background")
    done = [u for u in background if u.key in jobs.cache]
    st.info(f"Background computation cancelled ({len(done)} of {len(background)} parts done, kept).")
    st.button("Resume", key=f"{P}_resume", on_click=st.session_state.pop, args=(f"{P}__cancelled", None))
elif budget.exhausted(payer) and not all(u.key in jobs.cache for u in background):
    jobs.release(owner, "background")
    st.info(budget.message(payer))
else:
    bg_job = jobs.submit(owner, "background", bg_key, background, priority=1,
                         cpu_cap=CPU_CAP - FIRST_ANSWER_CAP, payer=payer)


def _cancel() -> None:
    st.session_state[f"{P}__cancelled"] = bg_key
    jobs.release(owner, "background")


def _draw_background() -> None:
    """The Fig. 2 bars and the eigenvalue chart from the seeds whose three phases are all computed."""
    complete = []
    for k in range(settings.seeds):
        seed_units = [u for u in background if u.key[0] == "snapshot" and u.seed == seed + k]
        snaps = [getattr(jobs.cache.get(u.key), "snapshot", None) for u in seed_units]
        if all(s is not None for s in snaps):
            complete.append((seed + k, {u.step: s for u, s in zip(seed_units, snaps)}))
    if not complete:
        return
    rows = [{"dataset": data, "arch": layout_text, "d": d, "seed": s,
             **by_step[settings.phase_step(name)].row(), "phase": name}
            for s, by_step in complete for name, _ in PHASES]
    st.plotly_chart(presentable(phase_bars(summarize(rows))), key=f"{P}_bars", width="stretch")
    used = [s for s, _ in complete]
    interval = ("mean and 95% t-interval over seeds " + ", ".join(map(str, used)) if len(used) > 1
                else f"one seed ({used[0]}); choose 2 or more seeds for a 95% interval")
    st.caption(f"Phases at steps 0, {settings.phase_step('middle')} and {settings.steps}; {interval}. "
               "The dashed line at 1 is a Wigner matrix with the same baseline.")
    if complete[0][0] == seed:
        main = [complete[0][1][settings.phase_step(name)] for name, _ in PHASES]
        eig = eigenvalue_figure([name for name, _ in PHASES], [s.lambda_min for s in main],
                                [s.lambda_max for s in main])
        st.plotly_chart(presentable(eig), key=f"{P}_eigs", width="stretch")
        st.caption(f"Extreme eigenvalues by 30 Lanczos iterations on H (seed {seed}). λ_min < 0 means "
                   "negative curvature: the quadratic model is unbounded along that direction, which a "
                   "trust region handles and Newton's method does not.")


def _background_section() -> None:
    state = bg_job.status()
    if not state.finished:
        st.progress(state.fraction, text=f"Computing the phases of {settings.seeds} seed(s) in the "
                    f"background: {state.message} ({state.done} of {state.total} parts, "
                    f"{state.cpu_seconds:.1f} s CPU)")
        st.button("Cancel", key=f"{P}_cancel", on_click=_cancel)
    elif state.state != "done":
        st.info(f"Background computation {state.state}: {state.message}. Showing what was computed.")
    _draw_background()
    if state.finished and st.session_state.get(f"{P}__polling"):
        st.session_state[f"{P}__polling"] = False
        st.rerun()  # once, so that the page stops polling


if bg_job is not None:
    if bg_job.status().finished:
        _background_section()
    else:
        st.session_state[f"{P}__polling"] = True
        st.fragment(run_every=0.5)(_background_section)()
else:  # cancelled, or the CPU budget is used up: what was computed before still shows
    _draw_background()

st.subheader("Proposition 1: the Wigner baseline, corrected")
so, sd = cmp.sigma_off_rms, cmp.sigma_diag_rms
mc, mc_equal = shown.wigner_rms, shown.wigner_equal  # computed in the worker with the Hessian
st.latex(
    r"\mathbb{E}[\delta_W] \approx \frac{1}{1 + (d-1)\,\sigma_{\rm off}/\sigma_{\rm diag}}"
    rf" = \frac{{1}}{{1 + {f'{d - 1:,}'.replace(',', '{,}')} \times {so:.3g} / {sd:.3g}}}"
    rf" = {wigner_mass_closed_form(d, so, sd):.4g}"
)
st.markdown(
    f"With the RMS of H's off-diagonal and diagonal entries as the two scales: closed form "
    f"**{_fmt(cmp.delta_w_rms)}**, Monte Carlo **{_fmt(mc.mean)} ± {mc.std_error:.1g}** "
    f"({mc.samples} matrices), exact integral **{_fmt(wigner_mass_exact(d, so, sd))}**. "
    f"With equal scales: 1/d = **{_fmt(1 / d)}**, Monte Carlo **{_fmt(mc_equal.mean)} ± "
    f"{mc_equal.std_error:.1g}**. δ_H = **{_fmt(cmp.delta_h)}**."
)
st.info(
    f"As printed, Proposition 1 has the ratio upside down: Eq. 7 calls the off-diagonal scale σ₁ but the "
    f"result uses σ₂/σ₁, which here would give {_fmt(paper_printed_wigner_mass(d, so, sd))}; Monte Carlo "
    "sides with the corrected formula. The formula is also a ratio of expectations, exact only for large d "
    f"(d = 3, equal scales: {wigner_mass_exact(3):.3f}, not 1/3). Matching the scales by mean |entry| "
    "would reproduce δ_H exactly whatever H is, so it is no baseline."
)

st.subheader("What this means for trust regions")
st.markdown(
    f"Here δ_H is **{cmp.ratio_equal:.0f}×** the equal-scale Wigner value and **{cmp.ratio_rms:.1f}×** the "
    f"RMS-matched one, and {100 * cmp.layer_block_mass:.0f}% of |H| lies inside the layer blocks. A "
    "diagonal ellipsoid ‖s‖_M with M = diag(m) can follow curvature that is concentrated near the diagonal "
    "at the cost of one vector, which is why the paper uses the RMSProp/Adagrad diagonal as the trust-region "
    "norm (section 4). Note that the diagonal itself still holds only "
    f"{100 * cmp.delta_h:.1f}% of the mass: 'diagonally dominant' means far above a random matrix, not "
    "Σ|H_ii| > Σ|H_ij|.\n\n"
    "Where a diagonal shape fails: a quadratic whose level sets are **rotated** against the axes. There the "
    "off-diagonal entries carry the curvature and no diagonal M matches the level sets; see "
    "[Adaptive methods are trust-region methods](implicit_trust_regions) with a rotation angle θ ≠ 0."
)
