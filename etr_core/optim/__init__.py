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

The torch.optim contract (docs/optimizer-recipes.md): every option lives in ``param_groups`` and is
read at every step (no option may differ between groups: one trust region, one radius, one rho);
each group's ``lr`` scales the radius cap ``lr * max_radius``, so torch LR schedulers schedule it
(for ``FirstOrderTR(radius_rule="eta")`` it is the step size). Dynamic state lives in ``self.state``
in torch's layout (the accumulator ``v`` per parameter; radius, counters and the last verdict in the
first parameter's entry), so ``state_dict``/``load_state_dict`` and their hooks, ``copy.deepcopy``,
``pickle`` and ``torch.distributed.checkpoint.state_dict`` work; ``load_state_dict`` checks a state
completely before it changes anything.

The package: :mod:`.records` (``StepRecord``), :mod:`.options` (the options in ``param_groups``),
:mod:`.state` (``self.state``, ``add_param_group``, ``load_state_dict``), :mod:`.loading` (checks of
parameters and of states to load), the shared step path of Algorithm 1 in three layers -- :mod:`.step_io`
(closure calls, gradient, parameter moves), :mod:`.verdict` (trial, rho, acceptance, radius update,
record) and :mod:`.base` (the start of a step, the ellipsoid update, the Hessian batch) --,
:mod:`.ellipsoidal` (``EllipsoidalTR``) and :mod:`.first_order` (``FirstOrderTR``).
"""

from etr_core.optim.ellipsoidal import EllipsoidalTR
from etr_core.optim.first_order import FirstOrderTR
from etr_core.optim.records import COUNTER_KEYS, StepRecord

__all__ = ["COUNTER_KEYS", "EllipsoidalTR", "FirstOrderTR", "StepRecord"]
