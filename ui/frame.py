"""Make every page run inside the app frame, even on a fresh server opened at a deep link.

Streamlit treats an app whose entry script has a sibling ``pages/`` folder as an old-style
multipage app until some session executes ``st.navigation``. On a freshly started server, a shared
link such as ``/implicit_trust_regions`` would therefore run the page script alone, without the
frame (sidebar, warm-up, navigation titles). Each page calls :func:`ensure_app_frame` first: in
that situation it switches the server to ``st.navigation`` mode and reruns, so the entry script
runs and renders the requested page inside the frame.
"""

from __future__ import annotations

import streamlit as st


def ensure_app_frame() -> None:
    """Rerun through ``app.py`` if this page was started by the old ``pages/`` discovery."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old discovery: nothing to do
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()
