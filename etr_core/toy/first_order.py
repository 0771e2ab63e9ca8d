"""First-order methods on 2-D problems and their implicit trust regions (paper section 3.1).

Every preconditioned gradient step ``s_t = -eta_t A_t^{-1} q_t`` (Eq. 4) minimises the linear model
``q_t^T s`` over the ellipse ``||s||_{A_t} <= eta_t ||q_t||_{A_t^{-1}}`` (Theorem 1, Eq. 5). Each run
records, per step, the centre ``w_t``, the shape matrix ``A_t`` (2x2), the model gradient ``q_t`` and
the radius, so the app can draw the ellipse and check Theorem 1 at any iterate.

Methods (``A_t`` is the matrix of the *constraint*, so for Adagrad it is Corollary 1's square root):

=================  ===================================================  ===================
name               ``A_t``                                              ``q_t``
=================  ===================================================  ===================
``gd``             ``I``                                                ``g_t``
``adagrad``        ``diag(sqrt(sum_{i<=t} g_i^2 + eps))``  (Eq. 2)      ``g_t``
``adagrad_full``   ``(sum_{i<=t} g_i g_i^T + eps I)^{1/2}`` (Eq. 2)     ``g_t``
``rmsprop``        ``diag(sqrt(EMA_beta(g^2) + eps))``      (Eq. 3)     ``g_t``
``adam``           ``diag(sqrt(vhat_t + eps))``  (bias-corrected EMA)   ``mhat_t`` (momentum)
``tr_sphere``      ``I``, radius ``Delta_t`` from Algorithm 1 (Fig. 5)  ``g_t``
``tr_adagrad``     Adagrad diagonal, radius ``Delta_t``     (Fig. 5)    ``g_t``
=================  ===================================================  ===================

The ``tr_adagrad`` ellipse sums the squared gradients of the *iterates*: after a rejected step the
point and its gradient are unchanged and are not summed twice, so ``A_t`` is exactly Adagrad's
accumulator along the accepted path. Both methods then step along ``-A_t^{-1} g_t`` and differ only
in the step length: Adagrad's ``eta ||g_t||_{A_t^{-1}}`` shrinks with the gradient, the TR's radius
``Delta_t`` only through rejected steps (``/gamma2``), which is why, on Fig. 5's quadratic, it
alternates accepted and rejected steps near the minimiser and converges more slowly than Adagrad.

The two ``tr_*`` methods are the first-order trust-region methods of appendix B (Fig. 5): Algorithm 1
with the linear model, driven by ``etr_core.minimize``. For Adam the implicit trust region is the one
of the linear model built with the momentum ``mhat_t`` (the remark after Corollary 1).

The first-order TR engine is in :mod:`etr_core.toy.first_order_tr`, the Theorem 1 check in
:mod:`etr_core.toy.theorem1` (``Theorem1Check`` and ``check_theorem1`` are still importable from here).

Divergence (an iterate overflowing, or ``f`` growing beyond ``DIVERGENCE_GROWTH * f(w_0)``) ends a run
early and is reported in ``Trajectory.message``; nothing is raised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from etr_core._validation import check_choice, check_int, check_open_interval, check_positive
from etr_core.toy.first_order_tr import TR_DEFAULTS, run_tr_single

__all__ = [
    "ADAPTIVE_METHODS",
    "DIVERGENCE_GROWTH",
    "METHOD_LABELS",
    "METHOD_NAMES",
    "TR_DEFAULTS",
    "TR_METHODS",
    "BatchResult",
    "Problem2D",
    "Trajectory",
    "run_batch",
    "run_method",
]

ADAPTIVE_METHODS = ("gd", "adagrad", "adagrad_full", "rmsprop", "adam")
TR_METHODS = ("tr_sphere", "tr_adagrad")
METHOD_NAMES = ADAPTIVE_METHODS + TR_METHODS
METHOD_LABELS = {
    "gd": "GD",
    "adagrad": "Adagrad (diagonal)",
    "adagrad_full": "Adagrad (full matrix)",
    "rmsprop": "RMSProp",
    "adam": "Adam",
    "tr_sphere": "1st-order TR (sphere)",
    "tr_adagrad": "1st-order TR (Adagrad ellipse)",
}
DIVERGENCE_GROWTH = 1.0e4


class Problem2D(Protocol):
    """What a method needs from a problem: batched ``value`` and ``grad`` (numpy float64)."""

    def value(self, w: np.ndarray) -> Any: ...

    def grad(self, w: np.ndarray) -> np.ndarray: ...


@dataclass
class Trajectory:
    """One run: ``k + 1`` iterates and, for each of the ``k`` steps, its implicit trust region.

    ``k`` equals ``n_iter`` unless the run diverged (then ``diverged_at`` is the iteration at which it
    was detected and ``message`` says why). For step ``t`` the trust region is
    ``{w_t + s : s^T A_t s <= radii[t]^2}`` with ``A_t = shapes[t]`` and the linear model
    ``q_t^T s`` with ``q_t = model_gradients[t]``; ``steps[t]`` is the proposed step (for TR methods a
    rejected one leaves ``w_{t+1} = w_t``).
    """

    method: str
    label: str
    lr: float
    n_iter: int
    iterates: np.ndarray
    values: np.ndarray
    gradients: np.ndarray
    model_gradients: np.ndarray
    shapes: np.ndarray
    radii: np.ndarray
    step_sizes: np.ndarray
    steps: np.ndarray
    accepted: np.ndarray
    diverged_at: int | None = None
    message: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def centres(self) -> np.ndarray:
        """``w_t`` of every step (the trust-region centres)."""
        return self.iterates[:-1]

    @property
    def n_steps(self) -> int:
        return len(self.steps)


# --------------------------------------------------------------------------------------------------
# validation


def _check_method(method: str) -> str:
    return check_choice("method", method, METHOD_NAMES)


def _check_starts(starts: Any) -> np.ndarray:
    W0 = np.asarray(starts, dtype=np.float64)
    if W0.ndim == 1:
        W0 = W0[None, :]
    if W0.ndim != 2 or W0.shape[1] != 2:
        raise ValueError(f"starting points must have shape (2,) or (B, 2), got {W0.shape}")
    if not np.all(np.isfinite(W0)):
        raise ValueError("starting points must be finite")
    return W0


def _check_options(method: str, options: dict) -> dict:
    allowed = {
        "gd": set(),
        "adagrad": {"eps"},
        "adagrad_full": {"eps"},
        "rmsprop": {"eps", "beta"},
        "adam": {"eps", "beta1", "beta2"},
        "tr_sphere": set(TR_DEFAULTS),
        "tr_adagrad": set(TR_DEFAULTS) | {"eps"},
    }[method]
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unexpected option(s) for method {method!r}: {sorted(unknown)}; "
                        f"allowed: {sorted(allowed)}")
    out = dict(options)
    if "eps" in out:
        out["eps"] = check_positive("eps", out["eps"])
    for name in ("beta", "beta1", "beta2"):
        if name in out:
            out[name] = check_open_interval(name, out[name], 0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------------
# the preconditioned methods, vectorised over a batch of starting points


def _sqrt_psd_plus_eps(G: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(G + eps I)^{1/2}`` for stacked PSD ``G``: returns the root, its eigenvalues and vectors.

    Eigenvalues of ``G`` are clamped at 0 first: rounding can make the null direction of a rank-one
    ``G`` slightly negative, larger in magnitude than ``eps``.
    """
    lam, V = np.linalg.eigh(G)
    root_lam = np.sqrt(np.maximum(lam, 0.0) + eps)
    return np.einsum("bij,bj,bkj->bik", V, root_lam, V), root_lam, V


def _run_adaptive(problem: Problem2D, method: str, lr: float, n_iter: int, W0: np.ndarray,
                  opts: dict) -> dict[str, np.ndarray]:
    B = len(W0)
    eps = opts.get("eps", 1e-10)
    beta = opts.get("beta", 0.9)
    beta1, beta2 = opts.get("beta1", 0.9), opts.get("beta2", 0.999)
    W = np.full((B, n_iter + 1, 2), np.nan)
    F = np.full((B, n_iter + 1), np.nan)
    Gs = np.full((B, n_iter, 2), np.nan)
    Qs = np.full((B, n_iter, 2), np.nan)
    As = np.full((B, n_iter, 2, 2), np.nan)
    R = np.full((B, n_iter), np.nan)
    S = np.full((B, n_iter, 2), np.nan)
    W[:, 0] = W0
    F[:, 0] = problem.value(W0)
    threshold = DIVERGENCE_GROWTH * np.maximum(F[:, 0], np.finfo(np.float64).tiny)
    alive = np.ones(B, dtype=bool)
    diverged_at = np.full(B, -1)
    acc = np.zeros((B, 2, 2)) if method == "adagrad_full" else np.zeros((B, 2))
    mom = np.zeros((B, 2))
    eye = np.eye(2)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t in range(n_iter):
            w = W[:, t]
            g = problem.grad(w)
            q = g
            if method == "gd":
                A = np.broadcast_to(eye, (B, 2, 2)).copy()
                A_inv_q = q.copy()
            elif method == "adagrad":
                acc = acc + g * g
                d = np.sqrt(acc + eps)
                A, A_inv_q = d[:, :, None] * eye, q / d
            elif method == "rmsprop":
                acc = beta * acc + (1.0 - beta) * g * g
                d = np.sqrt(acc + eps)
                A, A_inv_q = d[:, :, None] * eye, q / d
            elif method == "adam":
                mom = beta1 * mom + (1.0 - beta1) * g
                acc = beta2 * acc + (1.0 - beta2) * g * g
                q = mom / (1.0 - beta1 ** (t + 1))
                d = np.sqrt(acc / (1.0 - beta2 ** (t + 1)) + eps)
                A, A_inv_q = d[:, :, None] * eye, q / d
            else:  # adagrad_full
                acc = acc + g[:, :, None] * g[:, None, :]
                safe = np.where(np.isfinite(acc), acc, 0.0)
                A, root_lam, V = _sqrt_psd_plus_eps(safe, eps)
                A_inv_q = np.einsum("bij,bj,bkj,bk->bi", V, 1.0 / root_lam, V, q)
            s = -lr * A_inv_q
            radius = lr * np.sqrt(np.maximum(np.einsum("bi,bi->b", q, A_inv_q), 0.0))
            w_new = w + s
            f_new = problem.value(w_new)
            finite = np.all(np.isfinite(w_new), axis=1) & np.isfinite(f_new)
            bad = alive & (~finite | (f_new > threshold))
            rec = alive.copy()
            Gs[rec, t], Qs[rec, t], As[rec, t] = g[rec], q[rec], A[rec]
            R[rec, t], S[rec, t] = radius[rec], s[rec]
            keep = alive & finite
            W[keep, t + 1], F[keep, t + 1] = w_new[keep], f_new[keep]
            diverged_at[bad] = t + 1
            alive &= ~bad
            if not alive.any():
                break
    return {"W": W, "F": F, "G": Gs, "Q": Qs, "A": As, "R": R, "S": S, "diverged_at": diverged_at}


# --------------------------------------------------------------------------------------------------
# public entry points


def _divergence_message(problem: Problem2D, method: str, lr: float, t: int, f0: float, f_t: float) -> str:
    label = METHOD_LABELS[method]
    L = getattr(problem, "L", None)
    if method == "gd" and L is not None and lr * L > 2.0:
        return f"{label} diverged at iteration {t}: step size above 2/L = {2.0 / L:.4g} (η = {lr:.4g})"
    if not math.isfinite(f_t):
        return f"{label} diverged at iteration {t}: the iterate overflowed (f is not finite)"
    return (f"{label} diverged at iteration {t}: f grew from {f0:.3g} to {f_t:.3g} "
            f"(more than {DIVERGENCE_GROWTH:g} × f(w₀)); step size η = {lr:.4g} is too large")


def run_method(problem: Problem2D, method: str, lr: float, n_iter: int, w0: Sequence[float],
               **options: Any) -> Trajectory:
    """Run ``method`` for ``n_iter`` steps from ``w0`` and return its trajectory with implicit trust regions.

    ``lr`` is the step size ``eta`` (Eq. 4) for ``gd``, ``adagrad``, ``adagrad_full``, ``rmsprop`` and
    ``adam``, and the initial radius ``Delta_0`` for ``tr_sphere`` and ``tr_adagrad`` (Algorithm 1 with
    the linear model, appendix B). Options: ``eps`` (all adaptive methods, default 1e-10), ``beta``
    (RMSProp, 0.9), ``beta1``/``beta2`` (Adam, 0.9/0.999); TR rules ``max_radius``, ``eta1``, ``eta2``,
    ``gamma1``, ``gamma2`` (paper Table 1 defaults).
    """
    method = _check_method(method)
    lr = check_positive("lr", lr)
    n_iter = check_int("n_iter", n_iter, minimum=0, maximum=100_000)
    opts = _check_options(method, options)
    W0 = _check_starts(w0)
    if len(W0) != 1:
        raise ValueError(f"w0 must be one point of shape (2,), got shape {np.asarray(w0).shape}")
    if method in TR_METHODS:
        out = run_tr_single(problem, method, lr, n_iter, W0[0], opts)
        step_sizes = out["step_sizes"]
        accepted = out["accepted"]
    else:
        out = {k: v[0] for k, v in _run_adaptive(problem, method, lr, n_iter, W0, opts).items()}
        step_sizes = np.full(n_iter, lr)
        accepted = np.ones(n_iter, dtype=bool)
    diverged_at = int(out["diverged_at"])
    k = n_iter if diverged_at < 0 else diverged_at
    finite_iterates = int(np.all(np.isfinite(out["W"][: k + 1]), axis=1).sum())
    n_pts = min(k + 1, finite_iterates)
    n_steps = n_pts - 1
    message = None
    notes: list[str] = []
    if diverged_at >= 0:
        f_t = float(out["F"][diverged_at]) if diverged_at < len(out["F"]) else math.inf
        message = _divergence_message(problem, method, lr, diverged_at, float(out["F"][0]), f_t)
    L = getattr(problem, "L", None)
    if method == "gd" and L is not None and lr * L > 2.0 and diverged_at < 0:
        notes.append(f"step size η = {lr:.4g} is above 2/L = {2.0 / L:.4g}: GD is unstable on this "
                     f"quadratic and diverges given enough iterations")
    return Trajectory(
        method=method,
        label=METHOD_LABELS[method],
        lr=lr,
        n_iter=n_iter,
        iterates=out["W"][:n_pts].copy(),
        values=out["F"][:n_pts].copy(),
        gradients=out["G"][:n_steps].copy(),
        model_gradients=out["Q"][:n_steps].copy(),
        shapes=out["A"][:n_steps].copy(),
        radii=out["R"][:n_steps].copy(),
        step_sizes=np.asarray(step_sizes[:n_steps], dtype=np.float64).copy(),
        steps=out["S"][:n_steps].copy(),
        accepted=np.asarray(accepted[:n_steps], dtype=bool).copy(),
        diverged_at=None if diverged_at < 0 else diverged_at,
        message=message,
        notes=tuple(notes),
    )


@dataclass
class BatchResult:
    """Values ``f(w_t)`` of many runs, ``(B, n_iter + 1)``; NaN after a run diverged."""

    method: str
    values: np.ndarray
    diverged_at: np.ndarray


def run_batch(problem: Problem2D, method: str, lr: float, n_iter: int, starts: np.ndarray,
              **options: Any) -> BatchResult:
    """``f(w_t)`` of ``method`` from each of ``starts`` ``(B, 2)``: vectorised for the preconditioned
    methods, one ``etr_core.minimize``-style run per start for the TR methods. Used for Fig. 1 bottom."""
    method = _check_method(method)
    lr = check_positive("lr", lr)
    n_iter = check_int("n_iter", n_iter, minimum=0, maximum=100_000)
    opts = _check_options(method, options)
    W0 = _check_starts(starts)
    if method in TR_METHODS:
        rows, div = [], []
        for w0 in W0:
            out = run_tr_single(problem, method, lr, n_iter, w0, opts)
            rows.append(out["F"])
            div.append(int(out["diverged_at"]))
        F, diverged_at = np.stack(rows), np.asarray(div)
    else:
        out = _run_adaptive(problem, method, lr, n_iter, W0, opts)
        F, diverged_at = out["F"], out["diverged_at"]
    F = F.copy()
    for b, t in enumerate(diverged_at):
        if t >= 0:
            F[b, t:] = np.nan
    return BatchResult(method=method, values=F, diverged_at=diverged_at)


def __getattr__(name: str) -> Any:
    """``Theorem1Check`` and ``check_theorem1`` live in :mod:`etr_core.toy.theorem1` (imported lazily,
    as that module needs :class:`Trajectory` from here)."""
    if name in ("Theorem1Check", "check_theorem1"):
        from etr_core.toy import theorem1

        return getattr(theorem1, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
