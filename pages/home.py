"""Home: the paper's story in a few sentences, each page linked to the figure it reproduces."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from etr_core.viz.measured_results import measured_markdown
from ui.frame import ensure_app_frame
from ui.registry import PAGES

ensure_app_frame()

ROOT = Path(__file__).resolve().parent.parent

st.title("Ellipsoidal trust-region methods for neural network training")
st.caption("An interactive companion to Adolphs, Kohler & Lucchi, *Ellipsoidal Trust Region Methods "
           "for Neural Network Training*.")

st.markdown(
    """
**1. Adaptive methods already use trust regions.** One step of Adagrad, RMSProp or Adam,
$w_{t+1} = w_t - \\eta A_t^{-1} g_t$, is *exactly* the minimiser of the linear model
$g_t^\\top s$ over an **ellipsoid** $\\|s\\|_{A_t} \\le \\eta\\,\\|g_t\\|_{A_t^{-1}}$ (Theorem 1).
Gradient descent is the special case of a sphere.

**2. Why diagonal ellipsoids?** Neural-network Hessians put far more of their mass on the diagonal
than a random matrix of the same size (Fig. 2, Proposition 1), so an axis-aligned ellipsoid can
follow the curvature where a sphere cannot.

**3. Second order, with the same ellipsoid.** Algorithm 1 solves the quadratic model
$m_t(s) = \\mathcal{L}(w_t) + g_t^\\top s + \\tfrac12 s^\\top B_t s$ inside the RMSProp/Adagrad
ellipsoid with Steihaug-Toint CG, accepts a step by the ratio of actual to predicted decrease, and
adapts the radius. Unlike a Newton step it never ascends and is not attracted by saddles (Fig. 7).

**4. The result.** With the ellipsoidal norm, the trust-region method reaches low training loss in
fewer backpropagations than with the spherical one (Figs. 3, 4) — which you can check live.
"""
)

with st.expander("What this project measured (not the paper's numbers)", expanded=True):
    st.markdown(measured_markdown())

st.latex(r"\min_{s}\; g_t^\top s + \tfrac12 s^\top B_t s \quad \text{s.t.}\quad "
         r"\|s\|_{A_t} = \Big(\textstyle\sum_i a_{t,i}\, s_i^2\Big)^{1/2} \le \Delta_t")

st.subheader("The pages")
for entry in PAGES:
    if entry.url_path == "home" or not (ROOT / entry.path).exists():
        continue
    with st.container(border=True):
        st.page_link(entry.path, label=f"**{entry.title}**", icon=entry.icon)
        st.caption(f"Reproduces: {entry.figure}")

st.info("Every page keeps its settings in the address bar: copy the URL to share exactly what you see. "
        "The seed in the sidebar drives every random choice. On the 2-D pages a click on the landscape "
        "moves the start point; on the implicit trust-region and second-order pages **Step** shows one "
        "iteration with its trust region. For a projector, "
        "switch on *Presentation mode* in the sidebar: larger text and charts, controls folded away.")
