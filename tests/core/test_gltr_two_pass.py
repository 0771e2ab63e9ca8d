"""GLTR's two-pass variant (no stored Lanczos vectors) gives the one-pass step to rounding.

Oracle: the one-pass GLTR (tested against the exact subproblem solution in test_gltr.py) on convex
boundary, indefinite and interior problems; the extra Hessian products are exactly len(h) - 1.
"""

from __future__ import annotations

import pytest
import torch

from etr_core.subproblem import gltr


def _problem(seed: int, lo: float, d: int = 40, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    B = (Q @ torch.diag(torch.linspace(lo, 6.0, d, dtype=torch.float64)) @ Q.T).to(dtype)
    g = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype)
    m = (torch.rand(d, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    return B, g, m


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("lo", "radius"), [(0.5, 0.05), (-2.0, 1.0), (-0.5, 50.0), (0.5, 1e3)])
def test_two_pass_equals_one_pass(lo, radius, dtype):
    for seed in range(3):
        B, g, m = _problem(seed, lo, dtype=dtype)
        one = gltr(g, B.__matmul__, radius, m, kappa=1e-4, max_iter=30)
        two = gltr(g, B.__matmul__, radius, m, kappa=1e-4, max_iter=30, two_pass=True)
        assert two.exit == one.exit and two.iterations == one.iterations
        interior = lo > 0 and radius > 100  # plain CG: no Lanczos phase, nothing to regenerate
        assert two.hvp_calls - one.hvp_calls == (0 if interior else one.iterations - 1)
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(two.step, one.step, rtol=tol, atol=tol * float(one.step.abs().max()))
        assert two.pred_reduction == one.pred_reduction  # from the tridiagonal: the same numbers
