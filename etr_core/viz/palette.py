"""One colour-blind-safe palette with a fixed colour per method, for every page and CLI figure.

Colours come from two palettes designed to stay distinguishable under the common colour-vision
deficiencies: Okabe & Ito (2008, "Color Universal Design") and Paul Tol's "muted" scheme
(https://personal.sron.nl/~pault/). A method keeps its colour everywhere: the live page, the
Hessian page, the 2-D pages and ``etr plot`` / ``etr reproduce`` figures. Lines add a second cue
that survives greyscale projectors: second-order TR methods are solid, first-order optimisers
dashed, the first-order TR variants of paper appendix B dotted.

Names are matched case-insensitively and through aliases, so the toy pages' keys (``"gd"``,
``"tr_sphere"``) and run labels such as ``"Adam (lr=0.001)"`` find the same colour as ``"Adam"``.
"""

from __future__ import annotations

import re

__all__ = [
    "METHOD_COLOURS",
    "OKABE_ITO",
    "TOL_MUTED",
    "canonical_method",
    "method_colour",
    "method_dash",
    "rgba",
]

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
TOL_MUTED: dict[str, str] = {
    "indigo": "#332288",
    "cyan": "#88CCEE",
    "teal": "#44AA99",
    "green": "#117733",
    "olive": "#999933",
    "sand": "#DDCC77",
    "rose": "#CC6677",
    "wine": "#882255",
    "purple": "#AA4499",
    "grey": "#777777",
}

# Canonical method name -> colour. Second-order TR (paper section 4), first-order baselines
# (section 5), and the 2-D pages' methods (section 3, appendix B).
METHOD_COLOURS: dict[str, str] = {
    "TR_uni": OKABE_ITO["blue"],
    "TR_ada": OKABE_ITO["bluish_green"],
    "TR_rms": OKABE_ITO["vermillion"],
    "TR_hess": OKABE_ITO["sky_blue"],
    "ARC_rms": TOL_MUTED["wine"],
    "SGD": OKABE_ITO["orange"],
    "Adagrad": OKABE_ITO["reddish_purple"],
    "RMSprop": TOL_MUTED["indigo"],
    "Adam": OKABE_ITO["black"],
    "GD": TOL_MUTED["green"],
    "Adagrad_full": TOL_MUTED["olive"],
    "FO_TR_uni": TOL_MUTED["rose"],
    "FO_TR_ada": TOL_MUTED["purple"],
    "FO_TR_rms": TOL_MUTED["teal"],
    "Newton": TOL_MUTED["grey"],
}
_ALIASES: dict[str, str] = {
    "tr_uniform": "TR_uni",
    "tr_adagrad_2nd": "TR_ada",
    "tr_rmsprop": "TR_rms",
    "gd": "GD",
    "sgd": "SGD",
    "adagrad": "Adagrad",
    "adagrad_full": "Adagrad_full",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "newton": "Newton",
    # first-order TR of appendix B (the toy pages' keys)
    "tr_sphere": "FO_TR_uni",
    "tr_adagrad": "FO_TR_ada",
    "first_order_tr_uniform": "FO_TR_uni",
    "first_order_tr_adagrad": "FO_TR_ada",
    "first_order_tr_rms": "FO_TR_rms",
}
_FIRST_ORDER = {"SGD", "Adagrad", "RMSprop", "Adam", "GD", "Adagrad_full"}
_FALLBACK = (TOL_MUTED["sand"], TOL_MUTED["cyan"], OKABE_ITO["yellow"])
_LOWER = {name.lower(): name for name in METHOD_COLOURS}


def canonical_method(name: str) -> str | None:
    """The palette's name for ``name`` (``"Adam (lr=0.001)"`` -> ``"Adam"``), or ``None`` if unknown.

    Raises ``TypeError`` when ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"method name must be a str, got {type(name).__name__}: {name!r}")
    base = re.split(r"[\s(\[]", name.strip(), maxsplit=1)[0]
    for key in (name.strip(), base):
        if key in METHOD_COLOURS:
            return key
        low = key.lower()
        if low in _LOWER:
            return _LOWER[low]
        if low in _ALIASES:
            return _ALIASES[low]
    return None


def method_colour(name: str) -> str:
    """Hex colour of method ``name``; unknown names get a stable colour from a small reserve."""
    canonical = canonical_method(name)
    if canonical is not None:
        return METHOD_COLOURS[canonical]
    return _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def method_dash(name: str) -> str:
    """Plotly dash style: ``"solid"`` for second-order TR, ``"dash"`` for first-order optimisers,
    ``"dot"`` for the first-order TR variants (paper appendix B)."""
    canonical = canonical_method(name)
    if canonical in _FIRST_ORDER:
        return "dash"
    if canonical is not None and canonical.startswith("FO_TR"):
        return "dot"
    return "solid"


def rgba(hex_colour: str, alpha: float) -> str:
    """``"rgba(r,g,b,alpha)"`` for a ``#RRGGBB`` colour (bands and filled regions).

    Raises ``ValueError`` for a malformed colour or ``alpha`` outside ``[0, 1]``.
    """
    h = hex_colour.lstrip("#") if isinstance(hex_colour, str) else ""
    if len(h) != 6 or any(c not in "0123456789abcdefABCDEF" for c in h):
        raise ValueError(f"hex_colour must look like '#RRGGBB', got {hex_colour!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha:g})"
