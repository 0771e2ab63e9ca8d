"""Streamlit-side helpers shared by the app's pages (layout and widgets only; no algorithms)."""
