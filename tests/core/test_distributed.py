"""Data-parallel TR over torch.distributed (gloo on 127.0.0.1) against a single process on the union batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from etr_core import distributed as etr_dist
from etr_core.optim import EllipsoidalTR

WORLD = 2
STEPS = 5
BATCH = 48


def _data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(192, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (192,), generator=gen)
    batches = [torch.randperm(192, generator=gen)[:BATCH] for _ in range(STEPS)]
    return X, y, batches


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _worker(rank: int, world: int, port: int, outdir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ["RANK"] = str(rank)
    os.environ["WORLD_SIZE"] = str(world)
    torch.set_num_threads(1)
    etr_dist.setup("gloo")
    try:
        assert etr_dist.is_distributed() and etr_dist.rank() == rank and etr_dist.world_size() == world
        model = _model(seed=100 + rank)  # different on purpose: the broadcast must fix it
        etr_dist.broadcast_parameters(model)
        X, y, batches = _data()
        opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.2, distributed=True)
        records = []
        for idx in batches:
            local = etr_dist.shard(idx, rank, world)
            opt.step(lambda local=local: nn.functional.cross_entropy(model(X[local]), y[local]))
            records.append(opt.last_step.to_dict())
        torch.save(
            {
                "params": [p.detach().clone() for p in model.parameters()],
                "records": records,
                "counters": dict(opt.counters),
            },
            os.path.join(outdir, f"rank{rank}.pt"),
        )
    finally:
        etr_dist.cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_two_gloo_ranks_match_single_process_on_union_batch(tmp_path):
    # fork lets the children inherit the imported modules instead of re-importing torch (seconds each
    # on a busy machine); it is unsafe once CUDA's autograd threads exist, so spawn where CUDA is present.
    method = "spawn" if torch.cuda.is_available() else "fork"
    mp.start_processes(
        _worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method=method
    )
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for p0, p1 in zip(out[0]["params"], out[1]["params"]):
        assert torch.equal(p0, p1), "replicas diverged"
    assert out[0]["records"] == out[1]["records"]

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _model(seed=100)  # rank 0's initialisation
        X, y, batches = _data()
        opt = EllipsoidalTR(model.parameters(), ellipsoid="rms", radius=0.2)
        single = []
        for idx in batches:
            opt.step(lambda idx=idx: nn.functional.cross_entropy(model(X[idx]), y[idx]))
            single.append(opt.last_step.to_dict())
    finally:
        torch.set_num_threads(before)
    for p, q in zip(model.parameters(), out[0]["params"]):
        torch.testing.assert_close(p.detach(), q, rtol=1e-10, atol=1e-12)
    for a, b in zip(single, out[0]["records"]):
        assert a["accepted"] == b["accepted"] and a["hvp_calls"] == b["hvp_calls"] and a["exit"] == b["exit"]
        assert a["rho"] == pytest.approx(b["rho"], rel=1e-8)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    assert any(r["accepted"] for r in single)
    assert out[0]["counters"] == dict(opt.counters)


def test_functions_without_a_process_group():
    assert not etr_dist.is_distributed()
    assert etr_dist.rank() == 0 and etr_dist.world_size() == 1
    t = torch.tensor([1.0, 3.0])
    assert etr_dist.all_reduce_mean(t) is t and torch.equal(t, torch.tensor([1.0, 3.0]))
    etr_dist.cleanup()  # nothing to destroy: no error


def test_shard_splits_equally_and_validates():
    idx = torch.arange(10)
    parts = [etr_dist.shard(idx, r, 2) for r in range(2)]
    assert torch.equal(torch.cat(parts), idx) and all(len(p) == 5 for p in parts)
    assert torch.equal(etr_dist.shard(6, 2, 3), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="divisible"):
        etr_dist.shard(idx, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        etr_dist.shard(idx, 2, 2)
    with pytest.raises(ValueError, match="world_size"):
        etr_dist.shard(idx, 0, 0)
    with pytest.raises(TypeError, match="tensor_or_indices"):
        etr_dist.shard([1, 2], 0, 1)


def test_setup_needs_launcher_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK"):
        etr_dist.setup("gloo")
    with pytest.raises(ValueError, match="backend"):
        etr_dist.setup("tcp")


def test_distributed_flag_needs_a_process_group():
    with pytest.raises(ValueError, match="process group"):
        EllipsoidalTR([nn.Parameter(torch.zeros(2))], distributed=True)
    with pytest.raises(TypeError, match="distributed"):
        EllipsoidalTR([nn.Parameter(torch.zeros(2))], distributed="yes")


@pytest.mark.parametrize(
    ("device", "cuda", "backend"),
    [
        ("cpu", True, "gloo"),  # GPUs present, training on the CPU: NCCL has no CPU tensors
        ("cpu", False, "gloo"),
        ("cuda", True, "nccl"),
        ("cuda:1", True, "nccl"),
        (torch.device("cpu"), True, "gloo"),
        (None, True, "cpu:gloo,cuda:nccl"),
        (None, False, "gloo"),
    ],
)
def test_backend_follows_the_training_device(device, cuda, backend):
    from etr_core.distributed import choose_backend

    assert choose_backend(device, cuda) == backend
