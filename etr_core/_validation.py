"""Early, explicit checks of user-supplied hyper-parameters.

Every check raises ``ValueError`` (or ``TypeError``) naming the parameter, the value it got and
the allowed range, so a bad configuration fails before any work starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as float, or raise if it is not a finite real number."""
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value > 0`` (finite)."""
    value = check_real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_nonnegative(name: str, value: Any) -> float:
    """``value >= 0`` (finite)."""
    value = check_real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def check_open_interval(name: str, value: Any, low: float, high: float) -> float:
    """``low < value < high``."""
    value = check_real(name, value)
    if not low < value < high:
        raise ValueError(f"{name} must lie in the open interval ({low}, {high}), got {value!r}")
    return value


def check_closed_interval(name: str, value: Any, low: float, high: float) -> float:
    """``low <= value <= high``."""
    value = check_real(name, value)
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return value


def check_greater(name: str, value: Any, bound: float, bound_name: str | None = None) -> float:
    """``value > bound``."""
    value = check_real(name, value)
    if not value > bound:
        what = f"{bound_name} = {bound!r}" if bound_name else repr(bound)
        raise ValueError(f"{name} must be > {what}, got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (bool rejected) within ``[minimum, maximum]`` where given."""
    if isinstance(value, bool) or not isinstance(value, int):
        # accept integral numpy scalars
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
    return value
