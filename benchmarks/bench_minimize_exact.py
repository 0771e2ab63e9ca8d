"""Wall time of ``minimize(subproblem="exact", rule="scipy")`` against SciPy's ``trust-exact``.

Extended Rosenbrock from x0 = (-1.2, 1, ..., -1.2, 1), gtol 1e-8, both with the uniform (spherical)
trust region. SciPy gets its own closed-form ``rosen``, ``rosen_der`` and ``rosen_hess`` (its best
case); ``minimize`` gets the torch expression and forms gradient and dense Hessian by autograd
(one batched double backward per point). Runs are paired and interleaved (ours, SciPy, ours, ...);
the script prints medians, the spread of the per-pair ratio, iterations and counters. The first
``minimize`` call of a process also pays torch's one-off import of its batching machinery, reported
separately and excluded from the repetitions.

    python3 benchmarks/bench_minimize_exact.py --dims 10 100 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize as so
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_core.minimize import minimize


def rosen(x: torch.Tensor) -> torch.Tensor:
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def ours(x0: list[float]):
    t0 = time.perf_counter()
    res = minimize(rosen, x0, "tr_uniform", rule="scipy", subproblem="exact", gtol=1e-8)
    return time.perf_counter() - t0, res


def scipy_run(x0: list[float]):
    t0 = time.perf_counter()
    res = so.minimize(
        so.rosen, np.array(x0), method="trust-exact", jac=so.rosen_der, hess=so.rosen_hess,
        options={"gtol": 1e-8},
    )
    return time.perf_counter() - t0, res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    first, _ = ours([-1.2, 1.0])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; first call of the process "
          f"(includes torch's one-off batching import): {first:.2f} s")
    print("| d | ours s (median) | SciPy s (median) | ours / SciPy (median, min-max) | nit ours / SciPy | "
          "nfev | njev | nhev ours / SciPy |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.dims:
        x0 = [-1.2, 1.0] * (d // 2)
        t_ours, t_scipy, ratios = [], [], []
        for _ in range(args.repeats):
            a, r_ours = ours(x0)
            b, r_scipy = scipy_run(x0)
            t_ours.append(a)
            t_scipy.append(b)
            ratios.append(a / b)
        print(
            f"| {d} | {statistics.median(t_ours):.3f} | {statistics.median(t_scipy):.3f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{r_ours.nit} / {r_scipy.nit} | {r_ours.nfev} / {r_scipy.nfev} | "
            f"{r_ours.njev} / {r_scipy.njev} | "
            f"{r_ours.nhev} / {r_scipy.nhev} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
