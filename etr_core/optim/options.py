"""Hyper-parameters of the trust-region optimisers: presets, overrides and the ellipsoid's options."""

from __future__ import annotations

from typing import Any

from etr_core._validation import check_choice
from etr_core.config import TRConfig, default_gamma2


def _ellipsoid_options(ellipsoid: Any, config: TRConfig) -> dict[str, Any]:
    if not isinstance(ellipsoid, str):
        return {}
    name = ellipsoid.lower()
    if name in ("uniform", "uni", "sphere"):
        return {}
    options: dict[str, Any] = {"eps": config.eps, "eps_mode": config.eps_mode}
    if name in ("rms", "rmsprop"):
        options["beta"] = config.beta
    return options


_CONFIG_FIELDS = {
    "radius",
    "max_radius",
    "eta1",
    "eta2",
    "gamma1",
    "gamma2",
    "krylov_tol",
    "theta",
    "max_krylov",
    "solver",
    "stop_rule",
    "residual_norm",
    "root",
    "grow_only_on_boundary",
    "ellipsoid_update",
    "beta",
    "eps",
    "eps_mode",
    "tiny_pred",
}


def _build_config(preset: TRConfig | None, ellipsoid: Any, overrides: dict[str, Any]) -> tuple[TRConfig, Any]:
    if preset is not None and not isinstance(preset, TRConfig):
        raise TypeError(
            f"preset must be a TRConfig (e.g. etr_core.config.paper_table1('rms')), got {preset!r}"
        )
    base = preset if preset is not None else TRConfig(ellipsoid="rms")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    if ellipsoid is None:
        ellipsoid = base.ellipsoid
    if isinstance(ellipsoid, str):
        check_choice(
            "ellipsoid", ellipsoid.lower(), ("uniform", "uni", "sphere", "adagrad", "ada", "rms", "rmsprop")
        )
        canonical = {"uni": "uniform", "sphere": "uniform", "ada": "adagrad", "rmsprop": "rms"}
        changes["ellipsoid"] = canonical.get(ellipsoid.lower(), ellipsoid.lower())
    else:
        changes["ellipsoid"] = getattr(ellipsoid, "name", base.ellipsoid)
    if (
        changes["ellipsoid"] != base.ellipsoid
        and "gamma2" not in changes
        and base.gamma2 is not None
        and base.gamma2 == default_gamma2(base.ellipsoid)
    ):
        changes["gamma2"] = None  # Table 1's shrink factor follows the ellipsoid
    return base.replace(**changes), ellipsoid
