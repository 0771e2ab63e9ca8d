"""The device-side Steihaug-Toint loop (host_sync=False) gives the host path's step to rounding.

Oracle: the host-synchronising path (itself tested against SciPy and closed forms in
test_steihaug.py) on convex, indefinite and boundary problems, in float64 and float32, both
residual norms; and the interior Newton step -B^-1 g where the region does not bind.
"""

from __future__ import annotations

import pytest
import torch

from etr_core.subproblem import steihaug_toint_pcg


def _problem(seed: int, d: int = 30, lo: float = 0.5, hi: float = 5.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    B = (Q @ torch.diag(torch.linspace(lo, hi, d, dtype=torch.float64)) @ Q.T).to(dtype)
    g = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype)
    m = (torch.rand(d, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    return B, g, m


CASES = [
    ("interior", 0.5, 5.0, 1e3),
    ("boundary", 0.5, 5.0, 0.05),
    ("negative_curvature", -3.0, 5.0, 10.0),
    ("mid", 0.01, 5.0, 1.0),
]


@pytest.mark.parametrize("residual_norm", ["l2", "m_inv"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("name", "lo", "hi", "radius"), CASES, ids=[c[0] for c in CASES])
def test_device_loop_equals_the_host_path(name, lo, hi, radius, dtype, residual_norm):
    for seed in range(3):
        B, g, m = _problem(seed, lo=lo, hi=hi, dtype=dtype)
        kwargs = dict(kappa=1e-3, theta=0.5, max_iter=40, residual_norm=residual_norm)
        host = steihaug_toint_pcg(g, B.__matmul__, radius, m, host_sync=True, **kwargs)
        dev = steihaug_toint_pcg(g, B.__matmul__, radius, m, host_sync=False, **kwargs)
        assert dev.exit == host.exit and dev.iterations == host.iterations
        assert host.hvp_calls <= dev.hvp_calls < host.hvp_calls + 4  # at most 3 products past the exit
        tol = 1e-10 if dtype == torch.float64 else 2e-4
        torch.testing.assert_close(dev.step, host.step, rtol=tol, atol=tol * float(host.step.abs().max()))
        assert dev.pred_reduction == pytest.approx(host.pred_reduction, rel=tol)
        assert dev.step_m_norm == pytest.approx(host.step_m_norm, rel=tol)


def test_interior_step_is_the_newton_step():
    B, g, m = _problem(7)
    dev = steihaug_toint_pcg(g, B.__matmul__, 1e6, m, kappa=1e-12, theta=0.0, max_iter=100, host_sync=False)
    assert dev.exit == "converged"
    torch.testing.assert_close(dev.step, -torch.linalg.solve(B, g), rtol=1e-9, atol=1e-10)


def test_max_iter_and_nonfinite_products():
    B, g, m = _problem(1)
    host = steihaug_toint_pcg(g, lambda v: B @ v, 1e3, m, kappa=1e-12, max_iter=3, host_sync=True)
    dev = steihaug_toint_pcg(g, lambda v: B @ v, 1e3, m, kappa=1e-12, max_iter=3, host_sync=False)
    assert dev.exit == host.exit == "max_iter" and dev.iterations == 3
    torch.testing.assert_close(dev.step, host.step)
    calls = []

    def nan_after_two(v):
        calls.append(1)
        return B @ v if len(calls) < 3 else torch.full_like(v, float("nan"))

    dev = steihaug_toint_pcg(g, nan_after_two, 1e3, m, kappa=1e-12, max_iter=20, host_sync=False)
    assert dev.exit == "nonfinite" and torch.equal(dev.step, torch.zeros_like(g))


def test_the_update_traces_whole_and_the_compiled_loop_equals_the_eager_one():
    """fullgraph=True fails on any graph break: the update is one graph, so CUDA compiles it whole."""
    import torch._dynamo

    from etr_core.subproblem.steihaug_device import cg_update, iterate_without_sync

    torch._dynamo.reset()
    traced = torch.compile(cg_update, backend="aot_eager", dynamic=False, fullgraph=True)
    for name, lo, hi, radius in CASES:
        B, g, m = _problem(3, lo=lo, hi=hi)
        neg_inv_m = -1.0 / m
        p0 = g * neg_inv_m
        gamma0 = float(torch.dot(g, -p0))
        args = dict(max_iter=40, residual_norm="l2", tol=1e-3 * float(g.norm()))
        start = (g, B.__matmul__, radius, m, neg_inv_m, gamma0, p0)
        eager = iterate_without_sync(*start, **args, update=cg_update)
        compiled = iterate_without_sync(*start, **args, update=traced)
        assert compiled[2:] == eager[2:], name  # exit, iterations, products
        torch.testing.assert_close(compiled[0], eager[0], rtol=1e-12, atol=1e-14)
        assert compiled[1] == pytest.approx(eager[1], rel=1e-12)


def test_update_choice_per_device_and_the_eager_fallback(monkeypatch):
    from etr_core.subproblem import steihaug_device as sd

    monkeypatch.delenv("ETR_CG_LOOP", raising=False)
    assert sd.update_for(torch.device("cpu")) is sd.cg_update
    assert sd.update_for(torch.device("cuda")) is sd.cg_update  # eager unless asked for
    monkeypatch.setenv("ETR_CG_LOOP", "compiled")
    assert sd.update_for(torch.device("cpu")) is sd.cg_update  # compiled on CUDA only
    monkeypatch.setattr(sd, "_COMPILED", {})
    assert sd.update_for(torch.device("cuda")) is not sd.cg_update

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(sd, "_COMPILED", {})
    run = sd._compiled_or_eager(broken)
    B, g, m = _problem(2)
    neg_inv_m = -1.0 / m
    p0 = g * neg_inv_m
    gamma0 = float(torch.dot(g, -p0))
    kwargs = dict(max_iter=40, residual_norm="l2", tol=1e-6)
    with pytest.warns(RuntimeWarning, match="compiled CG update unavailable"):
        got = sd.iterate_without_sync(g, B.__matmul__, 1.0, m, neg_inv_m, gamma0, p0, **kwargs, update=run)
    want = sd.iterate_without_sync(g, B.__matmul__, 1.0, m, neg_inv_m, gamma0, p0, **kwargs,
                                   update=sd.cg_update)
    assert got[2:] == want[2:]
    torch.testing.assert_close(got[0], want[0])
    assert sd._COMPILED["cuda_ok"] is sd.cg_update  # later calls go straight to the eager update


@pytest.mark.parametrize(
    ("loop", "device_loop"), [(None, False), ("host", False), ("device", True), ("compiled", True)]
)
def test_environment_chooses_the_loop_for_host_sync_none(monkeypatch, loop, device_loop):
    """Default: the host path on every device; ETR_CG_LOOP=device / compiled: the device-side loop."""
    from etr_core.subproblem import steihaug as st

    B, g, m = _problem(5)
    used = []
    real = st.iterate_without_sync
    monkeypatch.setattr(st, "iterate_without_sync", lambda *a, **k: used.append(1) or real(*a, **k))
    if loop is None:
        monkeypatch.delenv("ETR_CG_LOOP", raising=False)
    else:
        monkeypatch.setenv("ETR_CG_LOOP", loop)
    out = st.steihaug_toint_pcg(g, B.__matmul__, 0.05, m, kappa=1e-3)
    host = st.steihaug_toint_pcg(g, B.__matmul__, 0.05, m, kappa=1e-3, host_sync=True)
    assert bool(used) == device_loop
    assert out.exit == host.exit == "boundary" and out.iterations == host.iterations
    torch.testing.assert_close(out.step, host.step)


@pytest.mark.parametrize("value", ["gpu", "1", "Host ", "compiled!"])
def test_a_bad_cg_loop_setting_is_one_clear_error(monkeypatch, value):
    from etr_core.subproblem import steihaug_toint_pcg
    from etr_core.subproblem.steihaug_device import cg_loop

    monkeypatch.setenv("ETR_CG_LOOP", value)
    if value.strip().lower() == "host":
        assert cg_loop() == "host"  # case and spaces are forgiven
        return
    B, g, m = _problem(1)
    with pytest.raises(ValueError, match=r"ETR_CG_LOOP must be one of host, device, compiled; got"):
        steihaug_toint_pcg(g, B.__matmul__, 1.0, m)
