"""Streamlit entry point (placeholder until the pages land)."""

import streamlit as st

st.set_page_config(page_title="Ellipsoidal trust regions", layout="wide")
st.title("Ellipsoidal trust-region methods")
st.write("Interactive pages on adaptive methods as trust-region methods are coming.")
