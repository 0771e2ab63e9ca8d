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
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from etr_core import devices
from etr_core._validation import check_choice, check_int, check_positive
from etr_core.data import DATASET_NAMES, IMAGE_DATASETS, MAX_SEED, BatchSampler, Dataset, load_dataset
from etr_core.models import (
    MODEL_NAMES,
    build_model,
    check_model_shape,
    count_parameters,
    is_autoencoder,
    paper_tr_batch_size,
)

__all__ = [
    "METHODS",
    "MethodSpec",
    "RunResult",
    "TrainConfig",
    "resolve_num_threads",
    "resolve_tr_config",
    "train",
]


@dataclass(frozen=True)
class MethodSpec:
    """A training method: family ("tr" or "first_order"), defaults and the step-size grid."""

    name: str
    family: str
    description: str
    default_batch_size: int
    ellipsoid: str | None = None
    default_lr: float | None = None
    lr_grid: tuple[float, ...] = ()
    cubic: bool = False  # adaptive cubic regularisation (etr_core.arc.EllipsoidalARC), not a trust region


METHODS: dict[str, MethodSpec] = {
    "TR_uni": MethodSpec("TR_uni", "tr", "trust region, spherical (uniform) norm", 512, ellipsoid="uniform"),
    "TR_ada": MethodSpec("TR_ada", "tr", "trust region, Adagrad ellipsoid (Eq. 2)", 512, ellipsoid="adagrad"),
    "TR_rms": MethodSpec("TR_rms", "tr", "trust region, RMSProp ellipsoid (Eq. 3)", 512, ellipsoid="rms"),
    # beyond the paper (its section 6 and footnote 4): the Hessian-diagonal ellipsoid and cubic regularisation
    "TR_hess": MethodSpec(
        "TR_hess", "tr", "trust region, Hutchinson Hessian-diagonal ellipsoid (beyond the paper)", 512,
        ellipsoid="hessian",
    ),
    "ARC_rms": MethodSpec(
        "ARC_rms", "tr", "adaptive cubic regularisation, RMSProp ellipsoid (beyond the paper)", 512,
        ellipsoid="rms", cubic=True,
    ),
    "SGD": MethodSpec(
        "SGD",
        "first_order",
        "stochastic gradient descent",
        32,
        default_lr=0.1,
        lr_grid=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
    ),
    "Adagrad": MethodSpec(
        "Adagrad",
        "first_order",
        "Adagrad (Duchi et al., 2011)",
        32,
        default_lr=0.03,
        lr_grid=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    ),
    "RMSprop": MethodSpec(
        "RMSprop",
        "first_order",
        "RMSprop (Tieleman & Hinton, 2012)",
        32,
        default_lr=1e-3,
        lr_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    ),
    "Adam": MethodSpec(
        "Adam",
        "first_order",
        "Adam (Kingma & Ba, 2015)",
        32,
        default_lr=1e-3,
        lr_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    ),
}

PRESETS = ("paper", "fast", "authors")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
STOP_REASONS = ("max_steps", "max_epochs", "max_seconds", "max_backprops", "stopped", "nonfinite_loss")
# First-order steps: parameters are copied aside every this many steps (the fault fallback, see
# _Trainer._first_order_step); the copy costs one parameter pass, a 1/SNAPSHOT_EVERY share of a step.
SNAPSHOT_EVERY = 16
_DATASET_SHAPES = {
    "digits": (1, 8, 8),
    "blobs": (2,),
    "moons": (2,),
    "spirals": (2,),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
_DATA_OPTIONS = ("test_fraction", "n_samples", "noise", "max_train", "max_test")
# Fields that may change between a run and its resumption (stopping limits, logging cadence, where it
# runs and where the same data files live); each change is recorded in config.json ("resumes").
_RESUMABLE_CHANGES = (
    "max_steps",
    "max_epochs",
    "max_seconds",
    "max_backprops",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "device",
    "num_threads",
    "data_root",
)


@dataclass
class TrainConfig:
    """Everything one training run needs; validated on construction (``ValueError``/``TypeError``
    naming the field, before any work starts).

    ``batch_size``/``lr`` ``None`` take the method's defaults (TR: the preset's batch, 512 in Table 1;
    first-order: 32 and ``METHODS[method].default_lr``). ``tr_options`` override fields of
    :class:`etr_core.config.TRConfig` (e.g. ``{"radius": 0.1}``); ``preset`` is "paper" (Table 1) or
    "authors" (the authors' files, with their warm-up and pivot; labelled). At least one of
    ``max_steps``, ``max_epochs``, ``max_seconds``, ``max_backprops`` must be set. ``max_backprops`` is a
    budget in backprops (gradient backprops + Hessian-vector products, the paper's x-axis): the run stops
    before the first step that starts at or beyond it, so a TR step may end past it by its own cost.
    ``checkpoint_every`` (steps) applies
    when a run folder is given. ``data_options`` go to :func:`etr_core.data.load_dataset`.
    """

    dataset: str = "digits"
    model: str = "mlp_small"
    method: str = "TR_rms"
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    max_steps: int | None = 200
    max_epochs: float | None = None
    max_seconds: float | None = None
    max_backprops: int | None = None
    eval_every: int = 10
    log_every: int = 1
    checkpoint_every: int = 50
    device: str = "auto"
    dtype: str = "float32"
    preset: str = "paper"
    tr_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    num_threads: int | None = None
    eval_batch_size: int = 4096
    drop_last: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def is_tr(self) -> bool:
        return self.spec.family == "tr"

    def validate(self) -> TrainConfig:
        """Check every field; raise naming the field, its value and the allowed range."""
        check_choice("dataset", self.dataset, DATASET_NAMES)
        check_choice("model", self.model, MODEL_NAMES)
        check_choice("method", self.method, METHODS)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        if self.lr is not None:
            if self.is_tr:
                raise ValueError(
                    f"lr applies to first-order methods only; {self.method} sets its step through the trust "
                    f"region (use tr_options={{'radius': ...}}), got lr={self.lr!r}"
                )
            self.lr = check_positive("lr", self.lr)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, minimum=1)
        if self.max_epochs is not None:
            self.max_epochs = check_positive("max_epochs", self.max_epochs)
        if self.max_seconds is not None:
            self.max_seconds = check_positive("max_seconds", self.max_seconds)
        if self.max_backprops is not None:
            check_int("max_backprops", self.max_backprops, minimum=1)
        limits = (self.max_steps, self.max_epochs, self.max_seconds, self.max_backprops)
        if all(v is None for v in limits):
            raise ValueError(
                "set at least one of max_steps, max_epochs, max_seconds, max_backprops (all are None)"
            )
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("log_every", self.log_every, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        devices.device(self.device)  # "cuda" without CUDA fails here, not mid-run
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("preset", self.preset, PRESETS)
        if not isinstance(self.drop_last, bool):
            raise TypeError(f"drop_last must be a bool, got {self.drop_last!r}")
        if self.num_threads is not None:
            check_int("num_threads", self.num_threads, minimum=1, maximum=MAX_THREADS)
        if self.data_root is not None and not isinstance(self.data_root, (str, os.PathLike)):
            raise TypeError(f"data_root must be a path or None, got {self.data_root!r}")
        if not isinstance(self.data_options, dict):
            raise TypeError(f"data_options must be a dict, got {type(self.data_options).__name__}")
        unknown = set(self.data_options) - set(_DATA_OPTIONS)
        if unknown:
            raise ValueError(
                f"data_options has unknown key(s) {sorted(unknown)}; allowed: {list(_DATA_OPTIONS)}"
            )
        if not isinstance(self.tr_options, dict):
            raise TypeError(f"tr_options must be a dict, got {type(self.tr_options).__name__}")
        if not self.is_tr and (self.tr_options or self.preset != "paper"):
            raise ValueError(
                f"tr_options and preset apply to TR methods only; method={self.method!r} got "
                f"tr_options={self.tr_options!r}, preset={self.preset!r}"
            )
        shape = _DATASET_SHAPES[self.dataset]
        if self.model in ("cnn_small", "resnet18") and len(shape) != 3:
            raise ValueError(
                f"model {self.model!r} needs an image dataset; dataset {self.dataset!r} has "
                f"input shape {shape}"
            )
        if is_autoencoder(self.model) and self.dataset not in IMAGE_DATASETS:
            raise ValueError(
                f"model {self.model!r} reconstructs images in [0, 1]; dataset must be one of "
                f"{IMAGE_DATASETS}, got {self.dataset!r}"
            )
        try:
            check_model_shape(self.model, shape)
        except ValueError as exc:
            raise ValueError(f"dataset {self.dataset!r}: {exc}") from None
        if self.is_tr:
            resolve_tr_config(self)  # invalid tr_options / preset combinations fail now
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s): {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


_AUTHORS_DATASET = {
    "digits": "mnist",
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "cifar10": "cifar10",
}
_AUTHORS_MODEL = {
    "mlp_small": "fc",
    "mlp_tiny": "fc",
    "mlp_paper": "fc",
    "mlp_cifar": "fc",
    "cnn_small": "conv",
    "resnet18": "conv",
    "autoencoder": "autoencoder",
    "autoencoder_small": "autoencoder",
    "autoencoder_conv": "autoencoder",
}


def resolve_tr_config(config: TrainConfig):
    """The :class:`etr_core.config.TRConfig` of a TR run: preset, then ``tr_options``, then ``batch_size``.

    "paper" is Table 1 (appendix C, B.1). "fast" is Table 1 with the automatic initial radius
    (:func:`etr_core.config.fast`). "authors" uses the
    authors' files for the dataset and model family (digits uses their MNIST values).
    """
    from etr_core.config import ELLIPSOIDS, TRConfig, authors, fast, paper_table1

    kind = config.spec.ellipsoid
    if config.preset == "authors":
        if config.dataset not in _AUTHORS_DATASET:
            raise ValueError(
                f"preset='authors' exists for datasets {sorted(_AUTHORS_DATASET)}, "
                f"got dataset={config.dataset!r}"
            )
        base = authors(_AUTHORS_DATASET[config.dataset], _AUTHORS_MODEL[config.model], kind)
    elif kind in ELLIPSOIDS:
        base = fast(kind) if config.preset == "fast" else paper_table1(kind)
    else:  # the Hessian-diagonal ellipsoid has no Table 1 row: Table 1's values with that ellipsoid
        base = TRConfig(ellipsoid=kind, label=f"Table 1 values ({kind}, beyond the paper)")
        if config.preset == "fast":
            base = base.replace(auto_radius=True, label=f"fast ({kind})")
    options = dict(config.tr_options)
    names = {f.name for f in dataclasses.fields(TRConfig)}
    unknown = set(options) - names
    if unknown:
        raise ValueError(f"tr_options has unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    if "ellipsoid" in options and options["ellipsoid"] != kind:
        raise ValueError(
            f"tr_options['ellipsoid'] conflicts with method {config.method!r} ({kind}); "
            "choose the method instead"
        )
    if config.batch_size is not None:
        options["batch_size"] = config.batch_size
    elif config.preset in ("paper", "fast") and "batch_size" not in options:
        paper_batch = paper_tr_batch_size(config.model, config.dataset)  # ResNet18 on CIFAR-10: 128
        if paper_batch is not None:
            options["batch_size"] = paper_batch
    return base.replace(**options)


@dataclass
class RunResult:
    """What :func:`train` returns: the per-step and per-evaluation records, the summary and the model."""

    config: TrainConfig
    steps: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    model: nn.Module
    run_dir: Path | None = None

    @property
    def stop_reason(self) -> str:
        return str(self.summary["stop_reason"])

    @property
    def losses(self) -> list[float]:
        """Mini-batch loss of every step, in order."""
        return [r["loss"] for r in self.steps]


# -- callbacks ------------------------------------------------------------------------------------------


def _dispatch(callbacks: Sequence[Any], event: str, record: dict[str, Any]) -> None:
    """Objects get ``on_<event>(record)`` where they define it; plain callables get every record
    (with ``record["event"]`` telling which)."""
    for cb in callbacks:
        method = getattr(cb, f"on_{event}", None)
        if method is not None:
            method(record)
        elif callable(cb) and not any(hasattr(cb, f"on_{e}") for e in ("step", "eval", "end")):
            cb(record)


# -- the loop ----------------------------------------------------------------------------------------------


class _Clock:
    """Wall-clock seconds of training work only: ``start``/``stop`` around each step, CUDA synchronised."""

    def __init__(self, device: torch.device, elapsed: float = 0.0) -> None:
        self.device = device
        self.elapsed = elapsed
        self._t0: float | None = None

    def start(self) -> None:
        devices.synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        devices.synchronize(self.device)
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None


def _first_order(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr)
    if name == "Adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown first-order optimiser {name!r}")


class _Trainer:
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

        self.tr_config = resolve_tr_config(config) if config.is_tr else None
        if config.is_tr:
            from etr_core.optim import EllipsoidalTR

            if config.spec.cubic:
                from etr_core.arc import EllipsoidalARC

                c = self.tr_config
                self.optimizer = EllipsoidalARC(
                    self.params, ellipsoid=c.ellipsoid, beta=c.beta, eps=c.eps, eps_mode=c.eps_mode,
                    krylov_tol=c.krylov_tol, theta=c.theta, max_krylov=c.max_krylov,
                    hessian_probes=c.hessian_probes, hessian_block=c.hessian_block,
                    distributed=self.distributed,
                )
            else:
                self.optimizer = EllipsoidalTR(
                    self.params, preset=self.tr_config, distributed=self.distributed
                )
            batch = self.tr_config.batch_size
            self.lr = None
        else:
            self.lr = config.lr if config.lr is not None else config.spec.default_lr
            self.optimizer = _first_order(config.method, self.params, self.lr)
            batch = config.batch_size or config.spec.default_batch_size
        self.warmup = (
            self.tr_config.warmup if (self.tr_config is not None and config.preset == "authors") else None
        )
        self.pivot = (
            self.tr_config.pivot if (self.tr_config is not None and config.preset == "authors") else None
        )
        self.l2_alpha = (
            self.tr_config.l2_alpha if (self.tr_config is not None and config.preset == "authors") else 0.0
        )
        self.warmup_optimizer = (
            _first_order(self.warmup.optimizer, self.params, self.warmup.lr)
            if self.warmup is not None
            else None
        )
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

    # -- run folder ---------------------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        record = self.config.to_dict()
        record["task"] = self.task
        record["parameters"] = count_parameters(self.model)
        record["n_train"] = self.data.n_train
        record["n_test"] = self.data.n_test
        record["batch_size_resolved"] = self.main_batch
        record["lr_resolved"] = self.lr
        record["world_size"] = self.world
        record["tr_config"] = self.tr_config.to_dict() if self.tr_config is not None else None
        record["warmup_and_pivot"] = self.warmup is not None or self.pivot is not None
        return record

    def _open_run_dir(self, resume: bool) -> None:
        """Lock the run folder, then start it or continue it from its newest good checkpoint.

        Runs after the data were loaded and validated, so a bad data file writes nothing. A folder
        that holds a checkpoint or a summary needs ``resume``; one stopped before its first checkpoint
        (configuration only) starts again from step 0. Budget and cadence fields
        (``_RESUMABLE_CHANGES``) may change on resume and are recorded in config.json ("resumes");
        any other difference is refused, naming the fields.
        """
        import warnings

        from etr_core import results

        writer = results.RunWriter(self.run_dir)
        writer.lock()
        try:
            writer.remove_stale_temporaries()
            state = writer.state()
            if state in ("resumable", "finished") and not resume:
                raise FileExistsError(
                    f"{self.run_dir} already holds a run; pass resume=True (CLI: --resume) to continue it "
                    "or choose another folder"
                )
            checkpoint = writer.load_checkpoint(self.device) if resume else None
            history: list[dict[str, Any]] = []
            if checkpoint is not None:
                history = self._resume_from(checkpoint, writer)
            else:
                if state == "unstarted":
                    warnings.warn(
                        f"{self.run_dir} holds a run stopped before its first checkpoint; starting it again "
                        "from step 0",
                        results.ResultsWarning,
                        stacklevel=4,
                    )
                writer.clear_logs()
            record = self._config_record()
            if history:
                record["resumes"] = history
            writer.write_config(record)
            env = results.environment_info(self.device)
            env["resumed_from_step"] = self.resumed_from
            writer.write_environment(env)
        except BaseException:
            writer.close()
            raise
        self.writer = writer

    def _follow_checkpoint(self) -> None:
        """Ranks other than 0 continue from the checkpoint rank 0 resumes from (they only read it).

        Every rank loads the same file (a damaged newest checkpoint sends all of them to the previous
        one), so weights, optimiser state, sampler position and RNG agree when training continues.
        """
        from etr_core import checkpoints

        found = checkpoints.load_checkpoint(self.run_dir, self.device)
        if found is not None:
            self._load_state(found[0])
            self.resumed_from = self.step

    def _resume_from(self, checkpoint: dict[str, Any], writer: Any) -> list[dict[str, Any]]:
        """Load ``checkpoint`` after checking the configuration; the updated list of recorded resumes."""
        from etr_core import checkpoints, results
        from etr_core.errors import CheckpointError, one_line

        path = writer.loaded_checkpoint or self.run_dir / results.CHECKPOINT_FILE
        checkpoints.check_run_state(checkpoint, path)
        saved = checkpoint["config"]
        now = self.config.to_dict()
        differing = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
        if differing:
            raise ValueError(
                f"cannot resume {self.run_dir}: the configuration differs in {differing} "
                f"(saved {[saved.get(k) for k in differing]}, now {[now[k] for k in differing]}); only "
                f"{list(_RESUMABLE_CHANGES)} may change"
            )
        try:
            self._load_state(checkpoint)
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError, IndexError) as exc:
            reason = one_line(str(exc))[:300]
            raise CheckpointError(path, f"does not fit this run ({type(exc).__name__}: {reason})") from None
        writer.truncate_logs(self.step)
        metrics, evals = (self.run_dir / results.METRICS_FILE), (self.run_dir / results.EVALS_FILE)
        self.steps = results.read_jsonl(metrics) if metrics.exists() else []
        self.evals = results.read_jsonl(evals) if evals.exists() else []
        self.resumed_from = self.step
        try:
            previous = results.read_json_object(self.run_dir / results.CONFIG_FILE) or {}
        except ValueError:
            previous = {}
        history = [h for h in previous.get("resumes", []) if isinstance(h, dict)]
        changes = {
            k: {"before": saved.get(k), "after": now[k]} for k in _RESUMABLE_CHANGES if saved.get(k) != now[k]
        }
        history.append({"step": self.step, "changes": changes})
        return history

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "seconds": self.clock.elapsed,
            "counters": dict(self.counters),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "warmup_optimizer": self.warmup_optimizer.state_dict()
            if self.warmup_optimizer is not None
            else None,
            "sampler": self.sampler.state_dict(),
            "pivot": self.pivot_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "last_eval_step": self.evals[-1]["step"] if self.evals else None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.clock.elapsed = float(state["seconds"])
        self.counters = {k: int(v) for k, v in state["counters"].items()}
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.warmup_optimizer is not None and state.get("warmup_optimizer") is not None:
            self.warmup_optimizer.load_state_dict(state["warmup_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.pivot_state = state["pivot"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def _checkpoint(self) -> None:
        if self.writer is not None:
            self.writer.save_checkpoint(self._state())

    # -- losses and evaluation ------------------------------------------------------------------------------
    def _data_loss(self, out: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.task == "autoencoder":
            return F.binary_cross_entropy_with_logits(out, target, reduction=reduction)
        return F.cross_entropy(out, target, reduction=reduction)

    def _penalty(self) -> torch.Tensor | float:
        if self.l2_alpha == 0.0:
            return 0.0
        return 0.5 * self.l2_alpha * sum((p * p).sum() for p in self.params)

    @torch.no_grad()
    def _evaluate_split(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
        was_training = self.model.training
        self.model.eval()
        total, correct = 0.0, 0
        bs = self.config.eval_batch_size
        for i in range(0, x.shape[0], bs):
            out = self.model(x[i : i + bs])
            target = y[i : i + bs]
            total += float(self._data_loss(out, target, reduction="sum").double())
            if self.task == "classification":
                correct += int((out.argmax(1) == target).sum())
        self.model.train(was_training)
        n = x.shape[0] * (1 if self.task == "classification" else y.shape[1])
        loss = total / n
        return loss, (correct / x.shape[0] if self.task == "classification" else None)

    def _progress(self) -> dict[str, Any]:
        c = self.counters
        return {
            "step": self.step,
            "forward": c["forward"],
            "backward": c["backward"],
            "hvp": c["hvp"],
            "backprops": c["backward"] + c["hvp"],
            "samples": self.sampler.samples_seen,
            "epoch": self.sampler.epochs,
            "seconds": self.clock.elapsed,
        }

    def _eval(self) -> None:
        train_loss, train_acc = self._evaluate_split(self.train_x, self.train_y)
        test_loss, test_acc = self._evaluate_split(self.test_x, self.test_y)
        record = {
            "event": "eval",
            **self._progress(),
            "method": self.config.method,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
        }
        self.evals.append(record)
        if self.is_main:
            if self.writer is not None:
                self.writer.append_eval(record)
            _dispatch(self.callbacks, "eval", record)

    # -- one step ------------------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next_batch()
        if self.distributed:
            from etr_core import distributed as etr_dist

            usable = idx.numel() - idx.numel() % self.world
            if usable == 0:
                raise ValueError(f"batch of {idx.numel()} examples cannot be split over {self.world} ranks")
            idx = etr_dist.shard(idx[:usable], self.rank, self.world)
        idx = idx.to(self.device)
        return self.train_x[idx], self.train_y[idx]

    def _phase(self) -> str:
        if not self.config.is_tr:
            return "first_order"
        if self.warmup is not None and self.sampler.samples_seen < self.warmup.epochs * self.data.n_train:
            return "warmup"
        return "tr"

    def _first_order_step(self, optimizer: torch.optim.Optimizer, xb, yb) -> tuple[float, bool]:
        """Loss, gradient and update, as lean as a bare loop; returns (loss, finite).

        The safety work is one host read of the loss (which the step record needs anyway) and a
        parameter snapshot every ``SNAPSHOT_EVERY`` steps. A non-finite loss stops the run before its
        backward, so that step changes nothing; gradients and updates are not checked per step: an
        update that overflows (or a finite loss with a non-finite gradient) shows in the next step's
        loss, and :meth:`_recover` then puts the last snapshot back if the parameters are non-finite.
        """
        optimizer.zero_grad(set_to_none=True)
        loss = self._data_loss(self.model(xb), yb)
        if self.l2_alpha != 0.0:
            loss = loss + self._penalty()
        self.counters["forward"] += 1
        value = loss.detach()
        if self.distributed:
            from etr_core import distributed as etr_dist

            value = etr_dist.all_reduce_mean(value.double())
        value = float(value)
        if not math.isfinite(value):
            self._recover()
            return value, False
        if self._snapshot_step is None or self.step - self._snapshot_step >= SNAPSHOT_EVERY:
            self._snapshot()
        loss.backward()
        self.counters["backward"] += 1
        if self.distributed:
            from etr_core import distributed as etr_dist

            for p in self.params:
                if p.grad is not None:
                    etr_dist.all_reduce_mean(p.grad)
        optimizer.step()
        return value, True

    @torch.no_grad()
    def _snapshot(self) -> None:
        """Copy the parameters (whose loss at this step was finite) aside, in one fused call."""
        if self._backup is None:
            self._backup = [torch.empty_like(p) for p in self.params]
        torch._foreach_copy_(self._backup, self.params)
        self._snapshot_step = self.step

    @torch.no_grad()
    def _recover(self) -> None:
        """After a fault: keep finite parameters; restore the last snapshot over non-finite ones."""
        if self._backup is None or all(bool(torch.isfinite(p).all()) for p in self.params):
            return
        torch._foreach_copy_(self.params, self._backup)
        self._restored_to = self._snapshot_step

    def _tr_step(self, xb, yb) -> tuple[float, dict[str, Any]]:
        before = dict(self.optimizer.counters)

        def closure(batch_fraction: float = 1.0) -> torch.Tensor:
            if batch_fraction < 1.0:  # the Hessian sub-batch of hessian_fraction (etr_core.hessian_batch)
                k = max(1, math.ceil(batch_fraction * xb.shape[0]))
                return self._data_loss(self.model(xb[:k]), yb[:k]) + self._penalty()
            return self._data_loss(self.model(xb), yb) + self._penalty()

        self.optimizer.step(closure)
        rec = self.optimizer.last_step
        for key in ("forward", "backward", "hvp", "accepted"):
            self.counters[key] += self.optimizer.counters[key] - before[key]
        extra = {
            "rho": rec.rho,
            "radius": rec.radius_after,
            "radius_before": rec.radius_before,
            "accepted": rec.accepted,
            "quality": rec.quality,
            "cg_iterations": rec.cg_iterations,
            "hvp_calls": rec.hvp_calls,
            "other_hvp_calls": rec.other_hvp_calls,
            "exit": rec.exit,
            "trial_loss": rec.trial_loss,
            "pred_reduction": rec.pred_reduction,
            "actual_reduction": rec.actual_reduction,
            "step_m_norm": rec.step_m_norm,
            "step_l2_norm": rec.step_l2_norm,
            "grad_norm": rec.grad_norm,
            "fault": rec.fault,
        }
        return float(rec.loss), extra

    def _maybe_pivot(self) -> str | None:
        """The authors' pivot: at the first TR step of every ``every_epochs``-th epoch,
        undo the steps since the last pivot if the full training loss did not decrease, and grow the
        batch. The radius and the ellipsoid are not rolled back (as in their code)."""
        epoch = self.sampler.samples_seen // self.data.n_train
        if epoch % self.pivot.every_epochs != 0 or epoch == self.pivot_state["last_epoch"]:
            return None
        self.pivot_state["last_epoch"] = epoch
        self.pivot_state["evals"] += 1
        loss, _ = self._evaluate_split(self.train_x, self.train_y)
        snapshot = self.pivot_state["snapshot"]
        if snapshot is not None and not loss < self.pivot_state["loss"]:
            with torch.no_grad():
                for p, saved in zip(self.params, snapshot):
                    p.copy_(saved)
            # grow up to max_fraction * n, but never shrink (their cap can be below |S| on small sets)
            current = self.sampler.batch_size
            cap = max(current, int(self.pivot.max_fraction * self.data.n_train))
            self.sampler.batch_size = min(int(current * self.pivot.batch_mult), cap, self.data.n_train)
            return "undone"
        self.pivot_state["loss"] = loss
        self.pivot_state["snapshot"] = [p.detach().clone() for p in self.params]
        return "kept"

    def _one_step(self) -> dict[str, Any]:
        phase = self._phase()
        if phase == "tr" and not self.pivot_state["tr_started"]:
            # the TR batch replaces the warm-up batch once; a pivot may grow it afterwards
            self.pivot_state["tr_started"] = True
            self.sampler.batch_size = min(self.main_batch, self.data.n_train)
        pivot = self._maybe_pivot() if (phase == "tr" and self.pivot is not None) else None
        batch_size = self.sampler.batch_size
        xb, yb = self._batch()
        if phase == "tr":
            loss, extra = self._tr_step(xb, yb)
            finite = math.isfinite(loss)
        else:
            optimizer = self.warmup_optimizer if phase == "warmup" else self.optimizer
            loss, finite = self._first_order_step(optimizer, xb, yb)
            lr = self.warmup.lr if phase == "warmup" else self.lr
            extra = {"lr": lr}
            if finite:
                self.counters["accepted"] += 1
        self.counters["steps"] += 1
        self.step += 1
        if not finite:
            self.stop_reason = "nonfinite_loss"
            self.stop_detail = (
                f"non-finite loss, gradient or update at step {self.step} (loss={loss!r}); the parameters "
                "keep their last finite values"
                + ("" if self._restored_to is None else f" (those step {self._restored_to + 1} started from)")
            )
        record = {"loss": loss, "batch_size": batch_size, "phase": phase, **extra}
        if pivot is not None:
            record["pivot"] = pivot
        return record

    def _limit_reached(self) -> str | None:
        c = self.config
        if self.stop_event is not None and self.stop_event.is_set():
            return "stopped"
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        if c.max_epochs is not None and self.sampler.epochs >= c.max_epochs:
            return "max_epochs"
        if c.max_seconds is not None and self.clock.elapsed >= c.max_seconds:
            return "max_seconds"
        used = self.counters["backward"] + self.counters["hvp"]
        if c.max_backprops is not None and used >= c.max_backprops:
            return "max_backprops"
        return None

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
        if self.stop_reason != "nonfinite_loss" and self._snapshot_step is not None:
            self._recover()  # the last first-order update is not followed by a loss check
            if self._restored_to is not None:
                self.stop_reason = "nonfinite_loss"
                self.stop_detail = (
                    f"non-finite parameters after the update of step {self.step}; the parameters keep "
                    f"their last finite values (those step {self._restored_to + 1} started from)"
                )
        if not self.evals or self.evals[-1]["step"] != self.step:
            self._eval()
        summary = self._summary()
        if self.writer is not None:
            self._checkpoint()
            self.writer.write_summary(summary)
            self.writer.close()
        if self.is_main:
            _dispatch(self.callbacks, "end", {"event": "end", **summary})
        return RunResult(self.config, self.steps, self.evals, summary, self.model, self.run_dir)

    def _summary(self) -> dict[str, Any]:
        last = self.evals[-1]
        epochs = self.sampler.epochs
        summary = {
            **self._progress(),
            "method": self.config.method,
            "label": self.config.method if self.lr is None else f"{self.config.method} (lr={self.lr:g})",
            "preset": self.config.preset,
            "lr": self.lr,
            "batch_size": self.main_batch,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "accepted": self.counters["accepted"],
            "train_loss": last["train_loss"],
            "train_acc": last["train_acc"],
            "test_loss": last["test_loss"],
            "test_acc": last["test_acc"],
            "seconds_per_epoch": self.clock.elapsed / epochs if epochs > 0 else None,
            "parameters": count_parameters(self.model),
            "resumed_from_step": self.resumed_from,
            "pivot_evaluations": self.pivot_state["evals"],
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
        }
        return summary


# More threads than this are refused: torch starting 100000 OpenMP threads exhausts the process limit
# and crashes (SIGSEGV); oversubscribing the cores never speeds a step up.
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


def resolve_num_threads(
    requested: int | None, *, cores: int | None = None, load: float | None = None, current: int | None = None
) -> int:
    """The torch CPU thread count a run uses: ``requested`` if given, else "auto".

    Auto keeps torch's current count (``current``, default ``torch.get_num_threads()``, which honours
    ``OMP_NUM_THREADS`` and any earlier ``torch.set_num_threads``) but never more than the cores the
    1-minute load average leaves free: ``max(1, min(current, round(cores - load)))``. Busy-waiting
    OpenMP threads on cores that other processes hold made 30 steps of ``etr train`` take 11.4 s instead
    of 0.10 s with one thread on a loaded 2-core machine; with the cores idle, auto is torch's default.
    ``cores`` defaults to the CPUs this process may run on, ``load`` to ``os.getloadavg()[0]`` (0 where
    the platform has none).
    """
    if requested is not None:
        return check_int("num_threads", requested, minimum=1, maximum=MAX_THREADS)
    if current is None:
        current = torch.get_num_threads()
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(int(current), round(cores - load)))


class _Threads:
    """Sets the run's thread count (:func:`resolve_num_threads`) and restores the previous one."""

    def __init__(self, n: int | None) -> None:
        self.before = torch.get_num_threads()
        self.n = resolve_num_threads(n, current=self.before)

    def __enter__(self) -> None:
        if self.n != self.before:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n != self.before:
            torch.set_num_threads(self.before)


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
        from etr_core import distributed as etr_dist

        etr_dist.setup()
    with _Threads(config.num_threads):
        trainer = _Trainer(config, callbacks, stop_event, run_dir, resume, data)
        try:
            return trainer.run()
        finally:
            if trainer.writer is not None:
                trainer.writer.close()


def dataset_for(config: TrainConfig) -> Dataset:
    """The dataset a run trains on (reconstruction targets for autoencoders)."""
    data = load_dataset(config.dataset, config.data_root, seed=config.seed, **config.data_options)
    return data.as_autoencoder() if is_autoencoder(config.model) else data


def copy_config(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A validated copy of ``config`` with ``changes``."""
    return dataclasses.replace(copy.deepcopy(config), **changes)
