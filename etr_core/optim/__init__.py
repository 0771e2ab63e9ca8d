"""Stochastic ellipsoidal trust-region optimisers (paper Algorithm 1; appendix B, Fig. 5).

``EllipsoidalTR`` runs one iteration of Algorithm 1 per ``step(closure)``: loss and gradient on the
mini-batch (with a retained graph), ellipsoid update (Eq. 2-3, Corollary 1), an approximate solve
of the subproblem (Eq. 8) with Hessian-vector products through that graph until Eq. 36 holds, the
trial loss on the *same* batch, rho of Eq. 10 in float64, and acceptance plus radius update
(Algorithm 1, line 7). ``FirstOrderTR`` is the same loop with the linear model of Theorem 1.

The closure contract (as for ``torch.optim.LBFGS``, but without ``backward``): ``closure()``
evaluates the current mini-batch with autograd enabled and returns the scalar loss. ``step`` calls
it twice, once at ``w`` and once under ``no_grad`` at the trial point ``w + s``; both calls must
use the same batch and the same module mode. ``step`` sets every parameter's ``.grad`` to ``None``
before calling the closure and raises ``RuntimeError`` if the closure filled one (it must not call
``backward``: the optimiser forms the gradient itself, with the graph the Hessian products need).

Faults never move the parameters and never loop:

* loss at ``w`` or its gradient NaN/Inf -> no move, ``RuntimeWarning``, radius unchanged (the point,
  not the radius, is at fault; the ellipsoid is not touched), ``fault="nonfinite_loss"`` /
  ``"nonfinite_gradient"``;
* zero gradient -> no move, radius unchanged, ``exit="zero_gradient"``;
* NaN/Inf in a Hessian-vector product or in the step -> step rejected, radius shrunk,
  ``fault="nonfinite_hvp"``;
* a predicted decrease ``<= tiny_pred`` (including a model increase) -> rejected without a trial
  evaluation, radius shrunk, ``fault="nonpositive_pred"``;
* NaN/Inf trial loss -> rho = -inf, rejected, parameters restored bitwise, radius shrunk,
  ``fault="nonfinite_trial_loss"``.

The package: :mod:`.records` (``StepRecord``), :mod:`.options` (hyper-parameters and their
presets), :mod:`.state` (persistence), :mod:`.base` (the shared step path of Algorithm 1),
:mod:`.ellipsoidal` (``EllipsoidalTR``) and :mod:`.first_order` (``FirstOrderTR``).
"""

from etr_core.optim.ellipsoidal import EllipsoidalTR
from etr_core.optim.first_order import FirstOrderTR
from etr_core.optim.records import COUNTER_KEYS, StepRecord

__all__ = ["COUNTER_KEYS", "EllipsoidalTR", "FirstOrderTR", "StepRecord"]
