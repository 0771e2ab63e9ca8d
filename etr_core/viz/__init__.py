"""Plotly figure builders shared by the app's pages and the CLI."""
