"""Tunable 2-D quadratics, the test bed of the paper's Fig. 1 and Fig. 5.

``f(w) = 1/2 (w - w*)^T Q (w - w*)`` with ``Q = R(theta) diag(mu, L) R(theta)^T``. At ``theta = 0``
the low-curvature direction is the horizontal axis and the high-curvature one the vertical axis, as
in Fig. 1 (left and centre: level sets aligned with the axes); a non-zero rotation tilts the level
sets (Fig. 1 right), which is where diagonal preconditioning loses its edge (section 3.2).

The smallest eigenvalue is ``mu = scale`` and the largest ``L = scale * kappa``, so ``kappa`` is the
condition number and ``f* = f(w*) = 0``. Values, gradients and the Hessian are numpy float64; a
torch callable on float64 tensors is provided for ``etr_core.minimize``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from etr_core._validation import check_closed_interval, check_positive, check_real

__all__ = ["KAPPA_RANGE", "Quadratic2D", "make_quadratic"]

KAPPA_RANGE = (1.0, 1.0e4)


def _rotation(theta_deg: float) -> np.ndarray:
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


@dataclass(frozen=True)
class Quadratic2D:
    """The quadratic ``1/2 (w - w*)^T Q (w - w*)``; build it with :func:`make_quadratic`."""

    kappa: float
    theta_deg: float
    scale: float
    w_star: tuple[float, float]
    Q: np.ndarray = field(repr=False, compare=False)

    @property
    def mu(self) -> float:
        """Smallest eigenvalue of ``Q`` (strong convexity constant)."""
        return self.scale

    @property
    def L(self) -> float:
        """Largest eigenvalue of ``Q`` (gradient Lipschitz constant); GD is stable iff ``eta < 2/L``."""
        return self.scale * self.kappa

    @property
    def f_star(self) -> float:
        """The minimum value, 0."""
        return 0.0

    @property
    def minimiser(self) -> np.ndarray:
        """``w*`` as a float64 array."""
        return np.asarray(self.w_star, dtype=np.float64)

    def _offset(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        if w.shape[-1:] != (2,):
            raise ValueError(f"w must have a trailing dimension of size 2, got shape {w.shape}")
        return w - self.minimiser

    def value(self, w: np.ndarray | Sequence[float]) -> np.ndarray | float:
        """``f(w)`` for one point ``(2,)`` (a float) or a batch ``(..., 2)`` (an array)."""
        d = self._offset(w)
        out = 0.5 * np.einsum("...i,ij,...j->...", d, self.Q, d)
        return float(out) if out.ndim == 0 else out

    def grad(self, w: np.ndarray | Sequence[float]) -> np.ndarray:
        """``Q (w - w*)``, same leading shape as ``w``."""
        return self._offset(w) @ self.Q.T

    def hessian(self, w: np.ndarray | Sequence[float] | None = None) -> np.ndarray:
        """``Q`` (constant); ``w`` is accepted for a uniform interface."""
        return self.Q.copy()

    def torch_fun(self) -> Callable:
        """``f`` as a torch callable on a 1-D tensor of length 2 (device and dtype of the input)."""
        import torch

        Q = np.array(self.Q)
        w_star = self.minimiser
        constants: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

        def fun(w: torch.Tensor) -> torch.Tensor:
            key = (w.dtype, w.device)
            if key not in constants:
                constants[key] = (torch.as_tensor(Q, dtype=w.dtype, device=w.device),
                                  torch.as_tensor(w_star, dtype=w.dtype, device=w.device))
            q, c = constants[key]
            d = w.reshape(-1) - c
            return 0.5 * d @ (q @ d)

        return fun

    def describe(self) -> str:
        """A one-line description with the current numbers."""
        return (f"f(w) = ½ (w − w*)ᵀ Q (w − w*), κ = {self.kappa:g}, rotation {self.theta_deg:g}°, "
                f"μ = {self.mu:g}, L = {self.L:g}")


def make_quadratic(
    kappa: float = 10.0,
    theta_deg: float = 0.0,
    scale: float = 1.0,
    w_star: Sequence[float] = (0.0, 0.0),
) -> Quadratic2D:
    """The quadratic of Fig. 1 with condition number ``kappa`` in ``[1, 1e4]``, rotation ``theta_deg``
    (degrees; 0 = axis-aligned, the low-curvature direction horizontal), smallest eigenvalue
    ``scale > 0`` and minimiser ``w_star``.
    """
    kappa = check_closed_interval("kappa", kappa, *KAPPA_RANGE)
    theta_deg = check_real("theta_deg", theta_deg)
    scale = check_positive("scale", scale)
    try:
        ws = tuple(float(v) for v in w_star)
    except TypeError:
        raise TypeError(f"w_star must be a sequence of two numbers, got {w_star!r}") from None
    if len(ws) != 2 or not all(math.isfinite(v) for v in ws):
        raise ValueError(f"w_star must be two finite numbers, got {w_star!r}")
    R = _rotation(theta_deg)
    Q = R @ np.diag([scale, scale * kappa]) @ R.T
    Q = 0.5 * (Q + Q.T)
    Q.setflags(write=False)
    return Quadratic2D(kappa=kappa, theta_deg=theta_deg, scale=scale, w_star=(ws[0], ws[1]), Q=Q)
