"""Diagonal trust-region ellipsoids: uniform, Adagrad and RMSProp (paper Eq. 2-3, Corollary 1).

An ellipsoid is the strictly positive diagonal ``m`` of the norm ``||s||_M = sqrt(sum_i m_i s_i^2)``
used both as the trust-region constraint of Eq. 8 and as the preconditioner of the Krylov solver
(appendix B.2). Following Corollary 1, ``m`` is the *square root* of the accumulated squared
gradients, ``m = sqrt(v + eps)``:

* Adagrad (Eq. 2, diagonal):  ``v_t = sum_{i <= t} g_i^2``
* RMSProp (Eq. 3, diagonal):  ``v_t = beta v_{t-1} + (1 - beta) g_t^2``,  ``v_0 = 0``

``eps_mode="paper"`` keeps ``eps`` as a persistent floor, ``m >= sqrt(eps)``, which is the ``+ eps I``
of Eq. 2-3 and the hypothesis of Proposition 2 (uniform equivalence of the norms).

``eps_mode="authors"`` reproduces the published research code instead: ``eps`` is only the initial
value of the accumulator (``v_0 = eps``) and ``m = sqrt(v)``. For RMSProp this floor decays like
``beta^t eps``, so a coordinate whose gradient stays zero sees ``m_i -> 0`` and Proposition 2 no
longer applies. It exists to reproduce published curves, not as a recommended setting.

State is created lazily by the first ``update(g)`` with ``g``'s device, dtype and length (float16 and
bfloat16 gradients accumulate in float32, where ``eps`` and the squares survive; the accumulator
saturates at the dtype's largest finite value, so ``m`` stays finite for huge finite gradients). Calling
``diag()`` on a stateful ellipsoid before any update raises ``RuntimeError``; ``diag(like=x)``
instead returns the value an empty accumulator implies, ``sqrt(eps) * 1`` shaped like ``x``.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from etr_core._validation import check_choice, check_positive, check_real

__all__ = [
    "DEFAULT_EPS",
    "ELLIPSOID_NAMES",
    "AdagradEllipsoid",
    "Ellipsoid",
    "RMSPropEllipsoid",
    "UniformEllipsoid",
    "m_inv_norm",
    "m_norm",
    "make_ellipsoid",
]

EPS_MODES = ("paper", "authors")

# The default floor ``m >= sqrt(eps) = 1e-8``, the scale of torch's RMSprop and Adam (``sqrt(v) + 1e-8``).
# Table 1 gives no eps. With eps = 1e-10 (a floor of 1e-5) the Adagrad and RMSProp regions of the
# autoencoders are spheres on the layers whose gradients lie below 1e-5 (the inner layers on the
# mean-image plateau), and TR_ada / TR_rms then stall there like TR_uni; with 1e-16 they leave it, and
# the MLP results do not change (docs/paper-results.md, benchmarks/bench_eps_floor.py).
DEFAULT_EPS = 1e-16


@runtime_checkable
class Ellipsoid(Protocol):
    """What the optimisers and solvers need from an ellipsoid."""

    def update(self, g: Tensor) -> None: ...

    def diag(self, like: Tensor | None = None) -> Tensor: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, sd: dict) -> None: ...

    def reset(self) -> None: ...


def m_norm(x: Tensor, m: Tensor) -> Tensor:
    """The ellipsoidal norm ``||x||_M = sqrt(x^T diag(m) x)`` of Eq. 8 and Theorem 1, a 0-dim tensor.

    Computed on ``x / max|x|`` and scaled back, so it neither overflows (float32 entries near 1e19)
    nor underflows for any finite ``x`` and ``m``; no host synchronisation.
    """
    x, scale = _scaled(x)
    return torch.dot(x, x * m.reshape(-1).to(x.dtype)).clamp_min(0).sqrt() * scale


def m_inv_norm(x: Tensor, m: Tensor) -> Tensor:
    """The dual norm ``||x||_{M^-1} = sqrt(x^T diag(m)^-1 x)`` (Theorem 1), a 0-dim tensor; overflow-safe
    like :func:`m_norm`."""
    x, scale = _scaled(x)
    return torch.dot(x, x / m.reshape(-1).to(x.dtype)).clamp_min(0).sqrt() * scale


def _scaled(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x / s, s)`` with ``s = max|x|`` (1 for ``x = 0``), flat, in at least float32."""
    x = x.reshape(-1)
    x = x.to(_accumulator_dtype(x.dtype))
    if x.numel() == 0:
        return x, torch.ones((), dtype=x.dtype, device=x.device)
    scale = x.abs().amax()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return x / scale, scale


def _flat_gradient(g: Any) -> Tensor:
    if not isinstance(g, Tensor):
        raise TypeError(f"g must be a torch.Tensor, got {type(g).__name__}")
    if not g.is_floating_point():
        raise TypeError(f"g must be a floating-point tensor, got dtype {g.dtype}")
    g = g.detach().reshape(-1)
    # One host read per outer step: a NaN/Inf gradient would poison the accumulator for good. A sum is
    # ~20x cheaper than ``isfinite(g).all()`` on CPU and is non-finite whenever g is; only then (or on
    # an overflowing sum of finite entries) is the exact test paid.
    if not math.isfinite(float(g.sum())) and not bool(torch.isfinite(g).all()):
        raise ValueError("g contains NaN or Inf; the ellipsoid state was left unchanged")
    return g


class UniformEllipsoid:
    """The spherical trust region, ``m = 1`` (the usual ``A_t = I`` of section 4)."""

    name = "uniform"

    def __init__(self) -> None:
        self._numel: int | None = None
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    def update(self, g: Tensor) -> None:
        """Remember the length, device and dtype of ``g``; a sphere has no other state."""
        g = _flat_gradient(g)
        if self._numel is not None and g.numel() != self._numel:
            raise ValueError(f"g has {g.numel()} entries but the ellipsoid was built for {self._numel}")
        self._numel, self._device, self._dtype = g.numel(), g.device, g.dtype

    def diag(self, like: Tensor | None = None) -> Tensor:
        """``ones`` shaped like ``like`` (flattened), or like the last gradient seen."""
        if like is not None:
            return torch.ones(like.numel(), device=like.device, dtype=like.dtype)
        if self._numel is None:
            raise RuntimeError(
                "UniformEllipsoid.diag() needs `like` or a previous update(g) to know its length"
            )
        return torch.ones(self._numel, device=self._device, dtype=self._dtype)

    def state_dict(self) -> dict:
        return {"kind": self.name, "numel": self._numel, "dtype": self._dtype, "device": self._device}

    def load_state_dict(self, sd: dict) -> None:
        _check_kind(sd, self.name)
        self._numel, self._dtype, self._device = sd["numel"], sd["dtype"], sd["device"]

    def reset(self) -> None:
        self._numel = self._device = self._dtype = None

    def __repr__(self) -> str:
        return "UniformEllipsoid()"


class _AccumulatingEllipsoid:
    """Shared state handling: accumulator ``v``, update count, eps floor policy."""

    name = ""

    def __init__(self, eps: float, eps_mode: str) -> None:
        self.eps = check_positive("eps", eps)
        self.eps_mode = check_choice("eps_mode", eps_mode, EPS_MODES)
        self.v: Tensor | None = None
        self.steps = 0

    def _accumulate(self, v: Tensor, g: Tensor) -> None:
        raise NotImplementedError

    def _scale(self) -> float:
        """Factor applied to ``v`` before the square root (bias correction); 1 by default."""
        return 1.0

    def update(self, g: Tensor) -> None:
        """Fold one flat gradient into the accumulator (in place, one fused kernel per op)."""
        g = _flat_gradient(g)
        if self.v is None:
            initial = self.eps if self.eps_mode == "authors" else 0.0
            self.v = torch.full_like(g, initial, dtype=_accumulator_dtype(g.dtype))
        elif g.numel() != self.v.numel():
            raise ValueError(f"g has {g.numel()} entries but the ellipsoid was built for {self.v.numel()}")
        self._accumulate(self.v, g.to(device=self.v.device, dtype=self.v.dtype))
        # g_i^2 overflows for |g_i| > 1.8e19 in float32: saturate at the largest finite value so that
        # m stays finite (m_i = sqrt(max) ~ 1.8e19 there) instead of poisoning the solver with inf
        self.v.clamp_max_(torch.finfo(self.v.dtype).max)
        self.steps += 1

    def diag(self, like: Tensor | None = None) -> Tensor:
        """The diagonal ``m > 0`` (a new tensor; callers may keep it across later updates)."""
        if self.v is None:
            if like is None:
                raise RuntimeError(
                    f"{type(self).__name__}.diag() called before any update(g); "
                    "call update(g) first or pass like= to get the empty-state value sqrt(eps)"
                )
            floor = max(math.sqrt(self.eps), _smallest_positive(like.dtype))  # sqrt(eps) may underflow
            return torch.full((like.numel(),), floor, device=like.device, dtype=like.dtype)
        scale = self._scale()
        if scale != 1.0:
            out = self.v.mul(scale)
            if self.eps_mode == "paper":
                out.add_(self.eps)
        elif self.eps_mode == "paper":
            out = torch.add(self.v, self.eps)  # one pass instead of a copy and an in-place add
        else:
            out = self.v.clone()
        out.sqrt_()
        if self.eps_mode == "paper" and self.eps < torch.finfo(out.dtype).tiny:
            # eps itself underflows in this precision (v + eps == v): apply the floor sqrt(eps) directly
            out.clamp_min_(math.sqrt(self.eps))
        # float32 underflow in "authors" mode can reach exactly 0; keep the result strictly positive.
        if self.eps_mode == "authors":
            out.clamp_min_(torch.finfo(out.dtype).tiny)
        if like is not None:
            out = out.to(device=like.device, dtype=like.dtype)
            if out.dtype != self.v.dtype:
                out.clamp_min_(_smallest_positive(out.dtype))  # the floor must survive the cast
        return out

    def state_dict(self) -> dict:
        return {
            "kind": self.name,
            "eps": self.eps,
            "eps_mode": self.eps_mode,
            "steps": self.steps,
            "v": None if self.v is None else self.v.clone(),
            **self._extra_state(),
        }

    def _extra_state(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        _check_kind(sd, self.name)
        self.eps = check_positive("eps", sd["eps"])
        self.eps_mode = check_choice("eps_mode", sd["eps_mode"], EPS_MODES)
        self.steps = int(sd["steps"])
        v = sd["v"]
        self.v = None if v is None else v.detach().to(dtype=_accumulator_dtype(v.dtype), copy=True)
        self._load_extra(sd)

    def _load_extra(self, sd: dict) -> None:
        pass

    def reset(self) -> None:
        self.v = None
        self.steps = 0


class AdagradEllipsoid(_AccumulatingEllipsoid):
    """Diagonal Adagrad ellipsoid, ``m = sqrt(sum_i g_i^2 + eps)`` (Eq. 2 with Corollary 1's root).

    Not uniformly equivalent (section 4.1): ``m`` grows without bound, so a fixed radius means
    ever shorter Euclidean steps.
    """

    name = "adagrad"

    def __init__(self, eps: float = DEFAULT_EPS, eps_mode: str = "paper") -> None:
        super().__init__(eps, eps_mode)

    def _accumulate(self, v: Tensor, g: Tensor) -> None:
        v.addcmul_(g, g)

    def __repr__(self) -> str:
        return f"AdagradEllipsoid(eps={self.eps!r}, eps_mode={self.eps_mode!r})"


class RMSPropEllipsoid(_AccumulatingEllipsoid):
    """Diagonal RMSProp ellipsoid, ``m = sqrt(EMA_beta(g^2) + eps)`` (Eq. 3, Corollary 1, Prop. 2).

    ``beta`` defaults to 0.8, the value of the published code (the paper gives none).
    ``bias_correction=True`` divides the EMA by ``1 - beta^t`` as Adam does; off by default, as in
    the paper and the published code.
    """

    name = "rms"

    def __init__(
        self, beta: float = 0.8, eps: float = DEFAULT_EPS, eps_mode: str = "paper",
        bias_correction: bool = False,
    ) -> None:
        super().__init__(eps, eps_mode)
        self.beta = _check_beta(beta)
        if not isinstance(bias_correction, bool):
            raise TypeError(f"bias_correction must be a bool, got {bias_correction!r}")
        self.bias_correction = bias_correction

    def _accumulate(self, v: Tensor, g: Tensor) -> None:
        v.mul_(self.beta).addcmul_(g, g, value=1.0 - self.beta)

    def _scale(self) -> float:
        if not self.bias_correction or self.steps == 0:
            return 1.0
        return 1.0 / (1.0 - self.beta**self.steps)

    def _extra_state(self) -> dict:
        return {"beta": self.beta, "bias_correction": self.bias_correction}

    def _load_extra(self, sd: dict) -> None:
        self.beta = _check_beta(sd["beta"])
        self.bias_correction = bool(sd["bias_correction"])

    def __repr__(self) -> str:
        return (
            f"RMSPropEllipsoid(beta={self.beta!r}, eps={self.eps!r}, eps_mode={self.eps_mode!r}, "
            f"bias_correction={self.bias_correction!r})"
        )


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 gradients accumulate in float32: their squares (and ``eps = 1e-16``, which
    rounds to 0 in float16) do not survive in half precision. Other dtypes accumulate as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _smallest_positive(dtype: torch.dtype) -> float:
    """The smallest positive (subnormal) value of ``dtype``."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def _check_beta(beta: Any) -> float:
    beta = check_real("beta", beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
    return beta


def _check_kind(sd: dict, expected: str) -> None:
    if not isinstance(sd, dict) or sd.get("kind") != expected:
        got = sd.get("kind") if isinstance(sd, dict) else type(sd).__name__
        raise ValueError(f"state_dict is for ellipsoid kind {got!r}, expected {expected!r}")


_ALIASES = {
    "uniform": "uniform",
    "uni": "uniform",
    "sphere": "uniform",
    "adagrad": "adagrad",
    "ada": "adagrad",
    "rms": "rms",
    "rmsprop": "rms",
}
ELLIPSOID_NAMES = ("uniform", "adagrad", "rms")
# Options that only mean something for accumulating ellipsoids; a sphere accepts and ignores them so
# one option dict can configure every kind.
_UNIFORM_IGNORED = {"eps", "eps_mode", "beta", "bias_correction"}


def make_ellipsoid(name: str | Ellipsoid, **kwargs: Any) -> Ellipsoid:
    """Build an ellipsoid by name: ``"uniform"`` (``"uni"``), ``"adagrad"`` (``"ada"``), ``"rms"``
    (``"rmsprop"``), or ``"hessian"`` (beyond the paper: :class:`etr_core.hessian_diagonal.
    HessianDiagonalEllipsoid`, options ``beta``, ``eps``, ``eps_mode``, ``probes``, ``block``, ``seed``).
    An existing ellipsoid object is returned unchanged (kwargs must then be empty).
    """
    if not isinstance(name, str):
        if isinstance(name, Ellipsoid):
            if kwargs:
                raise TypeError(
                    "make_ellipsoid got an ellipsoid object and keyword options; pass one or the other"
                )
            return name
        raise TypeError(f"ellipsoid must be a name or an ellipsoid object, got {type(name).__name__}")
    key = _ALIASES.get(name.lower())
    if key is None and name.lower() == "hessian":
        from etr_core.hessian_diagonal import HessianDiagonalEllipsoid  # built on RMSPropEllipsoid

        return HessianDiagonalEllipsoid(**{k: v for k, v in kwargs.items() if k != "bias_correction"})
    if key is None:
        raise ValueError(f"ellipsoid must be one of {', '.join(map(repr, ELLIPSOID_NAMES))} "
                         f"(aliases 'uni', 'ada', 'rmsprop') or 'hessian'; got {name!r}")
    if key == "uniform":
        unknown = set(kwargs) - _UNIFORM_IGNORED
        if unknown:
            raise TypeError(f"unexpected option(s) for the uniform ellipsoid: {sorted(unknown)}")
        return UniformEllipsoid()
    if key == "adagrad":
        if "beta" in kwargs or "bias_correction" in kwargs:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("beta", "bias_correction")}
        return AdagradEllipsoid(**kwargs)
    return RMSPropEllipsoid(**kwargs)
