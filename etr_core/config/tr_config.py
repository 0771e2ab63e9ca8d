"""``TRConfig``: every knob of :class:`etr_core.optim.EllipsoidalTR` with the paper's Table 1 defaults
(Algorithm 1, Eq. 36), validated on construction, and the presets :func:`paper_table1` and :func:`fast`.
The authors' first-order warm-up and pivot are carried as data (:class:`WarmupSpec`, :class:`PivotSpec`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from etr_core._validation import (
    check_bool,
    check_choice,
    check_greater,
    check_int,
    check_nonnegative,
    check_open_interval,
    check_positive,
)
from etr_core.ellipsoids import DEFAULT_EPS

ELLIPSOIDS = ("uniform", "adagrad", "rms")
# Beyond the paper (its section 6 future work): the Hutchinson Hessian-diagonal ellipsoid
# (etr_core.hessian_diagonal). No paper or authors' preset exists for it.
BEYOND_PAPER_ELLIPSOIDS = ("hessian",)
HESSIAN_BLOCKS = ("element", "layer", "unit")
# Hutchinson probes per step (one Hessian-vector product each): 1024 already makes the estimate's error
# 32x smaller than one probe's; more is a typo (2**40) that must fail at construction, not mid-step
MAX_HESSIAN_PROBES = 1024
SOLVERS = ("cg", "lanczos")
STOP_RULES = ("residual", "model_decrease")
RESIDUAL_NORMS = ("l2", "m_inv")
ROOTS = ("positive", "best")
ELLIPSOID_UPDATES = ("every_iteration", "after_accept")
EPS_MODES = ("paper", "authors")


def default_gamma2(ellipsoid: str) -> float:
    """Table 1 shrink factor: 1.75 for the RMSProp ellipsoid, 1.5 for uniform and Adagrad (and the
    Hessian-diagonal ellipsoid, which the paper does not have)."""
    check_choice("ellipsoid", ellipsoid, (*ELLIPSOIDS, *BEYOND_PAPER_ELLIPSOIDS))
    return 1.75 if ellipsoid == "rms" else 1.5


@dataclass(frozen=True)
class WarmupSpec:
    """First-order warm-up of the authors' code (run before any TR step; not in the paper).

    ``epochs_key`` is the value written in their files (``1st_order_epochs``); because their epoch
    counter starts at 0 the warm-up actually lasts ``epochs = epochs_key + 1`` epochs.
    """

    epochs_key: int
    optimizer: str  # "SGD" | "RMSprop" | "Adagrad"
    lr: float
    batch_size: int = 128

    @property
    def epochs(self) -> int:
        return self.epochs_key + 1


@dataclass(frozen=True)
class PivotSpec:
    """The authors' sample-size "pivot": every ``every_epochs`` epochs, undo the steps accepted since
    the last pivot if the full training loss did not decrease, and grow the TR batch by ``batch_mult``
    up to ``max_fraction`` of the training set."""

    every_epochs: int
    batch_mult: float
    max_fraction: float


@dataclass
class TRConfig:
    """All hyper-parameters of stochastic ellipsoidal TR (Algorithm 1) with paper Table 1 defaults.

    Core (Algorithm 1): ``radius`` (Delta_0), ``max_radius`` (Delta_max), ``eta1``/``eta2``
    (success thresholds), ``gamma1`` (growth), ``gamma2`` (shrink; ``None`` means Table 1's 1.5, or
    1.75 for ``ellipsoid="rms"``), ``batch_size`` (|S_0|).

    Subproblem (Eq. 8, 36): ``solver`` ("cg" Steihaug-Toint PCG or "lanczos" GLTR), ``krylov_tol``
    (kappa_K), ``theta``, ``max_krylov`` (K), ``stop_rule`` ("residual" = Eq. 36, "model_decrease"
    = the rule of the authors' files), ``residual_norm`` ("l2" or "m_inv"), ``root`` ("positive" or
    "best" boundary root at negative curvature).

    Radius and acceptance: ``grow_only_on_boundary`` (SciPy's rule; the paper grows on every very
    successful step), ``tiny_pred``: a predicted decrease ``<= tiny_pred`` is rejected, never
    accepted.

    Ellipsoid (Eq. 2-3, Corollary 1): ``ellipsoid``, ``beta`` (RMS EMA factor; 0.8 as in the
    authors' code, the paper gives none), ``eps`` (default 1e-16, a floor of 1e-8:
    ``etr_core.ellipsoids.DEFAULT_EPS``) and ``eps_mode`` ("paper": persistent floor
    ``sqrt(v + eps)``; "authors": eps only seeds the accumulator). ``ellipsoid_update``:
    "every_iteration" (default) folds the batch gradient g_t into A_t before every subproblem, so
    A_t contains g_t exactly as ``G_t = [g_1..g_t]`` in Eq. 2-3 and as the authors' code does in
    effect; "after_accept" folds it only when the previous step was accepted (or at t = 0), the
    gate the authors' code intended.

    Start and cost (not in the paper; both off in Table 1): ``auto_radius`` replaces Delta_0 at the
    first step by the radius of the Cauchy step in the ellipsoidal norm (see
    :mod:`etr_core.initial_radius`; ``radius`` is the fallback when the gradient direction has no
    positive curvature); ``hessian_fraction`` in (0, 1] takes the Hessian-vector products on the first
    ``ceil(hessian_fraction * batch)`` examples of the gradient batch (a sub-sampled B of Algorithm 1,
    line 3).

    Beyond the paper: ``ellipsoid="hessian"`` (:mod:`etr_core.hessian_diagonal`) draws
    ``hessian_probes`` Hutchinson probes per step and averages them over ``hessian_block`` ("element",
    "layer" or "unit"); ``beta`` is its EMA factor, ``eps`` its floor.

    Authors' extras (data only, the optimiser ignores them): ``warmup``, ``pivot``, ``l2_alpha``.
    """

    radius: float = 1e-4
    max_radius: float = 10.0
    eta1: float = 1e-4
    eta2: float = 0.95
    gamma1: float = 1.1
    gamma2: float | None = None
    krylov_tol: float = 0.1
    theta: float = 0.5
    max_krylov: int = 50
    batch_size: int = 512
    ellipsoid: str = "rms"
    solver: str = "cg"
    stop_rule: str = "residual"
    residual_norm: str = "l2"
    root: str = "positive"
    grow_only_on_boundary: bool = False
    ellipsoid_update: str = "every_iteration"
    beta: float = 0.8
    eps: float = DEFAULT_EPS
    eps_mode: str = "paper"
    tiny_pred: float = 0.0
    auto_radius: bool = False
    hessian_fraction: float = 1.0
    warmup: WarmupSpec | None = None
    pivot: PivotSpec | None = None
    l2_alpha: float = 0.0
    hessian_probes: int = 1
    hessian_block: str = "element"
    label: str = field(default="paper Table 1")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def gamma2_value(self) -> float:
        """The shrink factor in force: ``gamma2`` if given, else Table 1's value for the ellipsoid."""
        return self.gamma2 if self.gamma2 is not None else default_gamma2(self.ellipsoid)

    def validate(self) -> TRConfig:
        """Check every field; raise ``ValueError``/``TypeError`` naming the field, value and range.

        Numeric fields accept any real scalar (Python, numpy, 0-dim tensor) and are stored as Python
        ``float``/``int``; ``bool``, complex and non-finite values are refused."""
        self.radius = check_positive("radius", self.radius)
        self.max_radius = check_positive("max_radius", self.max_radius)
        if self.radius > self.max_radius:
            raise ValueError(f"radius must be <= max_radius = {self.max_radius!r}, got {self.radius!r}")
        self.eta1 = check_open_interval("eta1", self.eta1, 0.0, 1.0)
        self.eta2 = check_open_interval("eta2", self.eta2, 0.0, 1.0)
        if not self.eta1 < self.eta2:
            raise ValueError(
                f"eta1 must be < eta2 = {self.eta2!r} (Algorithm 1: 0 < eta1 < eta2 < 1), got {self.eta1!r}"
            )
        self.gamma1 = check_greater("gamma1", self.gamma1, 1.0)
        if self.gamma2 is not None:
            self.gamma2 = check_greater("gamma2", self.gamma2, 1.0)
        self.krylov_tol = check_open_interval("krylov_tol", self.krylov_tol, 0.0, 1.0)
        self.theta = check_nonnegative("theta", self.theta)
        self.max_krylov = check_int("max_krylov", self.max_krylov, minimum=0)
        self.batch_size = check_int("batch_size", self.batch_size, minimum=1)
        check_choice("ellipsoid", self.ellipsoid, (*ELLIPSOIDS, *BEYOND_PAPER_ELLIPSOIDS))
        self.hessian_probes = check_int(
            "hessian_probes", self.hessian_probes, minimum=1, maximum=MAX_HESSIAN_PROBES
        )
        check_choice("hessian_block", self.hessian_block, HESSIAN_BLOCKS)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("stop_rule", self.stop_rule, STOP_RULES)
        if self.solver == "lanczos" and self.stop_rule != "residual":
            raise ValueError(
                f"stop_rule must be 'residual' with solver='lanczos' (GLTR stops by Eq. 36 only), "
                f"got {self.stop_rule!r}"
            )
        check_choice("residual_norm", self.residual_norm, RESIDUAL_NORMS)
        check_choice("root", self.root, ROOTS)
        self.grow_only_on_boundary = check_bool("grow_only_on_boundary", self.grow_only_on_boundary)
        check_choice("ellipsoid_update", self.ellipsoid_update, ELLIPSOID_UPDATES)
        self.beta = check_open_interval("beta", self.beta, 0.0, 1.0)
        self.eps = check_positive("eps", self.eps)
        check_choice("eps_mode", self.eps_mode, EPS_MODES)
        self.tiny_pred = check_nonnegative("tiny_pred", self.tiny_pred)
        self.auto_radius = check_bool("auto_radius", self.auto_radius)
        self.hessian_fraction = check_positive("hessian_fraction", self.hessian_fraction)
        if self.hessian_fraction > 1.0:
            raise ValueError(
                f"hessian_fraction must be in (0, 1] (the share of the batch the Hessian products "
                f"use), got {self.hessian_fraction!r}"
            )
        self.l2_alpha = check_nonnegative("l2_alpha", self.l2_alpha)
        if self.warmup is not None and not isinstance(self.warmup, WarmupSpec):
            raise TypeError(f"warmup must be a WarmupSpec or None, got {self.warmup!r}")
        if self.pivot is not None and not isinstance(self.pivot, PivotSpec):
            raise TypeError(f"pivot must be a PivotSpec or None, got {self.pivot!r}")
        if not isinstance(self.label, str):
            raise TypeError(f"label must be a str, got {self.label!r}")
        return self

    def replace(self, **changes: Any) -> TRConfig:
        """A validated copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view (nested specs as dicts), e.g. for a run's saved configuration."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TRConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        data = dict(data)
        if isinstance(data.get("warmup"), dict):
            data["warmup"] = WarmupSpec(**data["warmup"])
        if isinstance(data.get("pivot"), dict):
            data["pivot"] = PivotSpec(**data["pivot"])
        return cls(**data)


def paper_table1(kind: str = "rms") -> TRConfig:
    """Paper Table 1 (appendix C, B.1) for ``kind`` in "uniform" | "adagrad" | "rms"."""
    check_choice("kind", kind, ELLIPSOIDS)
    return TRConfig(ellipsoid=kind, gamma2=default_gamma2(kind), label=f"paper Table 1 ({kind})")


def fast(kind: str = "rms") -> TRConfig:
    """The time-to-target preset: Table 1 with the automatic initial radius (the first Cauchy step,
    :mod:`etr_core.initial_radius`). Hessian products on a sub-batch (``hessian_fraction``) were
    measured too and left out: on the Fashion-MNIST MLP they cost more steps than they saved per
    step (docs/benchmarks.md, "Presets: time to target")."""
    check_choice("kind", kind, ELLIPSOIDS)
    return TRConfig(ellipsoid=kind, gamma2=default_gamma2(kind), auto_radius=True, label=f"fast ({kind})")

