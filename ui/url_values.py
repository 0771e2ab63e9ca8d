"""Parse untrusted URL query values into widget values, and format widget values for the URL.

Pure functions (no Streamlit), so every hostile input can be tested directly. Each parser returns a
:class:`Parsed`: the value the page will use and, when that is not exactly what the URL said, a
short reason for the one-line notice the page shows. Nothing here raises on any string: NaN, empty
or non-numeric text falls back to the default, ``inf``/``Infinity`` means the largest allowed value
(``-inf`` the smallest), out-of-range numbers are clamped, and numbers between a select-slider's
options snap to the nearest option.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NONE_SELECTED", "Parsed", "format_value", "parse_bool", "parse_choice", "parse_multi",
           "parse_number", "shown"]

NONE_SELECTED = "none"  # the URL text of an empty multiselect
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_MAX_SHOWN = 24


@dataclass(frozen=True)
class Parsed:
    """A widget value read from the URL; ``note`` says why it differs from the URL text (or None)."""

    value: Any
    note: str | None = None


def shown(raw: str) -> str:
    """The raw URL text as it may be echoed to the user: printable and at most ~24 characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(raw))
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def format_value(value: Any) -> str:
    """The URL text of a widget value: ``true``/``false``, ints as digits, floats with 12 significant
    digits (so ``0.30000000000000004`` is written ``0.3``), lists comma-separated, other values ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".12g")
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value) if value else NONE_SELECTED
    return str(value)


def _to_float(raw: str) -> float | None:
    """``float(raw)`` or None; never raises (Python's ``float`` already maps overflow to ``inf``)."""
    try:
        return float(str(raw).strip())
    except (TypeError, ValueError, OverflowError):
        return None


def _snap(value: float, low: float, step: float | None) -> float:
    if not step:
        return value
    snapped = low + round((value - low) / step) * step
    return float(format(snapped, ".12g"))


def parse_number(raw: str, low: float, high: float, default: Any, *, integer: bool,
                 step: float | None = None) -> Parsed:
    """A number in ``[low, high]``: ints rounded, floats snapped to ``step`` (measured from ``low``) when
    given; ``±inf`` maps to the bound; NaN, empty or text gives ``default``."""
    x = _to_float(raw)
    if x is None or math.isnan(x):
        return Parsed(default, "is not a number; using the default")
    if math.isinf(x):
        return Parsed(high if x > 0 else low, "means the " + ("largest" if x > 0 else "smallest")
                      + " allowed value")
    if x > high:
        return Parsed(high, f"is above the largest allowed value {format_value(high)}")
    if x < low:
        return Parsed(low, f"is below the smallest allowed value {format_value(low)}")
    if integer:
        value: Any = round(x)
        note = None if value == x else "is not a whole number; rounded"
        return Parsed(min(max(value, int(low)), int(high)), note)
    value = min(max(_snap(x, low, step), low), high)
    return Parsed(value, None if value == x else f"is not on the slider's grid (step {step:g}); snapped")


def _numeric(options: Sequence[Any]) -> list[float] | None:
    values = []
    for option in options:
        if isinstance(option, bool) or not isinstance(option, (int, float)):
            return None
        values.append(float(option))
    return values


def parse_choice(raw: str, options: Sequence[Any], default: Any) -> Parsed:
    """One of ``options``: the option whose text is ``raw``; for numeric options also the nearest one
    to a number (``inf`` = the largest, ``-inf`` = the smallest); anything else gives ``default``."""
    options = list(options)
    text = str(raw).strip()
    for option in options:
        if str(option) == text:
            return Parsed(option)
    for option in options:
        if str(option).lower() == text.lower():
            return Parsed(option)
    numbers = _numeric(options)
    x = _to_float(text)
    if numbers is None or x is None or math.isnan(x):
        return Parsed(default, "is not one of the options; using the default")
    if math.isinf(x):
        pick = max(range(len(options)), key=numbers.__getitem__) if x > 0 else \
            min(range(len(options)), key=numbers.__getitem__)
        return Parsed(options[pick], "means the " + ("largest" if x > 0 else "smallest") + " option")
    pick = min(range(len(options)), key=lambda i: abs(numbers[i] - x))
    if numbers[pick] == x:
        return Parsed(options[pick])
    return Parsed(options[pick], "is not one of the options; using the nearest")


def parse_bool(raw: str, default: bool) -> Parsed:
    """``true/false/1/0/yes/no/on/off`` (any case); anything else gives ``default``."""
    lowered = str(raw).strip().lower()
    if lowered in _TRUE:
        return Parsed(True)
    if lowered in _FALSE:
        return Parsed(False)
    return Parsed(bool(default), "is not true or false; using the default")


def parse_multi(raws: Sequence[str], options: Sequence[Any], default: Sequence[Any]) -> Parsed:
    """A list of ``options`` from comma-separated text (repeated keys are joined); ``none`` is the empty
    selection; unknown entries are dropped, duplicates removed; empty text gives ``default``."""
    options = list(options)
    by_text = {str(o): o for o in options}
    by_lower = {str(o).lower(): o for o in options}
    parts = [p.strip() for raw in raws for p in str(raw).replace("[", "").replace("]", "").replace("'", "")
             .split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return Parsed(list(default), "is empty; using the default")
    if [p.lower() for p in parts] == [NONE_SELECTED]:
        return Parsed([])
    chosen: list[Any] = []
    unknown: list[str] = []
    for part in parts:
        option = by_text.get(part, by_lower.get(part.lower()))
        if option is None:
            unknown.append(part)
        elif option not in chosen:
            chosen.append(option)
    if not chosen:
        return Parsed(list(default), "names no known option; using the default")
    if unknown:
        return Parsed(chosen, f"has unknown entries ({shown(', '.join(unknown))}); dropped")
    return Parsed(chosen)
