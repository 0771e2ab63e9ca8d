"""Exact geometry of 2-D ellipses ``{s : s^T A s <= r^2}`` for symmetric positive definite ``A``.

These are the implicit trust regions of Theorem 1 / Corollary 1 (``A`` = the method's preconditioner
``A_t``, ``r = eta_t ||g_t||_{A_t^{-1}}``) and the level sets of a quadratic. With
``A = V diag(lambda) V^T`` the boundary is ``s(phi) = r V diag(lambda^{-1/2}) (cos phi, sin phi)``;
the semi-axes are ``r / sqrt(lambda_i)`` along the eigenvectors ``v_i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etr_core._validation import check_int

__all__ = ["EllipseGeometry", "ellipse_boundary", "ellipse_geometry", "stacked_ellipse_polylines"]


def _as_spd_2x2(A: np.ndarray | list, name: str = "A") -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if A.shape[-2:] != (2, 2):
        raise ValueError(f"{name} must have shape (..., 2, 2), got {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} must be finite")
    if not np.allclose(A, np.swapaxes(A, -1, -2), rtol=1e-10, atol=1e-12 * (np.abs(A).max() + 1e-300)):
        raise ValueError(f"{name} must be symmetric")
    return 0.5 * (A + np.swapaxes(A, -1, -2))


def _eig(A: np.ndarray, name: str = "A") -> tuple[np.ndarray, np.ndarray]:
    lam, V = np.linalg.eigh(A)
    if not np.all(lam > 0):
        raise ValueError(f"{name} must be positive definite, got eigenvalues {lam.tolist()}")
    return lam, V


@dataclass(frozen=True)
class EllipseGeometry:
    """Semi-axes (major first), their unit directions (columns) and the major axis angle in degrees
    in ``(-90, 90]`` from the horizontal axis."""

    semi_axes: tuple[float, float]
    directions: np.ndarray
    angle_deg: float


def ellipse_geometry(A: np.ndarray | list, radius: float) -> EllipseGeometry:
    """Semi-axes ``r / sqrt(lambda_i)`` and orientation of ``{s : s^T A s <= r^2}``."""
    A = _as_spd_2x2(A)
    if A.ndim != 2:
        raise ValueError(f"A must be a single 2x2 matrix, got shape {A.shape}")
    radius = float(radius)
    if not (radius >= 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be finite and >= 0, got {radius!r}")
    lam, V = _eig(A)
    # eigh sorts ascending: the smallest eigenvalue gives the major (longest) axis.
    axes = radius / np.sqrt(lam)
    major = V[:, 0]
    angle = math.degrees(math.atan2(major[1], major[0]))
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    return EllipseGeometry(semi_axes=(float(axes[0]), float(axes[1])), directions=V.copy(), angle_deg=angle)


def ellipse_boundary(
    A: np.ndarray | list,
    radius: float,
    center: np.ndarray | list | tuple = (0.0, 0.0),
    n_points: int = 64,
    closed: bool = True,
) -> np.ndarray:
    """Boundary points ``center + s`` with ``s^T A s = radius^2``, shape ``(n_points (+1 if closed), 2)``.

    The parametrisation is uniform in the angle of the unit circle mapped by ``V diag(lambda^{-1/2})``.
    """
    n_points = check_int("n_points", n_points, minimum=3)
    A = _as_spd_2x2(A)
    if A.ndim != 2:
        raise ValueError(f"A must be a single 2x2 matrix, got shape {A.shape}")
    lam, V = _eig(A)
    center = np.asarray(center, dtype=np.float64).reshape(2)
    phi = np.linspace(0.0, 2.0 * math.pi, n_points, endpoint=False)
    if closed:
        phi = np.append(phi, 0.0)
    circle = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    return center + float(radius) * (circle / np.sqrt(lam)) @ V.T


def stacked_ellipse_polylines(
    centers: np.ndarray, shapes: np.ndarray, radii: np.ndarray, n_points: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Many closed ellipse boundaries as one polyline ``(x, y)`` with NaN separators (one Plotly trace).

    ``centers`` ``(k, 2)``, ``shapes`` ``(k, 2, 2)`` SPD, ``radii`` ``(k,)``; each ellipse contributes
    ``n_points + 1`` points and one NaN. Ellipses with a non-finite or non-positive radius are skipped.
    """
    n_points = check_int("n_points", n_points, minimum=3)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    shapes = _as_spd_2x2(np.asarray(shapes, dtype=np.float64).reshape(-1, 2, 2), "shapes")
    if not (len(centers) == len(radii) == len(shapes)):
        raise ValueError(f"centers, shapes and radii must have the same length, got "
                         f"{len(centers)}, {len(shapes)}, {len(radii)}")
    keep = np.isfinite(radii) & (radii > 0) & np.all(np.isfinite(centers), axis=1)
    centers, shapes, radii = centers[keep], shapes[keep], radii[keep]
    if len(radii) == 0:
        return np.empty(0), np.empty(0)
    lam, V = _eig(shapes, "shapes")
    phi = np.append(np.linspace(0.0, 2.0 * math.pi, n_points, endpoint=False), 0.0)
    circle = np.stack([np.cos(phi), np.sin(phi)], axis=1)                 # (p, 2)
    scaled = circle[None, :, :] / np.sqrt(lam)[:, None, :]                # (k, p, 2)
    pts = centers[:, None, :] + radii[:, None, None] * np.einsum("kpj,kij->kpi", scaled, V)
    pts = np.concatenate([pts, np.full((len(radii), 1, 2), np.nan)], axis=1).reshape(-1, 2)
    return pts[:, 0], pts[:, 1]
