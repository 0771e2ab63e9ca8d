"""Hands-on chart interaction: click the landscape to move the start point.

Plotly reports clicks only on data points, so the 2-D charts carry a dense, invisible grid of
clickable points (see :func:`etr_core.viz.geometry.click_grid`). ``st.plotly_chart(...,
on_select=callback, selection_mode="points")`` stores the clicked point in session state under the
chart's key and calls the callback before the next run, which is the one moment a callback may
still write the start widgets' values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import streamlit as st

from ui.url_values import parse_number

__all__ = ["clicked_point", "start_setter"]


def clicked_point(event: Any) -> tuple[float, float] | None:
    """``(x, y)`` of the last point in a Plotly selection event, or None (no point, non-finite)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError, IndexError):
        points = getattr(getattr(event, "selection", None), "points", None)
    if not points:
        return None
    point = points[-1]
    try:
        x, y = float(point["x"]), float(point["y"])
    except (KeyError, TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def start_setter(chart_key: str, x_key: str, y_key: str, low: float, high: float,
                 step: float | None = None) -> Callable[[], None]:
    """An ``on_select`` callback that writes the clicked point, clamped to ``[low, high]`` and snapped
    to ``step`` (or rounded to 3 decimals), into the start widgets ``x_key`` and ``y_key``."""

    def callback() -> None:
        point = clicked_point(st.session_state.get(chart_key))
        if point is None:
            return
        for key, value in zip((x_key, y_key), point):
            parsed = parse_number(repr(value), low, high, 0.0, integer=False, step=step).value
            st.session_state[key] = parsed if step else round(parsed, 3)

    return callback
