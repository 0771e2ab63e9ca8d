"""Data-parallel TR_hess (Hessian-diagonal ellipsoid) and EllipsoidalARC over gloo on 2 processes against a
single process on the union batch: the ranks stay bitwise equal, and they follow the single process.

The oracle: with equal shards, the mean of the per-rank mean losses is the union batch's mean loss, so its
gradient and every Hessian-vector product are the averages the optimisers all-reduce. The Hutchinson
probes are drawn from a generator seeded by (seed, step), identical on every rank, so the averaged
products give the union batch's estimate exactly (up to float64 rounding of the sums).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from etr_core import distributed as etr_dist
from etr_core.arc import EllipsoidalARC
from etr_core.optim import EllipsoidalTR

WORLD = 2
STEPS = 6
BATCH = 48

# name -> (optimiser class, options); the Hessian ellipsoid with 2 probes and unit blocks as well, so
# the probes' count and the block means go through the reduced products too
SETTINGS = {
    "tr_hess": (EllipsoidalTR, {"ellipsoid": "hessian", "radius": 0.2, "hessian_probes": 2}),
    "tr_hess_unit": (EllipsoidalTR, {"ellipsoid": "hessian", "radius": 0.2, "hessian_block": "unit"}),
    "arc_rms": (EllipsoidalARC, {"ellipsoid": "rms", "sigma": 100.0}),  # rejects, then accepts
    "arc_hess": (EllipsoidalARC, {"ellipsoid": "hessian", "sigma": 1.0, "hessian_probes": 2}),
}


def _data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(192, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (192,), generator=gen)
    batches = [torch.randperm(192, generator=gen)[:BATCH] for _ in range(STEPS)]
    return X, y, batches


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _train(name: str, model: nn.Module, rank: int | None, distributed: bool) -> dict:
    cls, options = SETTINGS[name]
    X, y, batches = _data()
    opt = cls(model.parameters(), distributed=distributed, **options)
    records = []
    for idx in batches:
        local = idx if rank is None else etr_dist.shard(idx, rank, WORLD)
        opt.step(lambda local=local: nn.functional.cross_entropy(model(X[local]), y[local]))
        records.append(opt.last_step.to_dict())
    params = list(model.parameters())
    v = torch.cat([opt.state[p]["v"].reshape(-1) for p in params]).clone()  # the ellipsoid's accumulator
    return {"params": [p.detach().clone() for p in model.parameters()], "records": records,
            "counters": dict(opt.counters), "v": v}


def _worker(rank: int, world: int, port: int, outdir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    etr_dist.setup("gloo")
    try:
        out = {}
        for name in SETTINGS:
            model = _model(seed=100 + rank)  # different on purpose: the broadcast must fix it
            etr_dist.broadcast_parameters(model)
            out[name] = _train(name, model, rank, distributed=True)
        torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        etr_dist.cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("beyond_gloo")
    # fork: the children inherit the imported modules (spawn where CUDA is present, as in test_distributed)
    method = "spawn" if torch.cuda.is_available() else "fork"
    mp.start_processes(_worker, args=(WORLD, _free_port(), str(outdir)), nprocs=WORLD, join=True,
                       start_method=method)
    return [torch.load(outdir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_two_gloo_ranks_agree_and_match_one_process_on_the_union_batch(ranks, name):
    r0, r1 = ranks[0][name], ranks[1][name]
    for p0, p1 in zip(r0["params"], r1["params"]):
        assert torch.equal(p0, p1), "replicas diverged"
    assert torch.equal(r0["v"], r1["v"]), "the ellipsoids differ between ranks (probes not the same?)"
    assert r0["records"] == r1["records"] and r0["counters"] == r1["counters"]

    single = _train(name, _model(seed=100), None, distributed=False)  # rank 0's initialisation
    for p, q in zip(single["params"], r0["params"]):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(single["v"], r0["v"], rtol=1e-8, atol=1e-14)
    for a, b in zip(single["records"], r0["records"]):
        assert (a["accepted"], a["exit"], a["hvp_calls"], a["other_hvp_calls"]) == (
            b["accepted"], b["exit"], b["hvp_calls"], b["other_hvp_calls"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
        assert a["rho"] == pytest.approx(b["rho"], rel=1e-7, abs=1e-9)
        assert a["radius_after"] == pytest.approx(b["radius_after"], rel=1e-12)
    assert single["counters"] == r0["counters"]
    probes = SETTINGS[name][1].get("hessian_probes", 1) if "hess" in name else 0
    # every step's products: the solver's plus the probes, all in counters["hvp"]
    assert r0["counters"]["hvp"] == sum(r["hvp_calls"] + r["other_hvp_calls"] for r in r0["records"])
    assert all(r["other_hvp_calls"] == probes for r in r0["records"])
    assert any(r["accepted"] for r in r0["records"])
