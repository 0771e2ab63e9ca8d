"""``etr reproduce FIGURE``: regenerate one of the paper's experimental figures from scratch.

Figures (paper section 5 and appendices): ``fig2`` and ``fig6`` (diagonal mass of the Hessian over
RMSprop training, CIFAR-10 and MNIST), ``fig3`` (TR_uni vs TR_ada vs TR_rms over backprops, 99%
accuracy marker), ``fig4`` / ``fig9`` / ``fig10`` (TR vs SGD, Adagrad, RMSprop, Adam at batch 32
with a grid-searched step size, over backprops / epochs / wall-clock seconds) and ``fig11``
(autoencoder reconstructions). Each writes under ``out``: one run folder per method and seed, the
figure (HTML, and PNG when kaleido finds a browser) and ``table.md``; rerunning the same command
after a kill skips finished runs and resumes partial ones from their checkpoints.

CIFAR-10 is read from the data root when present; otherwise a generated stand-in is written under
``out/data`` and every title and table says so (:mod:`etr_core.reproduce.standin`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etr_core.reproduce.pool import run_jobs
from etr_core.reproduce.protocol import FIGURES, NETWORKS, Problem, problems_for
from etr_core.reproduce.runner import BackpropProgress, RunOptions, choose_step_sizes, method_jobs

__all__ = ["FIGURES", "NETWORKS", "ReproduceRequest", "ReproduceResult", "reproduce"]

_DATA_LABELS = {
    "fashion_mnist": "Fashion-MNIST (reconstructed split)",
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "digits": "scikit-learn 8x8 digits (classroom stand-in)",
}


@dataclass(frozen=True)
class ReproduceRequest:
    """What ``etr reproduce`` was asked: figure, dataset, protocol overrides, where and how to run."""

    figure: str
    dataset: str | None = None  # None: the figure's first dataset
    quick: bool = False
    seeds: int | None = None
    budget: int | None = None
    networks: tuple[str, ...] | None = None
    data_root: str | None = None
    device: str = "auto"
    out: str = "reproduce"
    progress: bool = True
    threads: int | None = None
    methods: tuple[str, ...] | None = None  # None: every method the figure draws
    png: bool = True  # PNG besides HTML (needs kaleido and a Chrome/Chromium)
    jobs: int = 1  # runs trained at once, each in its own process (etr_core.reproduce.pool)


@dataclass
class ReproduceResult:
    """Files written and the markdown report (also in ``<out>/<figure>/table.md``)."""

    figure: str
    folder: Path
    markdown: str
    files: list[Path] = field(default_factory=list)
    data_label: str = ""


def _data(request: ReproduceRequest, dataset: str, out: Path) -> tuple[str | None, str]:
    """Data root and label; CIFAR-10 falls back to a labelled generated stand-in."""
    from etr_core.data import load_dataset
    from etr_core.reproduce.standin import STANDIN_LABEL, write_cifar10_standin

    if dataset == "digits":
        return request.data_root, _DATA_LABELS["digits"]
    try:
        load_dataset(dataset, request.data_root, max_train=1, max_test=1)
    except FileNotFoundError:
        if dataset != "cifar10":
            raise
        root = out / "data"
        n_train, n_test = (10_000, 2_000) if request.quick else (50_000, 10_000)
        write_cifar10_standin(root, n_train, n_test)
        return str(root), STANDIN_LABEL
    label = _DATA_LABELS[dataset]
    return request.data_root, label


def _train_problem(problem: Problem, methods: tuple[str, ...], options: RunOptions, progress) -> list[Any]:
    from etr_core.results import load_run

    step_sizes = choose_step_sizes(problem, methods, options, progress)
    jobs = method_jobs(problem, methods, step_sizes, options)
    described = [
        (cfg, folder, f"[{i}/{len(jobs)}] {problem.slug}/{folder.parent.name}/{folder.name}")
        for i, (cfg, folder) in enumerate(jobs, start=1)
    ]
    run_jobs(described, options.jobs, progress, show=options.progress)
    return [load_run(folder) for _, folder in jobs]


def reproduce(request: ReproduceRequest) -> ReproduceResult:
    """Run figure ``request.figure`` under the paper's (or the quick) protocol and write its results.

    Raises ``ValueError`` for a figure/dataset/network combination the paper does not have and
    ``FileNotFoundError`` when MNIST / Fashion-MNIST files are missing under the data root.
    """
    from etr_core.reproduce import figures

    if request.figure not in FIGURES:
        raise ValueError(f"figure must be one of {', '.join(FIGURES)}, got {request.figure!r}")
    spec = FIGURES[request.figure]
    if request.methods is not None:
        unknown = [m for m in request.methods if m not in spec.methods]
        if unknown or not request.methods:
            raise ValueError(
                f"methods of {request.figure} are {', '.join(spec.methods)}; got {list(request.methods)!r}"
            )
        spec = dataclasses.replace(spec, methods=tuple(m for m in spec.methods if m in request.methods))
    dataset = request.dataset or spec.datasets[0]
    problems = problems_for(
        request.figure,
        dataset,
        quick=request.quick,
        seeds=request.seeds,
        budget=request.budget,
        networks=request.networks,
    )
    out = Path(request.out)
    data_root, data_label = _data(request, dataset, out)
    request = dataclasses.replace(request, dataset=dataset, data_root=data_root)
    folder = out / request.figure
    folder.mkdir(parents=True, exist_ok=True)
    if spec.kind == "hessian":
        return figures.hessian_figure(request, spec, folder, data_label)
    options = RunOptions(
        out / "runs", data_root, request.device, request.threads, request.progress, jobs=request.jobs
    )
    progress = BackpropProgress if request.progress else None
    runs = {p: _train_problem(p, spec.methods, options, progress) for p in problems}
    if spec.kind == "reconstructions":
        return figures.reconstruction_figure(request, spec, folder, data_label, runs)
    return figures.curves_figure(request, spec, folder, data_label, runs)
