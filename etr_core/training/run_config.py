"""What one training run is: the methods (``METHODS``), :class:`TrainConfig` and the
:class:`etr_core.config.TRConfig` a TR run resolves to (paper section 5, Table 1).

Everything here is checked on construction, before any work starts: a bad field raises
``ValueError``/``TypeError`` naming the field, its value and the allowed range.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from etr_core import devices
from etr_core._validation import check_choice, check_int, check_positive
from etr_core.data import DATASET_NAMES, IMAGE_DATASETS, MAX_SEED, Dataset, load_dataset
from etr_core.models import MODEL_NAMES, check_model_shape, is_autoencoder, paper_tr_batch_size
from etr_core.training.threads import MAX_THREADS


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
            from etr_core.training.method_settings import settings_problem

            problem = settings_problem(self.method, self.preset, self.tr_options)
            if problem:  # settings the method would not run (ARC: trust-region values) are refused
                raise ValueError(problem)
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


def dataset_for(config: TrainConfig) -> Dataset:
    """The dataset a run trains on (reconstruction targets for autoencoders)."""
    data = load_dataset(config.dataset, config.data_root, seed=config.seed, **config.data_options)
    return data.as_autoencoder() if is_autoencoder(config.model) else data


def copy_config(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A validated copy of ``config`` with ``changes``."""
    return dataclasses.replace(copy.deepcopy(config), **changes)
