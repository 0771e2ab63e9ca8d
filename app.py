"""Streamlit entry point: page config, one warm-up per process, the shared sidebar, navigation.

Run with ``streamlit run app.py``. Every page lives in ``pages/`` and calls ``etr_core``; no
algorithm lives in a page.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import streamlit as st

from etr_core.live.foreground import default_gate
from ui.common import render_sidebar, warm_up
from ui.registry import PAGES

ROOT = Path(__file__).resolve().parent

st.set_page_config(page_title="Ellipsoidal trust regions", page_icon="🥚", layout="wide")

with st.spinner("Loading PyTorch (once per server process)..."):
    warm_up()

sections: dict[str, list] = {}
for entry in PAGES:
    if not (ROOT / entry.path).exists():
        continue
    sections.setdefault(entry.section, []).append(
        st.Page(entry.path, title=entry.title, icon=entry.icon, url_path=entry.url_path,
                default=entry.url_path == "home")
    )

navigation = st.navigation(sections)
# live-training workers pause while another page is drawn (not for the live page itself, whose
# polls and widgets would otherwise pause the training it shows; a fragment's poll is no page run)
gate = None
if navigation.url_path != "live_training":
    try:
        gate = default_gate()
    except ValueError as exc:  # a bad ETR_LIVE_YIELD* setting: say so, draw the page anyway
        st.warning(f"Live training does not pause for page loads: {exc}")
with gate.busy() if gate is not None else contextlib.nullcontext():
    render_sidebar()
    navigation.run()
