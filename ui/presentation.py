"""Presentation mode for a projector: one sidebar toggle (bound to the URL like every widget) that
makes text and chart fonts larger and folds each page's controls into a collapsed expander, so the
chart takes the width of the page.

Pages call :func:`control_panel` for the column that holds their controls and :func:`presentable`
on each Plotly figure before ``st.plotly_chart``; the sidebar (``ui.common.render_sidebar``) draws
the toggle with :func:`presentation_toggle` and injects the larger text style.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

__all__ = ["FONT_SCALE", "KEY", "control_panel", "page_columns", "presentable", "presentation_style",
           "presentation_toggle", "presenting"]

KEY = "present"  # the widget key and URL key of the toggle
FONT_SCALE = 1.5  # chart fonts are this many times larger in presentation mode
_BASE_FONT = 12.0  # Plotly's default font size (px) when a figure sets none
_CSS = """<style>
[data-testid="stMainBlockContainer"] p, [data-testid="stMainBlockContainer"] li,
[data-testid="stMainBlockContainer"] [data-testid="stCaptionContainer"],
[data-testid="stMainBlockContainer"] button p { font-size: 1.45rem !important; line-height: 1.45; }
[data-testid="stMainBlockContainer"] h1 { font-size: 3.1rem !important; }
[data-testid="stMainBlockContainer"] h2,
[data-testid="stMainBlockContainer"] h3 { font-size: 2.2rem !important; }
[data-testid="stMainBlockContainer"] .katex { font-size: 1.5em !important; }
</style>"""


def presenting() -> bool:
    """Whether presentation mode is on in this session (False before the sidebar ran)."""
    return bool(st.session_state.get(KEY, False))


def presentation_toggle() -> bool:
    """The sidebar toggle, bound to the URL as ``?present=true``; returns its value."""
    from ui.common import url_toggle

    return url_toggle("Presentation mode (projector)", KEY, False,
                      help="Larger text and chart fonts; each page's controls fold into a collapsed "
                      "'Controls' panel so the chart uses the whole width.")


def presentation_style() -> None:
    """Inject the larger text style when presentation mode is on (nothing otherwise)."""
    if presenting():
        st.markdown(_CSS, unsafe_allow_html=True)


def page_columns(normal: tuple[float, float] = (2.4, 1.0)) -> tuple[Any, Any]:
    """``(chart column, control column)``: side by side normally (chart first, so a phone shows it
    above the controls); in presentation mode one full-width container used for both, the controls
    then going into :func:`control_panel`'s collapsed expander, one line above the chart."""
    if presenting():
        column = st.container()
        return column, column
    return tuple(st.columns(list(normal), gap="medium"))  # type: ignore[return-value]


def control_panel(column: Any) -> Any:
    """Where a page draws its controls: ``column`` itself, or in presentation mode a collapsed
    expander "Controls" inside it. Call it once per page and enter the result with ``with`` as often
    as needed."""
    if presenting():
        return column.expander("Controls", expanded=False)
    return column


def _scaled(size: Any, scale: float, default: float) -> float:
    return round(float(size if size else default) * scale, 1)


def presentable(fig: Any, scale: float = FONT_SCALE) -> Any:
    """``fig`` with every font ``scale`` times larger in presentation mode (unchanged otherwise).

    Scales the figure's base font, its title, legend, every axis' tick labels and title, every
    colour bar and annotation; sizes the figure does not set start from the base font (Plotly's
    default 12 px). Works on ``plotly.graph_objects.Figure`` in place and returns it."""
    if not presenting():
        return fig
    layout = fig.layout
    base = float(layout.font.size or _BASE_FONT)
    fig.update_layout(font_size=_scaled(base, scale, base),
                      legend_font_size=_scaled(layout.legend.font.size, scale, base),
                      title_font_size=_scaled(layout.title.font.size, scale, base * 1.2))

    def axis(ax: Any) -> None:
        ax.update(tickfont_size=_scaled(ax.tickfont.size, scale, base),
                  title_font_size=_scaled(ax.title.font.size, scale, base))

    fig.for_each_xaxis(axis)
    fig.for_each_yaxis(axis)
    for annotation in layout.annotations or ():
        annotation.font.size = _scaled(annotation.font.size, scale, base)
    for trace in fig.data:
        colorbar = getattr(trace, "colorbar", None)
        if colorbar is not None:
            colorbar.tickfont.size = _scaled(colorbar.tickfont.size, scale, base)
    return fig
