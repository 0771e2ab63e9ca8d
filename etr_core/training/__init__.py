"""One training loop for every method of the paper, with exact cost accounting (section 5).

Methods (``METHODS``): the stochastic ellipsoidal trust-region methods ``TR_uni``, ``TR_ada`` and
``TR_rms`` (Algorithm 1 with paper Table 1 defaults, batch 512) and the first-order baselines
``SGD``, ``Adagrad``, ``RMSprop`` and ``Adam`` (batch 32 and a step size, which the paper
grid-searched).

How cost is counted, per step and exactly (never extrapolated, unlike the published plots):

* ``forward``  -- forward passes over a mini-batch. A TR step makes one at ``w`` and one at the trial
  point ``w + s`` (none when the step is rejected before evaluation); a first-order step makes one.
* ``backward`` -- gradient backpropagations: one per step for every method.
* ``hvp``      -- Hessian-vector products made by the subproblem solver (TR only).
* ``backprops`` = ``backward + hvp``: one Hessian-vector product costs one extra backpropagation
  (a double backward through the retained graph), so this is the paper's x-axis "backprops" in
  backprop-equivalents, counted the same way for every method.
* ``samples`` / ``epoch`` -- examples drawn by the sampler and ``samples / n_train``.
* ``seconds``  -- wall-clock time of the training steps only (batch selection, forward, backward,
  Hessian products, step), with CUDA synchronised before each reading; evaluation, logging,
  callbacks and checkpointing are excluded.

Full-data evaluation (train and test loss and accuracy) runs at step 0, every ``eval_every`` steps
and at the end; its passes are not counted in the training counters.

No warm-up or batch-size pivot runs unless ``preset="authors"`` is asked for; then the authors'
undocumented first-order warm-up and pivot run and every record says so (``phase``,
``preset``).

The package holds one job per module: :mod:`~etr_core.training.run_config` (methods,
:class:`TrainConfig`, :func:`resolve_tr_config`), :mod:`~etr_core.training.trainer` (the loop and
:func:`train`), :mod:`~etr_core.training.ending` (stopping limits and the end of a run),
:mod:`~etr_core.training.schedule` (optimisers, warm-up, pivot),
:mod:`~etr_core.training.steps` (first-order and TR steps), :mod:`~etr_core.training.evaluation`,
:mod:`~etr_core.training.run_folder` (run folders, checkpoints, resume),
:mod:`~etr_core.training.records` (:class:`RunResult`, callbacks, clock) and
:mod:`~etr_core.training.threads` (CPU thread count). Every name is importable from here.
"""

from __future__ import annotations

# __all__ is the public surface; every other name the single-module etr_core.training had is re-exported
# for the code that imports it from here
from etr_core.training.records import RunResult
from etr_core.training.records import _Clock as _Clock
from etr_core.training.records import _dispatch as _dispatch
from etr_core.training.run_config import _AUTHORS_DATASET as _AUTHORS_DATASET
from etr_core.training.run_config import _AUTHORS_MODEL as _AUTHORS_MODEL
from etr_core.training.run_config import _DATA_OPTIONS as _DATA_OPTIONS
from etr_core.training.run_config import _DATASET_SHAPES as _DATASET_SHAPES
from etr_core.training.run_config import _RESUMABLE_CHANGES as _RESUMABLE_CHANGES
from etr_core.training.run_config import DTYPES as DTYPES
from etr_core.training.run_config import METHODS, MethodSpec, TrainConfig, resolve_tr_config
from etr_core.training.run_config import PRESETS as PRESETS
from etr_core.training.run_config import STOP_REASONS as STOP_REASONS
from etr_core.training.run_config import copy_config as copy_config
from etr_core.training.run_config import dataset_for as dataset_for
from etr_core.training.steps import SNAPSHOT_EVERY as SNAPSHOT_EVERY
from etr_core.training.steps import _first_order as _first_order
from etr_core.training.threads import MAX_THREADS as MAX_THREADS
from etr_core.training.threads import _Threads as _Threads
from etr_core.training.threads import resolve_num_threads
from etr_core.training.trainer import _Trainer as _Trainer
from etr_core.training.trainer import train

__all__ = [
    "METHODS",
    "MethodSpec",
    "RunResult",
    "TrainConfig",
    "resolve_num_threads",
    "resolve_tr_config",
    "train",
]

