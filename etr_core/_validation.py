"""Early, explicit checks of user-supplied hyper-parameters.

Every check raises ``ValueError`` (or ``TypeError``) naming the parameter, the value it got and
the allowed range, so a bad configuration fails before any work starts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def _scalar_tensor(value: Any) -> Any:
    """A 0-dim torch tensor as the Python number it holds (``bool`` and complex kept as such so that
    the callers reject them); anything else unchanged. torch is imported only if it is loaded."""
    torch = _loaded_torch()
    if torch is not None and isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise TypeError(f"expected a scalar, got a tensor of shape {tuple(value.shape)}")
        return value.item()
    return value


def _loaded_torch() -> Any:
    import sys

    return sys.modules.get("torch")


def _is_bool(value: Any) -> bool:
    kind = type(value)
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def _is_real(value: Any) -> bool:
    """Python and numpy reals and integers; not ``bool`` (nor ``numpy.bool_``), not complex."""
    return isinstance(value, numbers.Real) and not _is_bool(value)


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as float, or raise if it is not a finite real number.

    Accepts any real scalar: Python ``int``/``float``, numpy scalars and 0-dim torch tensors.
    ``bool`` and complex numbers raise ``TypeError``; NaN and infinities raise ``ValueError``.
    """
    if type(value) is float or type(value) is int:  # the common case, without the generic checks
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return value
    try:
        value = _scalar_tensor(value)
    except TypeError as err:
        raise TypeError(f"{name} must be a real number, {err}") from None
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
    """An integer within ``[minimum, maximum]`` where given: Python and numpy integers and 0-dim integer
    tensors; ``bool`` and floats (even integral ones) raise ``TypeError``."""
    if type(value) is not int:
        value = _as_integer(name, value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def _as_integer(name: str, value: Any) -> int:
    try:
        value = _scalar_tensor(value)
    except TypeError as err:
        raise TypeError(f"{name} must be an integer, {err}") from None
    if not isinstance(value, numbers.Integral) or _is_bool(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """A ``bool`` (``numpy.bool_`` and 0-dim bool tensors accepted); numbers raise ``TypeError``."""
    try:
        value = _scalar_tensor(value)
    except TypeError as err:
        raise TypeError(f"{name} must be a bool, {err}") from None
    if not _is_bool(value):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
    return value
