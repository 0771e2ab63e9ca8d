"""Hyper-parameters of the ellipsoidal trust-region method (paper Table 1, Algorithm 1, Eq. 36).

``TRConfig`` holds every knob of :class:`etr_core.optim.EllipsoidalTR` with the paper's Table 1
defaults. Two presets build one:

* :func:`paper_table1` -- Table 1 of the paper (appendix C, B.1), identical for all data sets.
* :func:`authors` -- the values of the authors' published parameter files, which differ from
  Table 1 (acceptance threshold, shrink factor, initial radius, batch size) and switch on the
  model-decrease CG stop rule and the decaying epsilon. Their files also run an undocumented
  first-order warm-up and a "pivot" that undoes non-improving epochs and grows the batch; those
  numbers are carried as data (:class:`WarmupSpec`, :class:`PivotSpec`, ``l2_alpha``) for a
  training loop that wants to reproduce them. The optimiser itself never runs them.

:mod:`~etr_core.config.tr_config` holds :class:`TRConfig` and the Table 1 presets;
:mod:`~etr_core.config.authors` holds the authors' table. Every name is importable from here.
"""

from __future__ import annotations

from etr_core.config.authors import AUTHORS_DATASETS, AUTHORS_MODELS, AUTHORS_PRESETS, authors
from etr_core.config.tr_config import BEYOND_PAPER_ELLIPSOIDS as BEYOND_PAPER_ELLIPSOIDS
from etr_core.config.tr_config import ELLIPSOID_UPDATES as ELLIPSOID_UPDATES
from etr_core.config.tr_config import (
    ELLIPSOIDS,
    PivotSpec,
    TRConfig,
    WarmupSpec,
    default_gamma2,
    fast,
    paper_table1,
)
from etr_core.config.tr_config import EPS_MODES as EPS_MODES
from etr_core.config.tr_config import HESSIAN_BLOCKS as HESSIAN_BLOCKS
from etr_core.config.tr_config import MAX_HESSIAN_PROBES as MAX_HESSIAN_PROBES
from etr_core.config.tr_config import RESIDUAL_NORMS as RESIDUAL_NORMS
from etr_core.config.tr_config import ROOTS as ROOTS
from etr_core.config.tr_config import SOLVERS as SOLVERS
from etr_core.config.tr_config import STOP_RULES as STOP_RULES

__all__ = [
    "AUTHORS_DATASETS",
    "AUTHORS_MODELS",
    "AUTHORS_PRESETS",
    "ELLIPSOIDS",
    "PivotSpec",
    "TRConfig",
    "WarmupSpec",
    "authors",
    "default_gamma2",
    "fast",
    "paper_table1",
]
