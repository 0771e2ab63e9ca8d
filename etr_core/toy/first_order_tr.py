"""The first-order trust-region methods of appendix B (Fig. 5) on 2-D problems: Algorithm 1 with the
linear model, through ``etr_core.minimize``, recorded per iteration for the implicit-trust-region
pictures of :mod:`etr_core.toy.first_order` (which calls :func:`run_tr_single`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TR_DEFAULTS", "run_tr_single"]

_TR_ELLIPSOID = {"tr_sphere": "first_order_tr_uniform", "tr_adagrad": "first_order_tr_adagrad"}
# Below this gradient norm the scalar products of the Theorem 1 step underflow: the run stops there.
_STATIONARY_GRAD = 1e-140
# Paper Table 1 rules for the first-order TR methods.
TR_DEFAULTS = {"max_radius": 10.0, "eta1": 1e-4, "eta2": 0.95, "gamma1": 1.1, "gamma2": 1.5}


def run_tr_single(problem: Any, method: str, radius0: float, n_iter: int, w0: np.ndarray,
                  opts: dict) -> dict[str, np.ndarray]:
    """Algorithm 1 with the linear model ``m^1(s) = f + g^T s`` (appendix B, footnote 7) through
    ``etr_core.minimize`` (``first_order_tr_uniform`` / ``first_order_tr_adagrad``), whose history
    gives each iteration's centre, ellipsoid diagonal, radius, step and acceptance."""
    import torch

    from etr_core.minimize import minimize

    rules = {**TR_DEFAULTS, **{k: v for k, v in opts.items() if k in TR_DEFAULTS}}
    if radius0 > rules["max_radius"]:
        raise ValueError(f"lr (the initial radius) must be <= max_radius = {rules['max_radius']!r}, "
                         f"got {radius0!r}")
    extra = {"eps": opts["eps"]} if "eps" in opts else {}
    # "after_accept": a rejected step leaves w_t (and g_t) unchanged, so its gradient must not enter
    # the Adagrad sum a second time; the ellipse is then Adagrad's accumulator over the iterates.
    result = minimize(_torch_objective(problem), torch.as_tensor(np.asarray(w0, dtype=np.float64)),
                      method=_TR_ELLIPSOID[method], rule="paper", gtol=_STATIONARY_GRAD, max_iter=n_iter,
                      radius=radius0, ellipsoid_update="after_accept", **rules, **extra)
    W = np.full((n_iter + 1, 2), np.nan)
    F = np.full(n_iter + 1, np.nan)
    A = np.full((n_iter, 2, 2), np.nan)
    R = np.full(n_iter, np.nan)
    S = np.full((n_iter, 2), np.nan)
    accepted = np.zeros(n_iter, dtype=bool)
    k = len(result.history)
    for t, rec in enumerate(result.history):
        W[t] = rec["x"].numpy()
        F[t] = rec["f"]
        A[t] = np.diag(rec["m"].numpy().astype(np.float64))
        R[t] = rec["radius_before"]
        S[t] = rec["step"].numpy()
        accepted[t] = bool(rec["accepted"])
    W[k] = result.x.numpy()
    F[k] = result.fun
    if k < n_iter:
        # Stopped at a (numerically) stationary point: the iterate stays put, no step is taken.
        W[k + 1:], F[k + 1:] = W[k], F[k]
        A[k:] = A[k - 1] if k > 0 else np.eye(2)
        R[k:] = R[k - 1] if k > 0 else radius0
        S[k:] = 0.0
    G = np.asarray(problem.grad(W[:n_iter]), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dual = np.sqrt(np.einsum("ti,tii,ti->t", G, 1.0 / np.where(np.isfinite(A), A, 1.0), G))
        eta = np.where(dual > 0, R / dual, np.nan)
    return {"W": W, "F": F, "G": G, "Q": G.copy(), "A": A, "R": R, "S": S, "diverged_at": np.asarray(-1),
            "step_sizes": eta, "accepted": accepted}


def _torch_objective(problem: Any) -> Any:
    torch_fun = getattr(problem, "torch_fun", None)
    if torch_fun is None:
        raise TypeError(f"the first-order TR methods need a problem with a torch_fun(), got "
                        f"{type(problem).__name__}")
    return torch_fun()
