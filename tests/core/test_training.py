"""The training loop: every method runs, counters are exact, faults and stops are clean."""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

from etr_core.data import BatchSampler, load_dataset
from etr_core.models import build_model
from etr_core.training import METHODS, TrainConfig, train

FAST = {"device": "cpu", "eval_every": 2, "data_options": {"max_train": 256}}


def _cfg(**kwargs) -> TrainConfig:
    options = {**FAST, **kwargs}
    if METHODS[options.get("method", "TR_rms")].family == "tr":
        options.setdefault("batch_size", 128)
    return TrainConfig(**options)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_and_counts_exactly(method):
    result = train(_cfg(method=method, max_steps=3))
    assert result.stop_reason == "max_steps" and len(result.steps) == 3
    last = result.steps[-1]
    if METHODS[method].family == "tr":
        # one gradient backprop per step, HVPs as reported by each step's own record
        assert last["backward"] == 3
        assert last["hvp"] == sum(r["hvp_calls"] + r["other_hvp_calls"] for r in result.steps)
        # one forward at w, plus one at the trial point whenever the step was evaluated
        trials = sum(1 for r in result.steps if not math.isnan(r["trial_loss"]))
        assert last["forward"] == 3 + trials
        assert {"rho", "radius", "accepted", "cg_iterations", "exit"} <= set(last)
    else:
        assert (last["forward"], last["backward"], last["hvp"]) == (3, 3, 0)
        assert last["lr"] == METHODS[method].default_lr
    assert last["backprops"] == last["backward"] + last["hvp"]
    batch = 128 if METHODS[method].family == "tr" else 32
    assert last["samples"] == 3 * batch and last["epoch"] == pytest.approx(3 * batch / 256)
    assert last["seconds"] > 0
    assert [e["step"] for e in result.evals] == [0, 2, 3]


def test_tr_counters_agree_with_the_optimizer_over_a_longer_run():
    result = train(_cfg(method="TR_uni", max_steps=6))
    assert result.summary["backward"] == 6
    assert result.summary["hvp"] == sum(r["hvp_calls"] for r in result.steps)
    assert result.summary["accepted"] == sum(bool(r["accepted"]) for r in result.steps)


def test_first_order_loss_sequence_matches_a_hand_written_loop():
    """Oracle: a plain torch loop with the same seeds reproduces every logged batch loss."""
    result = train(_cfg(method="SGD", lr=0.05, max_steps=5))
    ds = load_dataset("digits", seed=0, max_train=256)
    model = build_model("mlp_small", ds.input_shape, ds.num_classes, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sampler = BatchSampler(ds.n_train, 32, seed=0)
    expected = []
    for _ in range(5):
        idx = sampler.next_batch()
        opt.zero_grad()
        loss = F.cross_entropy(model(ds.train_x[idx]), ds.train_y[idx])
        loss.backward()
        opt.step()
        expected.append(float(loss.detach().double()))
    assert result.losses == expected


def test_final_eval_is_the_full_data_loss_of_the_returned_model():
    result = train(_cfg(method="Adam", max_steps=4))
    ds = load_dataset("digits", seed=0, max_train=256)
    with torch.no_grad():
        out = result.model(ds.train_x)
        loss = F.cross_entropy(out, ds.train_y).item()
        acc = (out.argmax(1) == ds.train_y).double().mean().item()
    assert result.summary["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert result.summary["train_acc"] == pytest.approx(acc)


def test_nonfinite_loss_stops_cleanly_and_keeps_parameters_finite():
    result = train(_cfg(method="SGD", lr=1e38, max_steps=50))
    assert result.stop_reason == "nonfinite_loss"
    assert "non-finite" in result.summary["stop_detail"]
    assert len(result.steps) < 50
    assert all(bool(torch.isfinite(p).all()) for p in result.model.parameters())


def test_stop_event_stops_before_the_next_step():
    event = threading.Event()

    class StopAfterTwo:
        def on_step(self, record):
            if record["step"] == 2:
                event.set()

    result = train(_cfg(method="TR_ada", max_steps=50), callbacks=[StopAfterTwo()], stop_event=event)
    assert result.stop_reason == "stopped" and len(result.steps) == 2
    assert result.evals[-1]["step"] == 2


def test_callbacks_objects_and_plain_callables():
    seen_obj = {"step": 0, "eval": 0, "end": 0}
    seen_fn = []

    class Recorder:
        def on_step(self, record):
            seen_obj["step"] += 1
            assert {
                "step",
                "method",
                "forward",
                "backward",
                "hvp",
                "backprops",
                "epoch",
                "seconds",
                "loss",
            } <= set(record)

        def on_eval(self, record):
            seen_obj["eval"] += 1
            assert {"train_loss", "train_acc", "test_loss", "test_acc", "backprops", "epoch"} <= set(record)

        def on_end(self, record):
            seen_obj["end"] += 1
            assert record["stop_reason"] == "max_steps"

    train(_cfg(method="RMSprop", max_steps=3), callbacks=[Recorder(), seen_fn.append])
    assert seen_obj == {"step": 3, "eval": 3, "end": 1}
    assert [r["event"] for r in seen_fn].count("step") == 3 and seen_fn[-1]["event"] == "end"


def test_max_epochs_limit():
    result = train(_cfg(method="SGD", max_steps=None, max_epochs=0.5))
    assert result.stop_reason == "max_epochs" and result.summary["epoch"] == pytest.approx(0.5)
    assert len(result.steps) == 4  # 4 batches of 32 out of 256 examples


def test_autoencoder_trains_with_bce_and_no_accuracy():
    result = train(_cfg(model="autoencoder_small", method="Adam", max_steps=3))
    assert result.evals[-1]["train_acc"] is None
    ds = load_dataset("digits", seed=0, max_train=256)
    with torch.no_grad():
        logits = result.model(ds.train_x)
        bce = F.binary_cross_entropy_with_logits(logits, ds.train_x.reshape(256, -1)).item()
    assert result.summary["train_loss"] == pytest.approx(bce, rel=1e-5)


def test_authors_preset_runs_a_labelled_warmup():
    result = train(_cfg(method="TR_rms", preset="authors", batch_size=None, max_steps=5))
    phases = [r["phase"] for r in result.steps]
    assert phases[0] == "warmup" and all(r.get("preset") == "authors" for r in result.steps)
    assert result.summary["preset"] == "authors"


def test_authors_pivot_keeps_improvements_and_undoes_the_rest(monkeypatch):
    """Pivot: every 10 epochs the full loss is compared with the last pivot's; a worse
    loss restores the parameters saved at that pivot before the TR step is taken."""
    from etr_core import training

    fake = iter([0.5, 0.9])  # the second pivot sees a worse loss
    real_eval, real_step = training._Trainer._evaluate_split, training._Trainer._tr_step
    entry = {}

    def evaluate(self, x, y):
        if __import__("inspect").stack()[1].function == "_maybe_pivot":
            return next(fake), None
        return real_eval(self, x, y)

    def tr_step(self, xb, yb):
        entry[self.step + 1] = [p.detach().clone() for p in self.params]
        return real_step(self, xb, yb)

    monkeypatch.setattr(training._Trainer, "_evaluate_split", evaluate)
    monkeypatch.setattr(training._Trainer, "_tr_step", tr_step)
    result = train(_cfg(method="TR_uni", preset="authors", batch_size=None, max_steps=23))
    events = [(r["step"], r["pivot"]) for r in result.steps if "pivot" in r]
    # 2 warm-up steps (one epoch at batch 128), then one full-batch TR step per epoch
    assert events == [(12, "kept"), (22, "undone")]
    assert result.summary["pivot_evaluations"] == 2
    moved = any(not torch.equal(a, b) for a, b in zip(entry[21], entry[12]))
    assert moved, "the TR steps between the pivots should have changed the weights"
    for restored, saved in zip(entry[22], entry[12]):
        assert torch.equal(restored, saved)
    assert all(r["batch_size"] == 256 for r in result.steps if r["phase"] == "tr")  # never shrinks


def test_paper_preset_has_no_warmup():
    result = train(_cfg(method="TR_rms", max_steps=2))
    assert {r["phase"] for r in result.steps} == {"tr"}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dataset": "imagenet"}, "dataset"),
        ({"model": "vgg"}, "model"),
        ({"method": "LBFGS"}, "method"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"method": "SGD", "lr": -0.1}, "lr"),
        ({"method": "TR_rms", "lr": 0.1}, "lr"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": None}, "max_steps"),
        ({"max_epochs": -1.0}, "max_epochs"),
        ({"eval_every": 0}, "eval_every"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "float16"}, "dtype"),
        ({"preset": "fastest"}, "preset"),
        ({"method": "SGD", "tr_options": {"radius": 1.0}}, "tr_options"),
        ({"tr_options": {"radius": -1.0}}, "radius"),
        ({"tr_options": {"radios": 1.0}}, "radios"),
        ({"dataset": "moons", "model": "cnn_small"}, "cnn_small"),
        ({"dataset": "moons", "model": "autoencoder"}, "dataset"),
        ({"data_options": {"bogus": 1}}, "bogus"),
    ],
)
def test_validation_names_the_bad_field(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        TrainConfig(**kwargs)


def test_train_rejects_bad_callbacks_and_stop_event():
    cfg = _cfg(method="SGD", max_steps=1)
    with pytest.raises(TypeError, match="callbacks"):
        train(cfg, callbacks=[42])
    with pytest.raises(TypeError, match="stop_event"):
        train(cfg, stop_event=True)


def _distributed_worker(rank: int, world: int, port: int, outdir: str, gpus_seen: bool = False) -> None:
    import os

    from etr_core import distributed as etr_dist

    if gpus_seen:  # a machine with GPUs training on its CPU: the group must still be gloo
        torch.cuda.is_available = lambda: True

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    try:
        result = train(
            _cfg(method="TR_rms", dtype="float64", max_steps=3, num_threads=1), run_dir=f"{outdir}/run"
        )
        torch.save({"losses": result.losses, "summary": result.summary}, f"{outdir}/rank{rank}.pt")
    finally:
        etr_dist.cleanup()


@pytest.mark.distributed
@pytest.mark.timeout(180)
@pytest.mark.parametrize("gpus_seen", [False, True])
def test_two_ranks_train_like_one_process(tmp_path, gpus_seen):
    """Under torchrun-style launch each rank takes half of every batch; the all-reduced TR step must
    match one process on the whole batch, and only rank 0 writes the run folder."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    method = "spawn" if torch.cuda.is_available() else "fork"
    mp.start_processes(
        _distributed_worker, args=(2, port, str(tmp_path), gpus_seen), nprocs=2, join=True,
        start_method=method,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    single = train(_cfg(method="TR_rms", dtype="float64", max_steps=3))
    assert ranks[0]["losses"] == pytest.approx(single.losses, rel=1e-12)
    assert ranks[0]["summary"]["hvp"] == single.summary["hvp"]
    assert ranks[0]["summary"]["samples"] == single.summary["samples"]
    assert (tmp_path / "run" / "summary.json").exists()
