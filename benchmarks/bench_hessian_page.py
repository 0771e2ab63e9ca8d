"""Benchmark of the Hessian page (paper section 3.2, Fig. 2): time to the first answer of a new
setting, the background part, the "Wide" preset and the abusive URL, before and after the rework.

* ``before``: what the page did until now for a new setting, in the server's own process with
  torch's default thread count: three cached calls of ``analyse_network``, each retraining from
  scratch to its phase's step and taking one Hessian (heat map included).
* ``after``: the page's jobs (``etr_core.hessian_plan``) in a worker process with one torch
  thread: the first answer (the shown phase's Hessian) and the background (all phases of every
  seed), with the CPU seconds the workers report; nothing cached between settings.
* ``app``: the whole page under AppTest, widget change to rendered first answer.

Run by hand (a few minutes on 2 cores)::

    python3 benchmarks/bench_hessian_page.py                  # all parts
    python3 benchmarks/bench_hessian_page.py --part after --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACTIVATIONS = ("tanh", "sigmoid", "relu", "softplus", "gelu")
BATCHES = [16, 32, 64, 128, 256, 512, 1024, 1_000_000]
STEPS = [0, 10, 20, 50, 100, 200, 500, 1000, 2000]
# (label, hidden widths, Hessian batch, steps N, seeds)
SETTINGS = {
    "default": ((16,), 256, 200, 1),
    "wide": ((32,), 256, 200, 1),
    "abusive": ((48,), 1_000_000, 2000, 10),
}


def _data():
    import torch

    from etr_core.hessian_plan import page_dataset

    x, y, classes = page_dataset("digits")
    return torch.from_numpy(x), torch.from_numpy(y), classes


def before(label: str, activation: str, seeds_measured: int | None = None) -> dict:
    """The old page path for one new setting; returns wall seconds (first answer = everything)."""
    import torch

    from etr_core.hessian_analysis import PHASES, analyse_network

    widths, batch, steps, seeds = SETTINGS[label]
    x, y, classes = _data()
    sizes = (64, *widths, classes)
    n = seeds if seeds_measured is None else seeds_measured
    t0 = time.perf_counter()
    c0 = time.process_time()
    for k in range(n):
        for _, fraction in PHASES:
            analyse_network(sizes, x, y, activation=activation, seed=k, steps=round(fraction * steps),
                            batch=batch, train_batch=64, lr=0.01, phases=(("at", 1.0),), max_params=4000,
                            heatmap_cells=200 if k == 0 else None, dtype=torch.float32)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "seeds": n, "of": seeds}


def after(label: str, activation: str) -> dict:
    """The new page path: first answer and background through a fresh result cache."""
    from etr_core import hessian_plan as hp
    widths, batch, steps, seeds = SETTINGS[label]
    x, _, classes = _data()
    sizes = (64, *widths, classes)
    asked = hp.PageSettings("digits", sizes, activation, batch, steps, "end", seeds, 0, len(x))
    settings, reason = hp.fit_to_budget(asked, BATCHES, STEPS)
    hp._REGISTRY = None  # a new setting: no job and no result yet (the worker process stays)
    reg = hp.registry()
    owner = f"bench-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    first_units = hp.first_units(settings)
    first = reg.submit(owner, "first", tuple(u.key for u in first_units), first_units, priority=0,
                       cpu_cap=hp.FIRST_ANSWER_CAP)
    first.wait()
    t_first = time.perf_counter() - t0
    bg_units = hp.background_units(settings)
    bg = reg.submit(owner, "background", tuple(u.key for u in bg_units), bg_units, priority=1,
                    cpu_cap=hp.CPU_CAP - hp.FIRST_ANSWER_CAP)
    bg.wait()
    t_all = time.perf_counter() - t0
    return {"first": t_first, "all": t_all, "first_cpu": first.status().cpu_seconds,
            "cpu": first.status().cpu_seconds + bg.status().cpu_seconds,
            "states": (first.status().state, bg.status().state), "clamped": reason,
            "estimate": hp.estimate(settings)}


def app(reps: int) -> list[float]:
    """Widget change to rendered first answer, whole page under AppTest (new activation each time)."""
    from streamlit.testing.v1 import AppTest

    from etr_core import hessian_plan as hp

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/hessian_diagonal.py").run()
    while not at.metric:
        time.sleep(0.3)
        at.run()
    times = []
    for k in range(reps):
        hp._REGISTRY = None
        t0 = time.perf_counter()
        at.selectbox(key="hd_act").set_value(ACTIVATIONS[(k + 1) % len(ACTIVATIONS)]).run()
        while not at.metric and not at.exception:  # still computing: the page polls
            time.sleep(0.1)
            at.run()
        times.append(time.perf_counter() - t0)
        if at.exception:
            raise RuntimeError(f"page failed: {at.exception}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "before", "after", "app"), default="all")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-abusive-before", action="store_true",
                        help="the old path needs minutes of CPU for one seed of the abusive URL")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.part in ("all", "after"):
        after("default", "tanh")  # starts the worker process
        for label in ("default", "wide", "abusive"):
            reps = args.reps if label != "abusive" else 2
            rows = [after(label, ACTIVATIONS[k % len(ACTIVATIONS)]) for k in range(reps)]
            print(f"after {label}: first answer median {statistics.median(r['first'] for r in rows):.2f} s "
                  f"{[round(r['first'], 2) for r in rows]}, everything {[round(r['all'], 2) for r in rows]}, "
                  f"worker CPU {[round(r['cpu'], 1) for r in rows]} s "
                  f"(first answer {[round(r['first_cpu'], 2) for r in rows]} s), states {rows[0]['states']}, "
                  f"estimate {tuple(round(v, 1) for v in rows[0]['estimate'][:2])} s; {rows[0]['clamped']}",
                  flush=True)
    if args.part in ("all", "before"):
        before("default", "tanh")  # warm-up
        for label in ("default", "wide"):
            rows = [before(label, ACTIVATIONS[k % len(ACTIVATIONS)]) for k in range(args.reps)]
            print(f"before {label}: median {statistics.median(r['wall'] for r in rows):.2f} s "
                  f"{[round(r['wall'], 2) for r in rows]}, CPU {[round(r['cpu'], 1) for r in rows]} s",
                  flush=True)
        if not args.skip_abusive_before:
            r = before("abusive", "tanh", seeds_measured=1)
            print(f"before abusive: 1 of 10 seeds measured: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU "
                  "(the page computed all 10 seeds)", flush=True)
    if args.part in ("all", "app"):
        times = app(args.reps)
        print(f"app new setting: median {statistics.median(times):.2f} s {[round(t, 2) for t in times]}",
              flush=True)
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
