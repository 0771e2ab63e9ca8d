"""Log suboptimality over iterations from many random starts (paper Fig. 1 bottom, Fig. 5 right).

Starting points are drawn uniformly on the circle of radius ``start_radius`` around ``w*`` from a
seeded ``numpy.random.Generator`` (no global state). For each method the curve is the mean of
``log10(f(w_t) - f*)`` over the runs and the band is the 5 % to 95 % quantile range, i.e. 90 % of the
runs lie inside it. ``f - f*`` is floored at ``SUBOPTIMALITY_FLOOR`` so a run that lands exactly on
``w*`` stays plottable; a run that diverged contributes nothing after its divergence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from etr_core._validation import check_int, check_positive
from etr_core.toy.first_order import METHOD_LABELS, Problem2D, run_batch

__all__ = ["SUBOPTIMALITY_FLOOR", "SuboptimalityBand", "random_starts", "suboptimality_bands"]

SUBOPTIMALITY_FLOOR = 1e-30


@dataclass(frozen=True)
class SuboptimalityBand:
    """Mean and 5-95 % quantiles of ``log10(f - f*)`` per iteration for one method."""

    method: str
    label: str
    iterations: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_runs: int
    n_diverged: int


def random_starts(center: np.ndarray | tuple[float, float], start_radius: float, n_starts: int,
                  seed: int) -> np.ndarray:
    """``n_starts`` points uniformly on the circle of radius ``start_radius`` around ``center``."""
    start_radius = check_positive("start_radius", start_radius)
    n_starts = check_int("n_starts", n_starts, minimum=1, maximum=10_000)
    seed = check_int("seed", seed, minimum=0)
    angles = np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi, size=n_starts)
    c = np.asarray(center, dtype=np.float64).reshape(2)
    return c + start_radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def suboptimality_bands(
    problem: Problem2D,
    methods: Mapping[str, float],
    n_iter: int,
    *,
    n_starts: int = 30,
    start_radius: float = 2.5,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, SuboptimalityBand]:
    """Fig. 1 (bottom): for each ``method -> step size`` run ``n_starts`` seeded random starts for
    ``n_iter`` iterations and summarise ``log10(f - f*)``. ``options`` maps a method to its keyword
    options (as for ``run_method``)."""
    n_iter = check_int("n_iter", n_iter, minimum=0, maximum=100_000)
    w_star = np.asarray(getattr(problem, "minimiser", (0.0, 0.0)), dtype=np.float64)
    f_star = float(getattr(problem, "f_star", 0.0))
    starts = random_starts(w_star, start_radius, n_starts, seed)
    options = options or {}
    out: dict[str, SuboptimalityBand] = {}
    for method, lr in methods.items():
        result = run_batch(problem, method, lr, n_iter, starts, **dict(options.get(method, {})))
        with np.errstate(invalid="ignore", divide="ignore"):
            logs = np.log10(np.maximum(result.values - f_star, SUBOPTIMALITY_FLOOR))
        logs[~np.isfinite(result.values)] = np.nan
        alive = np.isfinite(logs)
        counts = alive.sum(axis=0)
        mean = np.full(n_iter + 1, np.nan)
        low = np.full(n_iter + 1, np.nan)
        high = np.full(n_iter + 1, np.nan)
        cols = counts > 0
        if cols.any():
            sub = logs[:, cols]
            mean[cols] = np.nanmean(sub, axis=0)
            low[cols] = np.nanquantile(sub, 0.05, axis=0)
            high[cols] = np.nanquantile(sub, 0.95, axis=0)
        out[method] = SuboptimalityBand(
            method=method,
            label=METHOD_LABELS.get(method, method),
            iterations=np.arange(n_iter + 1),
            mean=mean,
            low=low,
            high=high,
            n_runs=len(starts),
            n_diverged=int((result.diverged_at >= 0).sum()),
        )
    return out
