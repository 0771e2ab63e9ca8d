"""The training loop of :func:`train` (paper section 5): the run's state and the loop with its
evaluation cadence and checkpoints.

The loop's parts live beside it: :mod:`~etr_core.training.schedule` (optimisers, warm-up, pivot),
:mod:`~etr_core.training.steps` (first-order and TR steps), :mod:`~etr_core.training.evaluation`
(losses and evaluation), :mod:`~etr_core.training.run_folder` (run folder and checkpoints) and
:mod:`~etr_core.training.ending` (stopping limits, the end of a run and its summary).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from etr_core import devices
from etr_core.data import BatchSampler, Dataset, load_dataset
from etr_core.models import build_model, is_autoencoder
from etr_core.training.ending import _Ending
from etr_core.training.evaluation import _Evaluation
from etr_core.training.records import RunResult, _Clock, _dispatch
from etr_core.training.run_config import DTYPES, TrainConfig
from etr_core.training.run_folder import _RunFolder
from etr_core.training.schedule import _Schedule
from etr_core.training.steps import _StepFunctions
from etr_core.training.threads import _Threads


class _Trainer(_Schedule, _StepFunctions, _Evaluation, _RunFolder, _Ending):
    """State of one run; :func:`train` is its only user."""

    def __init__(
        self,
        config: TrainConfig,
        callbacks: Sequence[Any],
        stop_event: threading.Event | None,
        run_dir: str | os.PathLike | None,
        resume: bool,
        data: Dataset | None = None,
    ) -> None:
        from etr_core import distributed as etr_dist

        self.config = config
        self.callbacks = list(callbacks)
        self.stop_event = stop_event
        self.device = devices.device(config.device)
        self.dtype = DTYPES[config.dtype]
        self.world = etr_dist.world_size() if etr_dist.is_distributed() else 1
        self.rank = etr_dist.rank() if self.world > 1 else 0
        self.distributed = self.world > 1
        self.is_main = self.rank == 0

        if data is None:
            data = load_dataset(config.dataset, config.data_root, seed=config.seed, **config.data_options)
        self.task = "autoencoder" if is_autoencoder(config.model) else "classification"
        if self.task == "autoencoder":
            data = data.as_autoencoder()
        self.data = data
        self.train_x = data.train_x.to(self.device, self.dtype)
        self.train_y = data.train_y.to(self.device, self.dtype if self.task == "autoencoder" else torch.int64)
        self.test_x = data.test_x.to(self.device, self.dtype)
        self.test_y = data.test_y.to(self.device, self.dtype if self.task == "autoencoder" else torch.int64)

        self.model = build_model(config.model, data.input_shape, data.num_classes, seed=config.seed)
        self.model.to(self.device, self.dtype)
        if self.distributed:
            etr_dist.broadcast_parameters(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._backup: list[torch.Tensor] | None = None
        self._snapshot_step: int | None = None  # step whose parameters are in _backup
        self._restored_to: int | None = None

        batch = self._setup_optimizers()
        self.main_batch = batch
        self.sampler = BatchSampler(data.n_train, batch, seed=config.seed, drop_last=config.drop_last)
        if self.warmup is not None:
            self.sampler.batch_size = min(self.warmup.batch_size, data.n_train)

        self.counters = {"forward": 0, "backward": 0, "hvp": 0, "steps": 0, "accepted": 0}
        self.step = 0
        self.clock = _Clock(self.device)
        self.pivot_state: dict[str, Any] = {
            "snapshot": None,
            "loss": math.inf,
            "last_epoch": -1,
            "evals": 0,
            "tr_started": False,
        }
        self.steps: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.stop_detail: str | None = None

        self.writer = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resumed_from: int | None = None
        if self.run_dir is not None and self.is_main:
            self._open_run_dir(resume)
        elif self.run_dir is not None and resume:
            self._follow_checkpoint()

    def run(self) -> RunResult:
        self.model.train()
        if not self.evals:
            self._eval()
        while True:
            reason = self._limit_reached()
            if reason is not None:
                self.stop_reason = reason
                break
            self.clock.start()
            info = self._one_step()
            self.clock.stop()
            record = {"event": "step", **self._progress(), "method": self.config.method, **info}
            if self.config.preset != "paper":
                record["preset"] = self.config.preset
            self.steps.append(record)
            if self.is_main:
                if self.writer is not None and (self.step % self.config.log_every == 0 or self.stop_reason):
                    self.writer.append_metric(record)
                _dispatch(self.callbacks, "step", record)
            if self.stop_reason is not None:
                break
            if self.step % self.config.eval_every == 0:
                self._eval()
            if self.writer is not None and self.step % self.config.checkpoint_every == 0:
                self._checkpoint()
        return self._finish()


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[Any | Callable[[dict[str, Any]], None]] = (),
    stop_event: threading.Event | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    data: Dataset | None = None,
) -> RunResult:
    """Train ``config.model`` on ``config.dataset`` with ``config.method`` (paper section 5).

    ``callbacks``: objects with any of ``on_step``, ``on_eval``, ``on_end`` (each receives a dict
    record), or plain callables that receive every record (``record["event"]`` is "step", "eval" or
    "end"). ``on_step`` records hold ``step, method, forward, backward, hvp, backprops, samples,
    epoch, seconds, loss, batch_size, phase`` and, for TR steps, ``rho, radius, radius_before,
    accepted, cg_iterations, hvp_calls, exit, quality, trial_loss, pred_reduction, ...``; first-order
    steps carry ``lr``. ``on_eval`` records hold ``step, backprops, epoch, seconds, train_loss,
    train_acc, test_loss, test_acc`` (accuracies ``None`` for autoencoders). ``on_end`` gets the summary.

    ``stop_event.is_set()`` is checked before every step (cooperative stop, reason "stopped"). A
    non-finite mini-batch loss or gradient stops the run with reason "nonfinite_loss" and leaves the
    parameters at their last finite values. ``run_dir`` writes a run folder (see
    :mod:`etr_core.results`); ``resume=True`` continues from its last checkpoint, and the continued
    run reproduces an uninterrupted one bit for bit on CPU. Under ``torchrun`` each rank trains on its
    shard of every batch and only rank 0 writes files and calls callbacks.

    ``data``: the dataset :func:`dataset_for` would load for ``config``, already loaded (e.g. one
    read-only copy shared by several runs in one process); it is used as given, never modified.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    if stop_event is not None and not hasattr(stop_event, "is_set"):
        raise TypeError(f"stop_event must be a threading.Event (or have is_set()), got {stop_event!r}")
    for i, cb in enumerate(callbacks):
        if not callable(cb) and not any(hasattr(cb, f"on_{e}") for e in ("step", "eval", "end")):
            raise TypeError(f"callbacks[{i}] has no on_step/on_eval/on_end and is not callable: {cb!r}")
    if os.environ.get("WORLD_SIZE", "1") != "1":
        from etr_core import devices
        from etr_core import distributed as etr_dist

        etr_dist.setup(device=devices.device(config.device))
    with _Threads(config.num_threads):
        trainer = _Trainer(config, callbacks, stop_event, run_dir, resume, data)
        try:
            return trainer.run()
        finally:
            if trainer.writer is not None:
                trainer.writer.close()
