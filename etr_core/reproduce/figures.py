"""Turn finished runs into the paper's figures and tables (Figs. 2, 3, 4, 6, 9, 10, 11)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from etr_core.reproduce import ReproduceRequest, ReproduceResult
from etr_core.reproduce.protocol import FigureSpec, Problem
from etr_core.reproduce.report import curves_table, ratio_lines, write_curves
from etr_core.viz.training_plots import reconstruction_grid, static_export_available, write_figure

__all__ = ["curves_figure", "hessian_figure", "reconstruction_figure"]


def _device_used(preference: str) -> str:
    """The device runs asked for ``preference`` ("auto", "cpu", "cuda") train on: "cpu" or "cuda:0 (name)"."""
    from etr_core.devices import describe_device, device

    dev = device(preference)
    return describe_device(dev) if dev.type == "cuda" else dev.type


def _header(request: ReproduceRequest, spec: FigureSpec, data_label: str) -> list[str]:
    protocol = "quick (CPU-sized)" if request.quick else "paper"
    return [
        f"# {spec.title}",
        "",
        f"Data: {data_label}. Protocol: {protocol}. Device: {_device_used(request.device)}.",
        "",
    ]


def _problem_note(problem: Problem) -> str:
    subset = ""
    if problem.max_train is not None:
        subset = f", first {problem.max_train:,} training / {problem.max_test:,} test examples"
    return (
        f"Network `{problem.model}`, seeds {list(problem.seeds)}, budget {problem.budget:,} backprops per run"
        f"{subset}; TR: paper Table 1 (batch 512, 128 for ResNet18 on CIFAR-10); first-order: batch 32, "
        f"step size chosen on tuning seeds {list(problem.tune_seeds)}."
    )


def _step_size_lines(folder: Path, problem: Problem, methods: tuple[str, ...]) -> list[str]:
    path = folder / "step_sizes.json"
    if not path.exists():
        return []
    lines = ["", "Step-size grid (mean final training loss on the tuning seeds; chosen in bold):", ""]
    for key, entry in json.loads(path.read_text()).items():
        method, budget = key.split("@")
        if method not in methods or int(budget) != problem.budget:
            continue
        scores = ", ".join(
            (f"**{lr}: {v:.3g}**" if float(lr) == entry["chosen"] else f"{lr}: {v:.3g}")
            for lr, v in entry["scores"].items()
        )
        lines.append(f"- {method}: {scores}")
    return lines


def _finish(request: ReproduceRequest, folder: Path, lines: list[str], files: list[Path], label: str):
    if request.png and not any(p.suffix == ".png" for p in files):
        hint = (
            ""
            if static_export_available()
            else ": PNG export needs the kaleido package and a Chrome/Chromium"
        )
        lines += ["", f"(HTML figures only{hint}.)"]
    text = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(text)
    files.append(folder / "table.md")
    return ReproduceResult(request.figure, folder, text, files, label)


def curves_figure(
    request: ReproduceRequest, spec: FigureSpec, folder: Path, data_label: str, runs: dict[Problem, list[Any]]
) -> ReproduceResult:
    """Figs. 3, 4, 9, 10: loss curves per problem (mean and 95% band) and the table with intervals."""
    lines = _header(request, spec, data_label)
    files: list[Path] = []
    for problem, problem_runs in runs.items():
        lines += [f"## {problem.dataset} / {problem.network}", "", _problem_note(problem), ""]
        table, summary = curves_table(problem_runs, problem, spec.methods)
        lines.append(table)
        ratios = ratio_lines(summary, problem)
        if ratios:
            lines += ["", *ratios]
        lines += _step_size_lines(Path(request.out) / "runs" / problem.slug, problem, spec.methods)
        stem = folder / f"{problem.slug}_{spec.x}"
        files += write_curves(problem_runs, problem, spec.x, spec.title, stem, data_label, request.png)
        lines += ["", f"Figure: `{stem.name}.html`", ""]
    return _finish(request, folder, lines, files, data_label)


def _reconstructions(
    problem_runs: list[Any], n_images: int = 8
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from etr_core.models import build_model
    from etr_core.training import TrainConfig, dataset_for

    originals, recon = None, {}
    for run in problem_runs:
        if run.config.get("seed") != min(r.config.get("seed") for r in problem_runs) or run.label in recon:
            continue
        fields = {k: v for k, v in run.config.items() if k in TrainConfig.__dataclass_fields__}
        cfg = TrainConfig(**{**fields, "device": "cpu"})
        data = dataset_for(cfg)
        model = build_model(cfg.model, data.input_shape, data.num_classes, seed=cfg.seed)
        state = torch.load(run.path / "checkpoint.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        originals = data.test_x[:n_images]
        recon[run.label] = model.reconstruct(originals.to(next(model.parameters()).dtype))
    return originals, recon


def reconstruction_figure(
    request: ReproduceRequest, spec: FigureSpec, folder: Path, data_label: str, runs: dict[Problem, list[Any]]
) -> ReproduceResult:
    """Fig. 11: test images and each TR method's reconstruction after its budget (first seed)."""
    lines = _header(request, spec, data_label)
    files: list[Path] = []
    for problem, problem_runs in runs.items():
        originals, recon = _reconstructions(problem_runs)
        title = f"{spec.title}<br><sup>{data_label}, {problem.model}, {problem.budget:,} backprops</sup>"
        stem = folder / f"{problem.slug}_reconstructions"
        files += write_figure(reconstruction_grid(originals, recon, title=title), stem, png=request.png)
        table, _ = curves_table(problem_runs, problem, spec.methods)
        lines += [
            f"## {problem.dataset} / {problem.model}",
            "",
            _problem_note(problem),
            "",
            table,
            "",
            f"Figure: `{stem.name}.html`",
            "",
        ]
    return _finish(request, folder, lines, files, data_label)


def hessian_figure(
    request: ReproduceRequest, spec: FigureSpec, folder: Path, data_label: str
) -> ReproduceResult:
    """Figs. 2 and 6: the Hessian experiment's diagonal mass vs the Wigner baseline, with a table."""
    from etr_core.hessian_experiment import HessianExperimentConfig, run_hessian_experiment, write_results
    from etr_core.viz.hessian_plots import phase_bars

    quick = request.quick or request.dataset == "digits"
    config = HessianExperimentConfig(
        dataset=request.dataset,
        seeds=request.seeds or (3 if quick else 10),
        steps=100 if quick else 300,
        max_train=2_000 if quick else 10_000,
        device=request.device,
        data_root=request.data_root,
    )
    results = folder / "results.json"
    if results.exists() and json.loads(results.read_text()).get("config", {}).get("seeds") == config.seeds:
        summary = json.loads(results.read_text())["summary"]  # finished earlier: reuse
    else:
        from etr_core.training.threads import _Threads

        with _Threads(request.threads):  # --threads reaches the Hessians too (idle OpenMP threads spin)
            result = run_hessian_experiment(config)
        write_results(result, folder)
        summary = result.summary
    files = write_figure(phase_bars(summary), folder / "diagonal_mass", png=request.png)
    lines = _header(request, spec, data_label)
    lines += [
        f"tanh MLPs {', '.join(config.resolved_archs)} (hidden widths), {config.seeds} seeds, "
        f"{config.steps} RMSprop steps, exact Hessians on {config.batch} examples.",
        "",
        "| network | phase | delta_H | delta_W (1/d) | ratio delta_H / delta_W |",
        "|---|---|---|---|---|",
    ]
    for entry in summary:

        def cell(key: str, entry=entry) -> str:
            value, low = entry.get(f"{key}_mean"), entry.get(f"{key}_ci_low")
            if not isinstance(value, float) or not math.isfinite(value):
                return "-"
            if isinstance(low, float) and math.isfinite(low):
                return f"{value:.4g} ± {value - low:.2g}"
            return f"{value:.4g}"

        lines.append(
            f"| {entry.get('arch')} (d = {entry.get('d')}) | {entry.get('phase')} | {cell('delta_h')} | "
            f"{cell('delta_w_equal')} | {cell('ratio_equal')} |"
        )
    return _finish(request, folder, lines, files, data_label)
