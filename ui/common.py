"""Widgets bound to the URL (validated and clamped), the shared sidebar and process warm-up.

Every page builds its controls with the ``url_*`` helpers below so that a lecturer can share a
link: the widget's value lives in the query string (``bind="query-params"``). A value that comes
from the URL is parsed and clamped into the widget's range *before* the widget is created; an
unparsable value falls back to the default. Presets write ``st.session_state[key]`` in a button
callback, which the bound widget then reflects.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _raw_query_value(key: str) -> str | None:
    try:
        value = st.query_params.get(key)
    except Exception:  # query params unavailable (bare mode)
        return None
    return None if value is None else str(value)


def _seed_state(key: str, default: Any, parse: Callable[[str], Any]) -> None:
    """Put the widget's initial value into session state: URL value if valid, else default."""
    if key in st.session_state:
        return
    raw = _raw_query_value(key)
    value = default
    if raw is not None:
        try:
            value = parse(raw)
        except (TypeError, ValueError):
            value = default
    st.session_state[key] = value


def clamp(value: float, low: float, high: float) -> float:
    """Clamp ``value`` into ``[low, high]``; NaN maps to ``low``."""
    if isinstance(value, float) and math.isnan(value):
        return low
    return min(high, max(low, value))


def _parse_float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if math.isnan(value):
            raise ValueError(raw)
        return float(clamp(value, low, high))

    return parse


def _parse_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = float(raw)
        if not math.isfinite(value):
            value = high if value > 0 else low
        return int(clamp(round(value), low, high))

    return parse


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _parse_choice(options: Sequence[Any]) -> Callable[[str], Any]:
    by_text = {str(option): option for option in options}

    def parse(raw: str) -> Any:
        if raw in by_text:
            return by_text[raw]
        raise ValueError(raw)

    return parse


def url_slider(label: str, key: str, low: float, high: float, default: float, **kwargs: Any) -> Any:
    """A slider bound to the URL; ints if ``low``, ``high`` and ``default`` are all ints."""
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, default))
    parse = _parse_int(int(low), int(high)) if integer else _parse_float(float(low), float(high))
    _seed_state(key, default, parse)
    return st.slider(label, min_value=low, max_value=high, key=key, bind="query-params", **kwargs)


def url_number(label: str, key: str, low: float, high: float, default: float, **kwargs: Any) -> Any:
    """A number input bound to the URL (ints if all bounds and the default are ints)."""
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, default))
    parse = _parse_int(int(low), int(high)) if integer else _parse_float(float(low), float(high))
    _seed_state(key, default, parse)
    return st.number_input(label, min_value=low, max_value=high, key=key, bind="query-params", **kwargs)


def url_select_slider(label: str, key: str, options: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A select-slider bound to the URL. Numeric options accept any number, snapped to the nearest."""
    options = list(options)

    def parse(raw: str) -> Any:
        try:
            return _parse_choice(options)(raw)
        except ValueError:
            value = float(raw)
            if math.isnan(value):
                raise
            return min(options, key=lambda o: abs(float(o) - value))

    _seed_state(key, default, parse)
    return st.select_slider(label, options=options, key=key, bind="query-params", **kwargs)


def url_selectbox(label: str, key: str, options: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A selectbox bound to the URL; unknown values fall back to ``default``."""
    options = list(options)
    _seed_state(key, default, _parse_choice(options))
    return st.selectbox(label, options=options, key=key, bind="query-params", **kwargs)


def url_radio(label: str, key: str, options: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A radio group bound to the URL; unknown values fall back to ``default``."""
    options = list(options)
    _seed_state(key, default, _parse_choice(options))
    return st.radio(label, options=options, key=key, bind="query-params", **kwargs)


def url_multiselect(
    label: str, key: str, options: Sequence[Any], default: Sequence[Any], **kwargs: Any
) -> Any:
    """A multiselect bound to the URL; unknown entries are dropped."""
    options = list(options)
    by_text = {str(option): option for option in options}

    def parse(raw: str) -> list[Any]:
        parts = [p for p in raw.replace("[", "").replace("]", "").replace("'", "").split(",") if p.strip()]
        return [by_text[p.strip()] for p in parts if p.strip() in by_text]

    _seed_state(key, list(default), parse)
    return st.multiselect(label, options=options, key=key, bind="query-params", **kwargs)


def url_toggle(label: str, key: str, default: bool, **kwargs: Any) -> bool:
    """A toggle bound to the URL (``true/false/1/0/yes/no/on/off``)."""
    _seed_state(key, default, _parse_bool)
    return st.toggle(label, key=key, bind="query-params", **kwargs)


def url_checkbox(label: str, key: str, default: bool, **kwargs: Any) -> bool:
    """A checkbox bound to the URL (``true/false/1/0/yes/no/on/off``)."""
    _seed_state(key, default, _parse_bool)
    return st.checkbox(label, key=key, bind="query-params", **kwargs)


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
    """The sidebar every page shares: the seed and the device in use."""
    from etr_core.devices import describe_device, device

    with st.sidebar:
        url_number("Seed", "seed", 0, 2**31 - 1, 0, step=1,
                   help="Every random choice on every page (start points, data splits, initial weights) "
                   "derives from this seed.")
        st.caption(f"Device in use: **{describe_device(device('auto'))}**")
