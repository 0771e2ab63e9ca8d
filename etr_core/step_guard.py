"""What one trust-region step does to the world around the parameters: random state and module buffers.

One ``step`` of :class:`etr_core.optim.EllipsoidalTR` calls the closure up to three times (loss and
gradient at ``w``, the Hessian batch, the trial loss at ``w + s``). rho (Eq. 10) compares the two loss
values, so they must be values of *one* function: the same Dropout masks, the same stochastic depth,
the same everything that draws from torch's random generators. And a module buffer (BatchNorm's
running statistics, ``num_batches_tracked``) must be updated once per step, by the point the step ends
at, not once per closure call. :class:`StepGuard` does both:

* **Random state.** At the start of a step it records torch's CPU generator state and, when CUDA is
  initialised, every CUDA device's. Each later closure call of the step starts from that same state,
  so it draws the same masks. After the step the generators are left where the *first* call left
  them: the random stream continues as if the closure had been called once, and the next step
  draws fresh randomness. Python's ``random`` and NumPy generators are not touched (a closure must
  not use them for anything that changes the loss between calls); CUDA generators are forked only
  if CUDA is initialised when the step begins. torch's default generators are process-wide: two
  threads stepping at once share them (as they share them without the fork).
* **Module buffers.** The optimiser sees parameters and a closure, not modules. While a step runs, a
  global forward pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``), active only
  in the thread that runs the step, snapshots the buffers of every module whose forward runs, and
  of all its submodules, before that module's first forward of the step (so compiled or fused
  submodules are covered through their parent). Modules passed explicitly (``modules=``) are
  snapshotted when the step begins. The rule (one update per step, by the point the step ends at):

  - rejected step, or a step without a trial evaluation: the buffers one forward at ``w`` leaves
    (the first closure call); the Hessian batch's forward and the rejected trial leave no trace;
  - accepted step: the pre-step buffers updated by the one forward at ``w + s`` (the trial call).

  So ``num_batches_tracked`` equals the number of steps, and the running statistics after a step are
  exactly those of one train-mode forward at the parameters the optimiser ends at.
* If the closure raises, the buffers and the random state are put back as they were before the step.

Cost: two clones of each module buffer per step (before the step and after the call at ``w``), one
dictionary lookup per module forward; the random state is a 5 kB tensor per generator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RandomStateFork", "StepGuard", "preserved_buffers"]


class RandomStateFork:
    """Torch's generator states at the start of a step and after its first closure call.

    ``rewind()`` restores the start state (before each repeated closure call); ``finish()`` leaves the
    generators where the first call left them; ``abort()`` restores the start state.
    """

    def __init__(self) -> None:
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self._start = self._capture()
        self._after_first: tuple[Tensor, list[Tensor] | None] | None = None

    def _capture(self) -> tuple[Tensor, list[Tensor] | None]:
        cuda = torch.cuda.get_rng_state_all() if self._cuda else None
        return torch.get_rng_state(), cuda

    def _set(self, state: tuple[Tensor, list[Tensor] | None]) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def first_call_done(self) -> None:
        """Record where the first closure call left the generators (the state the step hands on)."""
        if self._after_first is None:
            self._after_first = self._capture()

    def rewind(self) -> None:
        """Put the generators back to the state the step started in (before a repeated call)."""
        self._set(self._start)

    def finish(self) -> None:
        """Leave the generators where the first closure call left them."""
        if self._after_first is not None:
            self._set(self._after_first)

    def abort(self) -> None:
        """Restore the start state (the step did not happen)."""
        self._set(self._start)


_Key = tuple[int, str]
# per buffer: (module, name, tensor object, saved copy)
_Entry = tuple[nn.Module, str, Tensor, Tensor]


def _snapshot_into(store: dict[_Key, _Entry], seen: set[int], module: nn.Module) -> None:
    for sub in module.modules():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        for name, buf in sub._buffers.items():
            if buf is not None:
                store[(id(sub), name)] = (sub, name, buf, buf.detach().clone())


@torch.no_grad()
def _restore(entries: Iterable[_Entry]) -> None:
    for module, name, buf, saved in entries:
        if module._buffers.get(name) is not buf:
            module._buffers[name] = buf  # a forward replaced the tensor: put the original back
        buf.copy_(saved)


class StepGuard:
    """Random-state fork and buffer bookkeeping for one optimiser step (module docstring).

    Use as a context manager around the whole step; call :meth:`before_call` and :meth:`after_call`
    around every closure call (``trial=True`` for the call at ``w + s``) and :meth:`rejected` when a
    trial is rejected (or the finer :meth:`first_call_done`, :meth:`before_repeat`,
    :meth:`after_hessian`, :meth:`before_trial` directly). ``modules`` are snapshotted up front;
    others are found by the hook.
    ``fork_rng=False`` or ``track_buffers=False`` switch either half off.
    """

    def __init__(
        self, modules: Iterable[nn.Module] = (), *, fork_rng: bool = True, track_buffers: bool = True
    ) -> None:
        self._modules = list(modules)
        self._fork_rng = fork_rng
        self._track = track_buffers
        self._thread = threading.get_ident()
        self._start: dict[_Key, _Entry] = {}
        self._seen: set[int] = set()
        self._after_w: list[_Entry] | None = None
        self._handle: Any = None
        self._calls = 0
        self._pending_w = False  # buffers must return to the state after the call at w by the end
        self.rng: RandomStateFork | None = None
        self.backward_hooked: list[str] = []  # modules whose backward hooks also see Hessian products

    # -- context -------------------------------------------------------------------------------------
    def __enter__(self) -> StepGuard:
        if self._fork_rng:
            self.rng = RandomStateFork()
        if self._track:
            for module in self._modules:
                _snapshot_into(self._start, self._seen, module)
            self._handle = nn.modules.module.register_module_forward_pre_hook(self._pre_forward)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if exc_type is not None:
            _restore(self._start.values())
            if self.rng is not None:
                self.rng.abort()
            return
        if self._pending_w:
            self._back_to_w()
        if self.rng is not None:
            self.rng.finish()

    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling():
            # inside a compiled region (traced by dynamo): nothing to do, and nothing that would break
            # the graph; the compiled module's own (eager) call already snapshotted its submodules
            return
        if threading.get_ident() == self._thread and id(module) not in self._seen:
            self.backward_hooked += [
                type(sub).__name__
                for sub in module.modules()
                if sub._backward_hooks or sub._backward_pre_hooks
            ]
            _snapshot_into(self._start, self._seen, module)

    # -- the step's milestones -----------------------------------------------------------------------
    def before_call(self, *, trial: bool) -> None:
        """Before a closure call: nothing for the first; a repeat sees the first call's randomness
        (and, for the ``trial`` at ``w + s``, the pre-step buffers)."""
        if self._calls:
            if trial:
                self.before_trial()
            else:
                self.before_repeat()

    def after_call(self, *, trial: bool) -> None:
        """After a closure call: remember what the first left; undo a Hessian batch's buffer updates."""
        self._calls += 1
        if self._calls == 1:
            self.first_call_done()
        elif not trial:
            self.after_hessian()

    def first_call_done(self) -> None:
        """After the first closure call (at ``w``) and its gradient: remember the buffers it left."""
        if self.rng is not None:
            self.rng.first_call_done()
        if self._track:
            # every buffer is copied: kernels such as batch_norm update running statistics in place
            # without bumping the version counter, so "unchanged" cannot be detected cheaply
            after = []
            for module, name, _buf, _saved in self._start.values():
                current = module._buffers.get(name)
                if current is not None:
                    after.append((module, name, current, current.detach().clone()))
            self._after_w = after

    def before_repeat(self) -> None:
        """Before a repeated closure call that must see the same randomness (the Hessian batch)."""
        if self.rng is not None:
            self.rng.rewind()

    def after_hessian(self) -> None:
        """After the Hessian batch's forward: its buffer updates will leave no trace. They are undone
        later (before the trial, or when the step ends), not now: the Hessian products still run
        through that forward's graph, and autograd refuses tensors changed in place since it saved
        them."""
        self._pending_w = True

    def before_trial(self) -> None:
        """Before the trial call at ``w + s``: same randomness as at ``w``, pre-step buffers, so the
        trial forward is the step's one buffer update."""
        if self.rng is not None:
            self.rng.rewind()
        if self._track:
            _restore(self._start.values())
        self._pending_w = False

    def rejected(self) -> None:
        """A rejected trial leaves no trace: buffers as the forward at ``w`` left them."""
        self._back_to_w()
        self._pending_w = False

    def _back_to_w(self) -> None:
        if not self._track:
            return
        known = set()
        if self._after_w is not None:
            _restore(self._after_w)
            known = {(id(m), n) for m, n, *_ in self._after_w}
        # modules first seen after the call at w were untouched by it: back to their start state
        _restore(e for k, e in self._start.items() if k not in known)


class preserved_buffers:
    """Context manager: the buffers of ``module`` (and its submodules) are restored on exit.

    For code that runs forwards only to measure (curvature tools, diagnostics): train-mode BatchNorm
    still normalises with batch statistics inside the block, but its running statistics and
    ``num_batches_tracked`` are exactly as before.
    """

    def __init__(self, module: nn.Module) -> None:
        self._module = module
        self._store: dict[_Key, _Entry] = {}

    def __enter__(self) -> nn.Module:
        _snapshot_into(self._store, set(), self._module)
        return self._module

    def __exit__(self, *exc: Any) -> None:
        _restore(self._store.values())
