"""The authors' published parameter files as :class:`~etr_core.config.TRConfig` presets (labelled, not
the paper's Table 1): :func:`authors` for a dataset, model family and ellipsoid."""

from __future__ import annotations

from typing import Any

from etr_core._validation import check_choice
from etr_core.config.tr_config import ELLIPSOIDS, PivotSpec, TRConfig, WarmupSpec

# --- the authors' parameter files ------------------------------------------------------------------
# One row per (dataset, model): kind-independent values, then per-kind (uniform, adagrad, rms) tuples.
# Parse errors of the shipped files (invalid JSON, missing or misspelt epsilon keys) are fixed here.

AUTHORS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
AUTHORS_MODELS = ("fc", "conv", "autoencoder")

_DATASET_ALIASES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar": "cifar10",
}
_MODEL_ALIASES = {
    "fc": "fc",
    "mlp": "fc",
    "mlp_paper": "fc",
    "mlp_cifar": "fc",
    "conv": "conv",
    "autoencoder": "autoencoder",
    "ae": "autoencoder",
    "autoenc": "autoencoder",
}

_SGD0 = WarmupSpec(0, "SGD", 0.005)
_FC_PIVOT = PivotSpec(10, 1.05, 0.2)

# fields: batch, radius (uni, ada, rms), max_radius, eta1, eta2 (uni, ada, rms), gamma1 (uni, ada, rms),
#         gamma2 (uni, ada, rms), eps, warmup, pivot, l2_alpha
_AUTHORS_TABLE: dict[tuple[str, str], dict[str, Any]] = {
    ("mnist", "fc"): dict(
        batch=512,
        radius=(0.05, 0.05, 1e-4),
        max_radius=10.0,
        eta1=0.01,
        eta2=(0.95, 0.95, 0.95),
        gamma1=(1.1, 1.1, 1.01),
        gamma2=(1.5, 1.25, 1.75),
        eps=1e-10,
        warmup=_SGD0,
        pivot=_FC_PIVOT,
        l2_alpha=1e-4,
    ),
    ("mnist", "conv"): dict(
        batch=2048,
        radius=(1e-4, 1e-4, 1e-4),
        max_radius=10.0,
        eta1=1e-5,
        eta2=(0.9, 0.9, 0.9),
        gamma1=(1.1, 1.1, 1.1),
        gamma2=(1.1, 1.1, 1.5),
        eps=1e-16,
        warmup=WarmupSpec(1, "RMSprop", 5e-4),
        pivot=PivotSpec(5, 1.025, 0.1),
        l2_alpha=1e-4,
    ),
    ("mnist", "autoencoder"): dict(
        batch=128,
        radius=(0.01, 0.01, 0.01),
        max_radius=5.0,
        eta1=1e-7,
        eta2=(0.8, 0.8, 0.8),
        gamma1=(1.25, 1.25, 1.25),
        gamma2=(1.1, 1.5, 1.1),
        eps=1e-8,
        warmup=WarmupSpec(1, "RMSprop", 0.01),
        pivot=PivotSpec(5, 1.025, 0.05),
        l2_alpha=0.0,
    ),
    ("fashion_mnist", "fc"): dict(
        batch=512,
        radius=(0.05, 0.05, 1e-4),
        max_radius=10.0,
        eta1=0.01,
        eta2=(0.8, 0.95, 0.95),
        gamma1=(1.1, 1.1, 1.1),
        gamma2=(1.25, 1.5, 1.75),
        eps=1e-10,
        warmup=_SGD0,
        pivot=_FC_PIVOT,
        l2_alpha=1e-4,
    ),
    ("fashion_mnist", "conv"): dict(
        batch=4096,
        radius=(1e-4, 1e-4, 1e-4),
        max_radius=10.0,
        eta1=1e-5,
        eta2=(0.95, 0.95, 0.95),
        gamma1=(1.1, 1.1, 1.1),
        gamma2=(1.1, 1.1, 1.5),
        eps=1e-16,
        warmup=WarmupSpec(1, "RMSprop", 5e-4),
        pivot=PivotSpec(5, 1.025, 0.1),
        l2_alpha=1e-4,
    ),
    ("fashion_mnist", "autoencoder"): dict(
        batch=512,
        radius=(1e-3, 1e-3, 1e-3),
        max_radius=10.0,
        eta1=1e-5,
        eta2=(0.9, 0.9, 0.9),
        gamma1=(1.1, 1.1, 1.1),
        gamma2=(1.25, 1.25, 1.25),
        eps=1e-10,
        warmup=WarmupSpec(1, "Adagrad", 0.01),
        pivot=PivotSpec(5, 1.075, 0.05),
        l2_alpha=0.0,
    ),
    ("cifar10", "fc"): dict(
        batch=512,
        radius=(0.05, 0.05, 1e-4),
        max_radius=10.0,
        eta1=0.01,
        eta2=(0.95, 0.95, 0.95),
        gamma1=(1.1, 1.1, 1.1),
        gamma2=(1.25, 1.25, 1.75),
        eps=1e-10,
        warmup=_SGD0,
        pivot=_FC_PIVOT,
        l2_alpha=1e-4,
    ),
    ("cifar10", "conv"): dict(
        batch=512,
        radius=(0.005, 0.005, 1e-4),
        max_radius=10.0,
        eta1=0.01,
        eta2=(0.95, 0.95, 0.95),
        gamma1=(1.1, 1.1, 1.1),
        gamma2=(1.25, 1.25, 1.25),
        eps=1e-10,
        warmup=WarmupSpec(20, "Adagrad", 0.01),
        pivot=PivotSpec(10, 1.05, 0.1),
        l2_alpha=1e-4,
    ),
}


AUTHORS_PRESETS = tuple(_AUTHORS_TABLE)


def authors(dataset: str, model: str, kind: str = "rms") -> TRConfig:
    """The authors' published choices for ``dataset``/``model``/``kind`` (labelled, not the paper's).

    Differences from Table 1 that this preset reproduces: per-file Delta_0, eta1, eta2, gamma1,
    gamma2, batch size and epsilon; the relative model-decrease CG stop rule (on in every shipped
    TR file); the decaying RMS epsilon (``eps_mode="authors"``); K = 50, kappa = 0.1, beta = 0.8;
    radius growth on every very successful step; the ellipsoid refreshed every iteration. The
    warm-up, pivot and L2 numbers are attached as data. One deliberate difference remains: a tiny
    predicted decrease (< 1e-15) is *rejected* here, where their code set rho = 1 and grew the radius.
    """
    check_choice("dataset", dataset, tuple(_DATASET_ALIASES))
    check_choice("model", model, tuple(_MODEL_ALIASES))
    check_choice("kind", kind, ELLIPSOIDS)
    key = (_DATASET_ALIASES[dataset], _MODEL_ALIASES[model])
    if key not in _AUTHORS_TABLE:
        available = ", ".join(f"{d}/{m}" for d, m in AUTHORS_PRESETS)
        raise ValueError(
            f"the authors published no TR files for dataset/model {key[0]}/{key[1]}; available: {available}"
        )
    row = _AUTHORS_TABLE[key]
    i = ELLIPSOIDS.index(kind)
    return TRConfig(
        radius=row["radius"][i],
        max_radius=row["max_radius"],
        eta1=row["eta1"],
        eta2=row["eta2"][i],
        gamma1=row["gamma1"][i],
        gamma2=row["gamma2"][i],
        krylov_tol=0.1,
        theta=0.5,
        max_krylov=50,
        batch_size=row["batch"],
        ellipsoid=kind,
        solver="cg",
        stop_rule="model_decrease",
        residual_norm="l2",
        root="positive",
        grow_only_on_boundary=False,
        ellipsoid_update="every_iteration",
        beta=0.8,
        eps=row["eps"],
        eps_mode="authors",
        tiny_pred=1e-15,
        warmup=row["warmup"],
        pivot=row["pivot"],
        l2_alpha=row["l2_alpha"],
        label=f"authors' code ({key[0]}/{key[1]}/{kind})",
    )
