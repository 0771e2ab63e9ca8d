"""A step is a transaction: an exception at any call inside ``step`` leaves the optimiser as if the step
never ran, and retrying the step equals a run where it never failed.

Every closure call (the gradient at ``w``, the Hessian batch, the trial point) and every Hessian-vector
product (Hutchinson probes, the automatic radius / sigma, the Krylov solver) is an event; the closure or
the product raises at one chosen event. The oracle is a deep copy of the optimiser and model taken
before the step: parameters, ``state_dict``, ``p.grad``, ``last_step`` and torch's random state must be
bitwise those of the copy, the exception the very object raised, and the retried run bitwise the
copy's run.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from etr_core import EllipsoidalTR, FirstOrderTR
from etr_core.arc import EllipsoidalARC

F64 = torch.float64
CASES = [
    pytest.param(EllipsoidalTR, {"ellipsoid": "rms", "radius": 0.05}, False, id="TR_rms"),
    pytest.param(EllipsoidalTR, {"ellipsoid": "adagrad", "radius": 0.05}, False, id="TR_ada"),
    pytest.param(EllipsoidalTR, {"ellipsoid": "uniform", "radius": "auto"}, False, id="TR_uni_auto"),
    pytest.param(EllipsoidalTR, {"ellipsoid": "rms", "ellipsoid_update": "after_accept"}, False,
                 id="TR_rms_after_accept"),
    pytest.param(EllipsoidalTR, {"ellipsoid": "hessian", "hessian_probes": 3, "radius": 0.05}, False,
                 id="TR_hess3"),
    pytest.param(EllipsoidalTR, {"ellipsoid": "hessian", "hessian_block": "layer", "radius": "auto"}, True,
                 id="TR_hess_batch"),
    pytest.param(EllipsoidalTR, {"hessian_fraction": 0.5, "radius": 0.05}, False, id="TR_fraction"),
    pytest.param(EllipsoidalTR, {"ellipsoid": "rms", "radius": 0.05}, True, id="TR_rms_batch"),
    pytest.param(FirstOrderTR, {"ellipsoid": "rms", "radius": 0.05}, False, id="FO_rms"),
    pytest.param(FirstOrderTR, {"ellipsoid": "adagrad", "radius_rule": "eta", "lr": 0.1}, False, id="FO_eta"),
    pytest.param(EllipsoidalARC, {"sigma": 1.0}, False, id="ARC_rms"),
    pytest.param(EllipsoidalARC, {}, True, id="ARC_auto_batch"),
    pytest.param(EllipsoidalARC, {"ellipsoid": "hessian", "hessian_probes": 2, "sigma": 2.0}, False,
                 id="ARC_hess"),
]


class Interrupt:
    """Counts events (closure calls, Hessian-vector products) and raises ``error`` at event ``at``."""

    def __init__(self, at: int | None, error: BaseException | None = None) -> None:
        self.at, self.error, self.count = at, error, 0

    def event(self) -> None:
        self.count += 1
        if self.count - 1 == self.at:
            raise self.error


def _task():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (64,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Dropout(0.2), nn.Linear(5, 3)).to(F64)
    batches = [torch.randperm(64, generator=gen)[:32] for _ in range(6)]
    return model, X, y, batches


def _step(model, opt, X, y, idx, separate_batch: bool, interrupt: Interrupt | None = None):
    def closure(batch_fraction: float = 1.0):
        if interrupt is not None:
            interrupt.event()
        sub = idx[: math.ceil(batch_fraction * len(idx))]
        return F.cross_entropy(model(X[sub]), y[sub])

    def hessian_closure():
        if interrupt is not None:
            interrupt.event()
        return F.cross_entropy(model(X[idx[:16]]), y[idx[:16]])

    if interrupt is not None:  # every Hessian-vector product of the step goes through _reduced
        reduced = type(opt)._reduced.__get__(opt)

        def counted(base):
            inner = reduced(base)

            def product(v):
                interrupt.event()
                return inner(v)

            return product

        opt._reduced = counted
    try:
        if separate_batch:
            return opt.step(closure, hessian_closure)
        return opt.step(closure)
    finally:
        opt.__dict__.pop("_reduced", None)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _equal(a, b) -> bool:
    """Bitwise equality of nested state (tensors by torch.equal, NaN equal to NaN, the rest by ==)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _events_of_one_step(model, opt, X, y, idx, separate_batch) -> int:
    model, opt = copy.deepcopy((model, opt))
    counter = Interrupt(None)
    torch.manual_seed(11)
    _step(model, opt, X, y, idx, separate_batch, counter)
    return counter.count


@pytest.mark.slow
@pytest.mark.parametrize("warm_steps", [0, 2])
@pytest.mark.parametrize(("cls", "options", "separate_batch"), CASES)
def test_an_exception_at_any_call_of_a_step_leaves_the_optimiser_as_if_the_step_never_ran(
    cls, options, separate_batch, warm_steps
):
    def fresh():  # built and stepped, not deep-copied: the accumulator's flat buffer is the live one
        model, X, y, batches = _task()
        opt = cls(model.parameters(), **options)
        for idx in batches[:warm_steps]:
            _step(model, opt, X, y, idx, separate_batch)
        return model, opt

    X, y, batches = _task()[1:]
    later = batches[warm_steps: warm_steps + 2]
    n = _events_of_one_step(*fresh(), X, y, later[0], separate_batch)
    assert n >= (1 if cls is FirstOrderTR and "lr" in options else 2)
    # every closure call is among the first three or the last event; the products fill the middle
    events = sorted({*range(min(n, 6)), n // 2, n - 2, n - 1} - {-1})

    reference = fresh()
    torch.manual_seed(11)
    for idx in later:
        _step(*reference, X, y, idx, separate_batch)

    for k in events:
        model_k, opt_k = fresh()
        grads = [None if p.grad is None else p.grad.clone() for p in model_k.parameters()]
        before, state, last = _flat(model_k).clone(), copy.deepcopy(opt_k.state_dict()), opt_k.last_step
        error = KeyboardInterrupt(f"stop at event {k}") if k % 2 else RuntimeError(f"data loader died at {k}")
        torch.manual_seed(11)
        rng = torch.get_rng_state()
        with pytest.raises(type(error)) as info:
            _step(model_k, opt_k, X, y, later[0], separate_batch, Interrupt(k, error))
        assert info.value is error, k  # re-raised unchanged
        assert torch.equal(_flat(model_k), before), k
        assert _equal(opt_k.state_dict(), state), k
        assert opt_k.last_step is last, k
        assert torch.equal(torch.get_rng_state(), rng), k
        for p, g in zip(model_k.parameters(), grads):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g), k
        # the retried run is the run where the step never failed
        for idx in later:
            _step(model_k, opt_k, X, y, idx, separate_batch)
        assert torch.equal(_flat(model_k), _flat(reference[0])), k
        assert _equal(opt_k.state_dict(), reference[1].state_dict()), k
        assert _equal(vars(opt_k.last_step), vars(reference[1].last_step)), k


def test_the_transaction_reuses_the_saved_parameters_and_one_scratch_copy_of_the_ellipsoid():
    """Cost of the transaction: no second copy of w (the rejection's copy is the rollback's) and the
    accumulator copied into one scratch buffer, reused from step to step and never saved."""
    model, X, y, batches = _task()
    opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.05)
    _step(model, opt, X, y, batches[0], False)
    _step(model, opt, X, y, batches[1], False)
    scratch, saved = opt._v_backup, opt._saved
    assert scratch.numel() == opt.dim and saved.numel() == opt.dim
    _step(model, opt, X, y, batches[2], False)
    assert opt._v_backup is scratch and opt._saved is saved
    assert not {"_v_backup", "_saved"} & set(opt.__getstate__())  # scratch: not pickled, not copied
