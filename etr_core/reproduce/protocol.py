"""The paper's experimental protocols (section 5, appendix C) as data: figures, problems, budgets.

A *problem* is a (dataset, network) pair of appendix C, B.1; a *figure* draws one or more problems.
Figs. 3, 4, 9 and 10 share their training runs (the TR methods of Fig. 3 are the TR curves of
Figs. 4, 9 and 10, which add the first-order methods and change the x axis); Fig. 11 shows the
reconstructions of the autoencoder runs; Figs. 2 and 6 are the Hessian experiment.

Two protocols:

* paper (default): 10 seeds, the full training set, budgets in backprops that cover the authors'
  iteration limits (their environment files stop TR after 20,000 iterations, 50,000 for
  autoencoders; the paper does not print its budgets) -- meant for a GPU;
* quick (``--quick``): 3 seeds, a subset of the training set for the expensive networks, budgets of
  a few thousand backprops -- minutes per problem on two CPU cores. Quick results are labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etr_core._validation import check_choice, check_int

__all__ = [
    "DATASETS",
    "FIGURES",
    "FO_METHODS",
    "MAX_SEEDS",
    "NETWORKS",
    "TR_METHODS",
    "FigureSpec",
    "Problem",
    "problems_for",
]

TR_METHODS = ("TR_uni", "TR_ada", "TR_rms")
FO_METHODS = ("SGD", "Adagrad", "RMSprop", "Adam")
DATASETS = ("fashion_mnist", "mnist", "cifar10", "digits")
NETWORKS = ("mlp", "autoencoder", "resnet18")
MAX_SEEDS = 1000  # most seeds per problem (the paper: 10); checked before a range of seeds is built

# The paper's network per (dataset, network kind): appendix C, B.1. digits is the bundled classroom
# stand-in (small networks, seconds per run), used by the tests and offered for a first look.
PAPER_MODELS: dict[tuple[str, str], str] = {
    ("fashion_mnist", "mlp"): "mlp_paper",
    ("fashion_mnist", "autoencoder"): "autoencoder",
    ("fashion_mnist", "resnet18"): "resnet18",
    ("mnist", "mlp"): "mlp_paper",
    ("mnist", "autoencoder"): "autoencoder",
    ("cifar10", "mlp"): "mlp_cifar",
    ("cifar10", "autoencoder"): "autoencoder_conv",
    ("cifar10", "resnet18"): "resnet18",
    ("digits", "mlp"): "mlp_small",
    ("digits", "autoencoder"): "autoencoder_small",
}


@dataclass(frozen=True)
class FigureSpec:
    """One of the paper's experimental figures: what it shows and which runs it needs."""

    name: str
    title: str
    kind: str  # "curves" | "reconstructions" | "hessian"
    methods: tuple[str, ...] = ()
    x: str = "backprops"
    datasets: tuple[str, ...] = ("fashion_mnist", "cifar10", "mnist", "digits")
    networks: tuple[str, ...] = NETWORKS


FIGURES: dict[str, FigureSpec] = {
    "fig2": FigureSpec(
        "fig2",
        "Fig. 2: diagonal mass of the Hessian relative to a Wigner matrix, RMSprop training on CIFAR-10",
        "hessian",
        datasets=("cifar10", "digits"),
        networks=(),
    ),
    "fig3": FigureSpec(
        "fig3", "Fig. 3: TR_uni vs TR_ada vs TR_rms, log loss over backprops", "curves", TR_METHODS
    ),
    "fig4": FigureSpec(
        "fig4",
        "Fig. 4: TR methods vs first-order methods, log loss over backprops",
        "curves",
        TR_METHODS + FO_METHODS,
    ),
    "fig6": FigureSpec(
        "fig6",
        "Fig. 6: diagonal mass of the Hessian relative to a Wigner matrix, RMSprop training on MNIST",
        "hessian",
        datasets=("mnist", "fashion_mnist", "digits"),
        networks=(),
    ),
    "fig9": FigureSpec(
        "fig9",
        "Fig. 9: TR methods vs first-order methods, log loss over epochs",
        "curves",
        TR_METHODS + FO_METHODS,
        x="epoch",
    ),
    "fig10": FigureSpec(
        "fig10",
        "Fig. 10: TR methods vs first-order methods, log loss over wall-clock time",
        "curves",
        TR_METHODS + FO_METHODS,
        x="seconds",
    ),
    "fig11": FigureSpec(
        "fig11",
        "Fig. 11: autoencoder reconstructions per TR method",
        "reconstructions",
        TR_METHODS,
        networks=("autoencoder",),
    ),
}


@dataclass(frozen=True)
class Problem:
    """One (dataset, network) of a figure with its protocol: seeds, budget, data subset, evaluation."""

    dataset: str
    network: str
    model: str
    seeds: tuple[int, ...]
    budget: int  # backprops per run, every method
    max_train: int | None
    max_test: int | None
    evals: int  # full evaluations per run (about)
    tune_seeds: tuple[int, ...]
    lr_grid_size: int  # step sizes per first-order method (the grid's middle values when smaller)
    quick: bool
    loss_targets: tuple[float, ...] = field(default=())

    @property
    def slug(self) -> str:
        return f"{self.dataset}-{self.model}"

    @property
    def is_autoencoder(self) -> bool:
        return self.network == "autoencoder"


# Budgets in backprops (gradient backprops + Hessian-vector products), per network kind.
_PAPER_BUDGET = {"mlp": 100_000, "autoencoder": 200_000, "resnet18": 100_000}
_QUICK_BUDGET = {"mlp": 3_000, "autoencoder": 1_500, "resnet18": 200}
_DIGITS_BUDGET = {"mlp": 3_000, "autoencoder": 6_000}
# Quick protocol: the first N training / test examples (None: all of them).
_QUICK_DATA = {"mlp": (None, None), "autoencoder": (10_000, 2_000), "resnet18": (2_000, 500)}
# Training-loss targets reported besides 99% training accuracy. Autoencoders: the pixelwise BCE of
# the mean training image (the plateau) is 0.423 on digits, 0.491 on Fashion-MNIST and 0.263 on
# MNIST; the first target means "left the plateau", the second "clearly below it".
_LOSS_TARGETS = {
    ("digits", "mlp"): (0.1, 0.03),
    ("digits", "autoencoder"): (0.40, 0.35),
    ("fashion_mnist", "mlp"): (0.5, 0.4),
    ("mnist", "mlp"): (0.3, 0.1),
    ("fashion_mnist", "autoencoder"): (0.45, 0.40),
    ("mnist", "autoencoder"): (0.25, 0.20),
    ("cifar10", "mlp"): (1.8, 1.5),
    ("cifar10", "autoencoder"): (0.62, 0.60),
    ("cifar10", "resnet18"): (1.5, 1.0),
    ("fashion_mnist", "resnet18"): (0.4, 0.3),
}


def problems_for(
    figure: str,
    dataset: str,
    *,
    quick: bool = False,
    seeds: int | None = None,
    budget: int | None = None,
    networks: tuple[str, ...] | None = None,
) -> list[Problem]:
    """The problems figure ``figure`` draws on ``dataset`` under the paper or quick protocol.

    ``seeds`` (number of seeds 0..N-1), ``budget`` (backprops per run) and ``networks`` override the
    protocol. Combinations the paper does not have raise ``ValueError`` naming what exists.
    """
    check_choice("figure", figure, FIGURES)
    spec = FIGURES[figure]
    check_choice("dataset", dataset, spec.datasets)
    if seeds is not None:
        check_int("seeds", seeds, minimum=1, maximum=MAX_SEEDS)
    if budget is not None:
        check_int("budget", budget, minimum=1)
    if spec.kind == "hessian":
        return []
    default_nets = spec.networks
    if quick and networks is None:
        default_nets = tuple(n for n in spec.networks if n != "resnet18")  # ResNet18: GPU protocol only
    chosen = tuple(networks) if networks is not None else default_nets
    problems = []
    for net in chosen:
        check_choice("network", net, spec.networks)
        if (dataset, net) not in PAPER_MODELS:
            have = [n for (d, n) in PAPER_MODELS if d == dataset]
            raise ValueError(
                f"the paper has no {net} on {dataset}; networks for {dataset}: {', '.join(have)} "
                f"(choose with --networks)"
            )
        digits = dataset == "digits"
        default_budget = (_DIGITS_BUDGET if digits else _QUICK_BUDGET if quick else _PAPER_BUDGET)[net]
        max_train, max_test = _QUICK_DATA[net] if (quick and not digits) else (None, None)
        n_seeds = seeds if seeds is not None else (3 if (quick or digits) else 10)
        problems.append(
            Problem(
                dataset=dataset,
                network=net,
                model=PAPER_MODELS[(dataset, net)],
                seeds=tuple(range(n_seeds)),
                budget=budget if budget is not None else default_budget,
                max_train=max_train,
                max_test=max_test,
                evals=25,
                tune_seeds=(1000,) if (quick or digits) else (1000, 1001),
                lr_grid_size=3 if quick else 6,  # quick: the grid's middle three step sizes
                quick=quick,
                loss_targets=_LOSS_TARGETS.get((dataset, net), ()),
            )
        )
    return problems
