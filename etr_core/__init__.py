"""etr_core: ellipsoidal trust-region methods for neural network training.

Adolphs, Kohler & Lucchi, "Ellipsoidal Trust Region Methods for Neural Network Training":
adaptive gradient methods are first-order trust-region methods with an ellipsoidal constraint
(section 3, Theorem 1); their diagonal preconditioners make good trust-region norms for a
second-order stochastic TR method (section 4, Algorithm 1).

Public names are imported lazily so that ``import etr_core`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # devices
    "device": "etr_core.devices",
    "describe_device": "etr_core.devices",
    # ellipsoids (Eq. 2-3, Corollary 1)
    "UniformEllipsoid": "etr_core.ellipsoids",
    "AdagradEllipsoid": "etr_core.ellipsoids",
    "RMSPropEllipsoid": "etr_core.ellipsoids",
    "make_ellipsoid": "etr_core.ellipsoids",
    "m_norm": "etr_core.ellipsoids",
    "m_inv_norm": "etr_core.ellipsoids",
    # subproblem solvers (Eq. 8, 36; appendix B.2)
    "SubproblemResult": "etr_core.subproblem",
    "steihaug_toint_pcg": "etr_core.subproblem",
    "gltr": "etr_core.subproblem",
    "solve_exact": "etr_core.subproblem",
    "first_order_tr_step": "etr_core.subproblem",
    "cauchy_point": "etr_core.subproblem",
    # outer loop pieces
    "reduction_ratio": "etr_core.trust_region",
    "classify_step": "etr_core.trust_region",
    "update_radius": "etr_core.trust_region",
    # optimisers
    "EllipsoidalTR": "etr_core.optim",
    "FirstOrderTR": "etr_core.optim",
    "EllipsoidalARC": "etr_core.arc",
    "HessianDiagonalEllipsoid": "etr_core.hessian_diagonal",
    "TRConfig": "etr_core.config",
    "paper_table1": "etr_core.config",
    "make_hvp": "etr_core.hvp",
    "minimize": "etr_core.minimize",
    # curvature (section 3.2, Proposition 1)
    "exact_hessian": "etr_core.curvature",
    "diagonal_mass": "etr_core.curvature",
    "compare_with_wigner": "etr_core.curvature",
    # training
    "TrainConfig": "etr_core.training",
    "train": "etr_core.training",
    "METHODS": "etr_core.training",
    "load_dataset": "etr_core.data",
    "build_model": "etr_core.models",
    "MLP": "etr_core.models",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'etr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
