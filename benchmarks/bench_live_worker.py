"""Throughput of the live-training worker with and without a polling UI (no browser needed).

The Streamlit server reruns the polling fragment every ``--poll`` seconds and then runs a full
``gc.collect(2)`` (``runner.postScriptGC``). This script mimics that with a thread that, every
``--poll`` seconds, takes a snapshot of the run, builds the live figures and serialises them to
JSON, then calls ``gc.collect(2)``. The heap is made server-like by importing streamlit, plotly,
altair and pandas first. Conditions, interleaved over ``--reps`` repetitions (medians reported):

* ``alone``          -- the worker with no poller;
* ``poll+gc``        -- poller at ``--poll`` s, objects not frozen;
* ``poll+gc+freeze`` -- the same after ``gc.freeze()`` (what ``app.py`` does after its warm-up);
* ``poll/2+gc+freeze`` -- twice as frequent polling, frozen.

Separately, ``--cold`` measures in fresh subprocesses the delay from Start to the first recorded
step while the poller runs, with and without :func:`etr_core.live.warm_up_training`.

Run from the repository root::

    python3 benchmarks/bench_live_worker.py --reps 3 --window 6 --poll 0.5 --cold
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("TR_uni", "TR_rms", "Adam")


def _server_like_imports() -> None:
    import altair  # noqa: F401
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import streamlit  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401


class Poller(threading.Thread):
    """Mimics a fragment rerun (snapshot, figures, JSON) followed by Streamlit's post-script GC."""

    def __init__(self, run, interval: float) -> None:
        super().__init__(daemon=True)
        self.run_obj, self.interval = run, interval
        self.halt = threading.Event()
        self.gc_seconds: list[float] = []
        self.render_seconds: list[float] = []

    def run(self) -> None:
        from etr_core.viz.live_plots import loss_figure, trust_region_figure

        while not self.halt.wait(self.interval):
            t0 = time.perf_counter()
            snap = self.run_obj.snapshot()
            loss_figure(snap.steps, snap.evals).to_json()
            trust_region_figure(snap.steps).to_json()
            t1 = time.perf_counter()
            gc.collect(2)
            self.gc_seconds.append(time.perf_counter() - t1)
            self.render_seconds.append(t1 - t0)


def _configs():
    from etr_core.live import comparison_configs

    return comparison_configs(list(METHODS), max_steps=1_000_000, eval_every=10, device="cpu")


def measure(window: float, poll: float | None, freeze: bool) -> dict[str, float]:
    """Steps per second (all methods together) over ``window`` seconds after the first step."""
    from etr_core.live import LiveRun, RunSlots

    if freeze:
        gc.collect()
        gc.freeze()
    try:
        run = LiveRun(_configs(), max_seconds=None, slots=RunSlots(1))
        poller = Poller(run, poll) if poll else None
        run.start()
        if poller:
            poller.start()
        while run.snapshot().steps.empty:
            time.sleep(0.01)
        n0, t0 = len(run.snapshot().steps), time.perf_counter()
        time.sleep(window)
        n1, t1 = len(run.snapshot().steps), time.perf_counter()
        run.stop()
        run.join(30)
        if poller:
            poller.halt.set()
            poller.join(30)
        gc_ms = 1e3 * statistics.median(poller.gc_seconds) if poller and poller.gc_seconds else 0.0
        render_ms = (
            1e3 * statistics.median(poller.render_seconds) if poller and poller.render_seconds else 0.0
        )
        return {"steps_per_s": (n1 - n0) / (t1 - t0), "gc_ms": gc_ms, "render_ms": render_ms}
    finally:
        if freeze:
            gc.unfreeze()


def cold_first_step(warm: bool, poll: float) -> float:
    """Seconds from Start to the first recorded step in this (fresh) process, poller running."""
    _server_like_imports()
    gc.collect()
    gc.freeze()  # as app.py does after its import warm-up
    from etr_core.live import LiveRun, RunSlots, warm_up_training

    if warm:
        warm_up_training()
    run = LiveRun(_configs(), max_seconds=None, slots=RunSlots(1))
    poller = Poller(run, poll)
    t0 = time.perf_counter()
    run.start()
    poller.start()
    while run.snapshot().steps.empty:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    run.stop()
    run.join(30)
    poller.halt.set()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--window", type=float, default=6.0, help="seconds measured per condition")
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--cold", action="store_true", help="also time the first step in fresh processes")
    parser.add_argument("--cold-case", choices=("plain", "warm"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.cold_case:
        print(json.dumps({"first_step_s": cold_first_step(args.cold_case == "warm", args.poll)}))
        return

    _server_like_imports()
    from etr_core.live import warm_up_training

    warm_up_training()
    gc.unfreeze()  # warm_up_training froze the heap; conditions choose for themselves
    conditions = {
        "alone": (None, False),
        "poll+gc": (args.poll, False),
        "poll+gc+freeze": (args.poll, True),
        "poll/2+gc+freeze": (args.poll / 2, True),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in conditions}
    for rep in range(args.reps):
        for name, (poll, freeze) in conditions.items():
            results[name].append(measure(args.window, poll, freeze))
            print(f"rep {rep} {name:18s} {results[name][-1]}", file=sys.stderr)

    print(
        f"\nmethods {', '.join(METHODS)} on digits / mlp_small, interleaved by backprops, 1 torch thread; "
        f"poll {args.poll} s; {args.reps} reps x {args.window} s; medians\n"
    )
    print("| condition | steps/s | ratio to alone | gc.collect(2) per poll (ms) "
          "| snapshot+figures per poll (ms) |")
    print("|---|---|---|---|---|")
    base = statistics.median(r["steps_per_s"] for r in results["alone"])
    for name, runs in results.items():
        rate = statistics.median(r["steps_per_s"] for r in runs)
        gc_ms = statistics.median(r["gc_ms"] for r in runs)
        render_ms = statistics.median(r["render_ms"] for r in runs)
        poll = conditions[name][0]
        label = (
            name.replace("poll/2", f"poll {poll:g} s").replace("poll+", f"poll {poll:g} s+") if poll else name
        )
        print(f"| {label} | {rate:.0f} | {rate / base:.2f} | {gc_ms:.1f} | {render_ms:.1f} |")

    if args.cold:
        print("\n| fresh process, poller running | Start -> first step (s) |")
        print("|---|---|")
        for case in ("plain", "warm"):
            times = []
            for _ in range(args.reps):
                out = subprocess.run(
                    [sys.executable, __file__, "--cold-case", case, "--poll", str(args.poll)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                times.append(json.loads(out.stdout.strip().splitlines()[-1])["first_step_s"])
            label = "after warm_up_training()" if case == "warm" else "no training warm-up"
            print(
                f"| {label} | {statistics.median(times):.2f} (runs: {', '.join(f'{t:.2f}' for t in times)}) |"
            )


if __name__ == "__main__":
    main()
