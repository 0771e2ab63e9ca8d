"""Widgets bound to the URL (validated and clamped), the shared sidebar and process warm-up.

Every page builds its controls with the ``url_*`` helpers below so that a lecturer can share a
link. The app manages the query string itself instead of Streamlit's ``bind="query-params"``:
Streamlit drops values equal to a widget's built-in default from the URL and re-parses the raw
URL text after the app's own checks (``?seed=inf`` raised an ``OverflowError``). Here a value that
comes from the URL is parsed by :mod:`ui.url_values` (never raising) *before* the widget exists,
and after the widget is drawn its current value, defaults included, is written back to the URL,
so the address bar always holds exactly what the page uses. When the URL value had to be changed
(clamped, snapped, invalid, repeated), one line below the widget says so. Presets write
``st.session_state[key]`` in a button callback, which the widget then reflects.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from ui.url_values import Parsed, format_value, parse_bool, parse_choice, parse_multi, parse_number, shown

_NOTES_KEY = "_url_notes"


def clamp(value: float, low: float, high: float) -> float:
    """Clamp ``value`` into ``[low, high]``; NaN maps to ``low``."""
    if isinstance(value, float) and math.isnan(value):
        return low
    return min(high, max(low, value))


def _raw_query_values(key: str) -> list[str]:
    """Every value the URL gives ``key`` (repeated keys give several), as text; [] when absent."""
    try:
        return [str(v) for v in st.query_params.get_all(key)]
    except Exception:  # query params unavailable (bare mode)
        return []


def _seed_state(key: str, default: Any, parse: Callable[[list[str]], Parsed]) -> None:
    """Put the widget's initial value into session state: the URL's value, parsed, else ``default``.

    Runs once per widget and session (later runs keep the user's value). A URL value the page had to
    change leaves a notice, shown below the widget by :func:`_finish`."""
    if key in st.session_state:
        return
    raws = _raw_query_values(key)
    if not raws:
        st.session_state[key] = default
        return
    try:
        parsed = parse(raws)
    except Exception:  # the parsers never raise; a URL must not break the page even if one did
        parsed = Parsed(default, "could not be read; using the default")
    st.session_state[key] = parsed.value
    note = parsed.note
    if len(raws) > 1 and note is None:
        note = f"is given {len(raws)} times; using the last"
    if note:
        raw = raws[-1] if len(raws) == 1 else "&".join(raws)
        notes = st.session_state.setdefault(_NOTES_KEY, {})
        notes[key] = (f"🔗 The link's `{key}={shown(raw)}` {note}: the page uses "
                      f"**{format_value(parsed.value)}**.", parsed.value)


def _last(parse: Callable[[str], Parsed]) -> Callable[[list[str]], Parsed]:
    return lambda raws: parse(raws[-1])


def _write_url(key: str, text: str) -> None:
    try:
        if st.query_params.get_all(key) != [text]:
            st.query_params[key] = text
    except Exception:  # bare mode: there is no URL to write
        pass


def _finish(key: str, value: Any) -> Any:
    """After the widget: write its value to the URL; while the widget still holds the value the link
    was changed to, say so in one line below it."""
    _write_url(key, format_value(value))
    notes = st.session_state.get(_NOTES_KEY)
    if notes and key in notes:
        message, adjusted = notes[key]
        if adjusted == value:
            st.caption(message)
        else:
            del notes[key]
    return value


def _is_int(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _number_parser(low: float, high: float, default: float, step: Any) -> Callable[[list[str]], Parsed]:
    integer = _is_int(low, high, default)
    return _last(lambda raw: parse_number(raw, low, high, default, integer=integer,
                                          step=None if step is None else float(step)))


def url_slider(label: str, key: str, low: float, high: float, default: float, **kwargs: Any) -> Any:
    """A slider bound to the URL; ints if ``low``, ``high`` and ``default`` are all ints."""
    _seed_state(key, default, _number_parser(low, high, default, kwargs.get("step")))
    return _finish(key, st.slider(label, min_value=low, max_value=high, key=key, **kwargs))


def url_number(label: str, key: str, low: float, high: float, default: float, **kwargs: Any) -> Any:
    """A number input bound to the URL (ints if all bounds and the default are ints)."""
    _seed_state(key, default, _number_parser(low, high, default, None))
    return _finish(key, st.number_input(label, min_value=low, max_value=high, key=key, **kwargs))


def url_select_slider(label: str, key: str, options: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A select-slider bound to the URL. Numeric options accept any number, snapped to the nearest;
    ``inf`` is the largest option."""
    options = list(options)
    _seed_state(key, default, _last(lambda raw: parse_choice(raw, options, default)))
    return _finish(key, st.select_slider(label, options=options, key=key, **kwargs))


def url_selectbox(label: str, key: str, options: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A selectbox bound to the URL; unknown values fall back to ``default``."""
    options = list(options)
    _seed_state(key, default, _last(lambda raw: parse_choice(raw, options, default)))
    return _finish(key, st.selectbox(label, options=options, key=key, **kwargs))


def url_radio(label: str, key: str, options: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A radio group bound to the URL; unknown values fall back to ``default``."""
    options = list(options)
    _seed_state(key, default, _last(lambda raw: parse_choice(raw, options, default)))
    return _finish(key, st.radio(label, options=options, key=key, **kwargs))


def url_multiselect(
    label: str, key: str, options: Sequence[Any], default: Sequence[Any], **kwargs: Any
) -> Any:
    """A multiselect bound to the URL (comma-separated; ``none`` = nothing selected); unknown entries
    are dropped."""
    options = list(options)
    _seed_state(key, list(default), lambda raws: parse_multi(raws, options, default))
    return _finish(key, st.multiselect(label, options=options, key=key, **kwargs))


def url_toggle(label: str, key: str, default: bool, **kwargs: Any) -> bool:
    """A toggle bound to the URL (``true/false/1/0/yes/no/on/off``)."""
    _seed_state(key, default, _last(lambda raw: parse_bool(raw, default)))
    return _finish(key, st.toggle(label, key=key, **kwargs))


def url_checkbox(label: str, key: str, default: bool, **kwargs: Any) -> bool:
    """A checkbox bound to the URL (``true/false/1/0/yes/no/on/off``)."""
    _seed_state(key, default, _last(lambda raw: parse_bool(raw, default)))
    return _finish(key, st.checkbox(label, key=key, **kwargs))


def apply_preset(values: dict[str, Any]) -> None:
    """Button callback: write a preset's widget values into session state."""
    for key, value in values.items():
        st.session_state[key] = value


def preset_buttons(presets: dict[str, dict[str, Any]], key_prefix: str) -> None:
    """A row of buttons, one per preset; clicking one sets every widget the preset names."""
    columns = st.columns(len(presets))
    for column, (name, values) in zip(columns, presets.items()):
        column.button(name, key=f"{key_prefix}_{name}", on_click=apply_preset, args=(values,),
                      width="stretch")


@st.cache_resource(show_spinner=False)
def warm_up() -> dict[str, Any]:
    """Pay the heavy, lazy imports once per process, then freeze import-time objects for the GC.

    Streamlit runs a full ``gc.collect`` after every rerun; with torch loaded that costs ~250 ms
    unless the import-time objects are frozen. ``torch.optim`` lazily imports ``torch._dynamo``
    (and sympy), which would otherwise happen inside a training worker under GIL contention.
    """
    import plotly.graph_objects  # noqa: F401
    import torch
    import torch._dynamo

    import etr_core  # noqa: F401

    gc.collect()
    gc.freeze()
    return {"cuda": torch.cuda.is_available(), "torch": torch.__version__}


def global_seed() -> int:
    """The seed chosen in the shared sidebar (0 when the sidebar has not run)."""
    return int(st.session_state.get("seed", 0))


def current_device_name() -> str:
    """``"cuda"`` when a GPU is present, else ``"cpu"``: the device pages actually use."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def render_sidebar() -> None:
    """The sidebar every page shares: the seed, the presentation toggle and the device in use."""
    from etr_core.devices import describe_device, device
    from ui.presentation import presentation_style, presentation_toggle

    with st.sidebar:
        url_number("Seed", "seed", 0, 2**31 - 1, 0, step=1,
                   help="Every random choice on every page (start points, data splits, initial weights) "
                   "derives from this seed.")
        presentation_toggle()
        st.caption(f"Device in use: **{describe_device(device('auto'))}**")
    presentation_style()


def readable(value: Any, digits: int = 4) -> str:
    """A number for reading: ``digits`` significant digits, scientific notation for very small or large
    magnitudes (``9.1e-21``, never ``0.000000000000000000009``); ``—`` for None, text for NaN/inf."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def show_table(rows: Sequence[dict[str, Any]], digits: int = 4) -> None:
    """``st.dataframe`` of ``rows`` (keys = columns) with every float column shown to ``digits``
    significant digits, in scientific notation when small or large (``9.1e-21``); values stay numbers."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    config = {}
    for column in frame.columns:
        if any(isinstance(v, float) for v in frame[column]):
            config[column] = st.column_config.NumberColumn(format=f"%.{digits}g")
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config)
