"""A data-parallel run resumed under torch.distributed: every rank continues from the checkpoint.

Oracle: the same two-rank run without interruption (bitwise equal weights and batch losses), and
the two replicas equal to each other.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from etr_core import distributed as etr_dist
from etr_core.results import read_jsonl
from etr_core.training import TrainConfig, train

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

CONFIG = dict(
    method="TR_rms",
    batch_size=64,
    device="cpu",
    eval_every=3,
    checkpoint_every=3,
    data_options={"max_train": 200},
)


def _worker(rank: int, world: int, port: int, jobs: list[tuple[str, int, bool, str]]) -> None:
    """Run ``jobs`` (run folder, max_steps, resume, output file) one after another in one process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    etr_dist.setup("gloo")
    try:
        for run_dir, max_steps, resume, out in jobs:
            result = train(TrainConfig(**CONFIG, max_steps=max_steps), run_dir=run_dir, resume=resume)
            params = [p.detach().clone() for p in result.model.parameters()]
            torch.save({"params": params, "losses": result.losses}, f"{out}.rank{rank}.pt")
    finally:
        etr_dist.cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(jobs) -> None:
    method = "spawn" if torch.cuda.is_available() else "fork"
    jobs = [(str(d), n, resume, str(out)) for d, n, resume, out in jobs]
    mp.start_processes(_worker, args=(2, _free_port(), jobs), nprocs=2, join=True, start_method=method)


def _result(out, rank: int) -> dict:
    return torch.load(f"{out}.rank{rank}.pt")


@pytest.mark.timeout(300)
def test_two_rank_run_resumes_on_every_rank(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _launch([(whole, 6, False, tmp_path / "whole"), (cut, 3, False, tmp_path / "first")])
    _launch([(cut, 6, True, tmp_path / "resumed")])  # a new process group, as after a crash
    reference = _result(tmp_path / "whole", 0)
    for rank in range(2):
        for p, q in zip(_result(tmp_path / "resumed", rank)["params"], reference["params"]):
            assert torch.equal(p, q), f"rank {rank} diverged from the uninterrupted run"
    losses = [r["loss"] for r in read_jsonl(cut / "metrics.jsonl")]
    assert losses == reference["losses"]
