"""`etr reproduce`: the paper's protocols (seeds, budgets, networks), tables, and resuming after a kill."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from etr_core.cli import main
from etr_core.reproduce import ReproduceRequest, reproduce
from etr_core.reproduce.protocol import problems_for
from etr_core.reproduce.runner import RunOptions, config_for, run_folder, run_job
from etr_core.reproduce.standin import STANDIN_LABEL, is_standin, write_cifar10_standin
from etr_core.results import load_run
from etr_core.training import train


def test_paper_protocol_is_ten_seeds_and_the_papers_networks():
    problems = problems_for("fig4", "fashion_mnist")
    assert [p.model for p in problems] == ["mlp_paper", "autoencoder", "resnet18"]
    assert all(p.seeds == tuple(range(10)) and p.max_train is None and not p.quick for p in problems)
    cifar = {p.network: p.model for p in problems_for("fig3", "cifar10")}
    assert cifar == {"mlp": "mlp_cifar", "autoencoder": "autoencoder_conv", "resnet18": "resnet18"}


def test_quick_protocol_is_three_seeds_small_budgets_and_no_resnet():
    problems = problems_for("fig3", "fashion_mnist", quick=True)
    assert [p.network for p in problems] == ["mlp", "autoencoder"]
    assert all(p.seeds == (0, 1, 2) and p.quick and p.budget <= 5000 for p in problems)
    custom = problems_for("fig3", "fashion_mnist", quick=True, seeds=5, budget=123, networks=("mlp",))
    assert custom[0].seeds == tuple(range(5)) and custom[0].budget == 123


@pytest.mark.parametrize(
    ("figure", "dataset", "networks", "match"),
    [
        ("fig11", "fashion_mnist", ("mlp",), "network"),  # reconstructions need an autoencoder
        ("fig3", "mnist", ("resnet18",), "no resnet18 on mnist"),
        ("fig6", "cifar10", None, "dataset"),
        ("fig3", "imagenet", None, "dataset"),
        ("fig5", "digits", None, "figure"),
    ],
)
def test_combinations_the_paper_does_not_have_are_errors(figure, dataset, networks, match):
    with pytest.raises(ValueError, match=match):
        problems_for(figure, dataset, networks=networks)


def test_cli_rejects_them_in_one_line_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "fig11", "--dataset", "digits", "--networks", "mlp", "--out", "unused"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "fig11" in err[-1] and "network" in err[-1] and "Traceback" not in "".join(err)


def test_cifar10_standin_is_loadable_and_labelled(tmp_path):
    from etr_core.data import load_dataset

    write_cifar10_standin(tmp_path, n_train=50, n_test=10)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_x.shape == (50, 3, 32, 32) and data.test_x.shape == (10, 3, 32, 32)
    assert 0.0 <= float(data.train_x.min()) and float(data.train_x.max()) <= 1.0
    assert set(data.train_y.tolist()) <= set(range(10))
    assert is_standin(tmp_path) and "not CIFAR-10" in STANDIN_LABEL
    real = tmp_path / "real"
    (real / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (real / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(b"")
    with pytest.raises(ValueError, match="real CIFAR-10"):
        write_cifar10_standin(real)


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_fig3_on_digits_writes_runs_figure_and_table(tmp_path):
    request = ReproduceRequest(
        "fig3",
        dataset="digits",
        seeds=2,
        budget=40,
        networks=("mlp",),
        out=str(tmp_path),
        progress=False,
        device="cpu",
        png=False,
    )
    result = reproduce(request)
    runs_root = tmp_path / "runs" / "digits-mlp_small"
    for method in ("TR_uni", "TR_ada", "TR_rms"):
        for seed in (0, 1):
            summary = json.loads((runs_root / method / f"seed{seed}" / "summary.json").read_text())
            assert summary["stop_reason"] == "max_backprops" and summary["backprops"] >= 40
    rows = _table_rows((tmp_path / "fig3" / "table.md").read_text())
    assert set(rows) == {"TR_uni", "TR_ada", "TR_rms"} and all(r[1] == "2" for r in rows.values())
    # the table's mean final loss is the mean over the run folders' own summaries
    losses = [load_run(runs_root / "TR_rms" / f"seed{s}").summary["train_loss"] for s in (0, 1)]
    assert float(rows["TR_rms"][2].split(" ")[0]) == pytest.approx(sum(losses) / 2, rel=1e-3)
    assert (tmp_path / "fig3" / "digits-mlp_small_backprops.html").exists()
    assert "TR_rms / TR_uni" in result.markdown


class _KillAt:
    """Raises KeyboardInterrupt at a step, as a kill between two checkpoints would end a run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, record):
        if record["step"] == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    problem = problems_for("fig4", "digits", seeds=1, budget=120, networks=("mlp",))[0]
    options = RunOptions(tmp_path, device="cpu", progress=False)
    cfg = config_for(problem, "TR_rms", 0, None, options)
    folder = run_folder(tmp_path, "TR_rms", None, 0)
    kill_at = cfg.checkpoint_every + 2
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, folder, progress=lambda c, d: _KillAt(kill_at))
    assert (folder / "checkpoint.pt").exists() and not (folder / "summary.json").exists()
    assert run_job(cfg, folder) is True  # resumed
    resumed = load_run(folder).summary
    assert resumed["resumed_from_step"] == cfg.checkpoint_every
    reference = train(cfg).summary  # the same configuration without a kill, no run folder
    assert resumed["step"] == reference["step"] and resumed["backprops"] == reference["backprops"]
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    before = os.path.getmtime(folder / "summary.json")
    assert run_job(cfg, folder) is False  # finished: skipped
    assert os.path.getmtime(folder / "summary.json") == before


@pytest.mark.slow
def test_rerunning_a_figure_skips_finished_runs(tmp_path):
    request = ReproduceRequest(
        "fig4",
        dataset="digits",
        seeds=1,
        budget=30,
        networks=("mlp",),
        out=str(tmp_path),
        progress=False,
        device="cpu",
        png=False,
        methods=("TR_rms", "Adam"),
    )
    reproduce(request)
    summaries = sorted((tmp_path / "runs").rglob("summary.json"))
    assert len(summaries) == 1 + 1 + 6  # TR_rms, Adam at its chosen step size, Adam's step-size grid
    stamps = [os.path.getmtime(p) for p in summaries]
    text = reproduce(request).markdown
    assert [os.path.getmtime(p) for p in summaries] == stamps
    chosen = json.loads((tmp_path / "runs" / "digits-mlp_small" / "step_sizes.json").read_text())
    assert set(chosen) == {"Adam@30"}
    for method in ("Adam",):
        entry = chosen[f"{method}@30"]
        assert entry["chosen"] == float(min(entry["scores"], key=entry["scores"].get))
        assert re.search(rf"\| {method} \(lr={entry['chosen']:g}\) \| 1 \|", text)


def _real_data_root() -> Path | None:
    from etr_core.data import default_root

    root = default_root()
    return root if (root / "fashion_mnist").is_dir() or (root / "mnist").is_dir() else None


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
@pytest.mark.parametrize(("model", "method"), [("mlp_paper", "TR_rms"), ("autoencoder", "TR_uni")])
def test_real_data_trains_the_papers_networks_for_a_few_steps(dataset, model, method):
    root = _real_data_root()
    if root is None or not (root / dataset).is_dir():
        pytest.skip(f"{dataset} files absent (set ETR_DATA to the data folder)")
    from etr_core.training import TrainConfig

    cfg = TrainConfig(
        dataset=dataset,
        model=model,
        method=method,
        max_steps=3,
        eval_every=100,
        device="cpu",
        data_root=str(root),
        data_options={"max_train": 1024, "max_test": 256},
    )
    result = train(cfg)
    assert result.summary["stop_reason"] == "max_steps"
    assert result.summary["parameters"] == (101_770 if model == "mlp_paper" else 2_837_314)
    assert result.evals[-1]["train_loss"] < result.evals[0]["train_loss"] + 1e-6


def test_methods_outside_the_figure_are_rejected():
    with pytest.raises(ValueError, match="methods of fig3"):
        reproduce(ReproduceRequest("fig3", dataset="digits", methods=("Adam",), out="unused"))


@pytest.mark.slow
def test_hessian_figures_run_on_the_requested_thread_count(tmp_path, monkeypatch):
    import torch

    import etr_core.hessian_experiment as experiment

    seen = []
    real = experiment.run_hessian_experiment

    def spy(config, progress=None):
        seen.append(torch.get_num_threads())
        return real(dataclasses.replace(config, archs=("8",), steps=4), progress)

    monkeypatch.setattr(experiment, "run_hessian_experiment", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        request = ReproduceRequest(
            "fig6", dataset="digits", seeds=1, threads=1, out=str(tmp_path), device="cpu", png=False
        )
        text = reproduce(request).markdown
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]  # --threads 1 while the Hessians are computed
    assert after == 2  # and the caller's count afterwards
    assert "| 8 (d = 610) |" in text
