"""Server time per widget change and figure payloads of the pages "Newton vs trust region" and
"Second-order TR in 2-D", measured through Streamlit's AppTest (no browser).

For each page: the first (cold) render, then interleaved repetitions of
  * a toggle flip whose computations are cached (``st.cache_data``): the common interaction, and
  * a widget change that forces the page's computations again (caches cleared first),
reporting medians. Payloads are the serialized Plotly figures (``proto.ByteSize()``) at default settings.

With ``--iterations`` it also prints the iterations each TR method needs on the page's quadratics
(what the "Second-order TR in 2-D" page shows), for one truncated CG step and for the full solve.

Run:  python3 benchmarks/bench_page_geometry_second_order.py [--repeats 7] [--markdown] [--iterations]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")

PAGES = {
    "newton_vs_trust_region": {
        "path": "pages/newton_vs_trust_region.py",
        "toggle": "nvt_show_model",
        "recompute": ("select_slider", "nvt_radius", [0.3, 0.5]),
    },
    "second_order_2d": {
        "path": "pages/second_order_2d.py",
        "toggle": "so_regions",
        "recompute": ("select_slider", "so_kappa", [30, 100]),
    },
}


def _timed_run(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"page raised: {at.exception}")
    return elapsed


def bench_page(name: str, spec: dict, repeats: int) -> dict:
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(spec["path"])
    cold = _timed_run(at)
    payloads = [chart.proto.ByteSize() for chart in at.get("plotly_chart")]
    warm_rerun = _timed_run(at)
    toggle_times, recompute_times = [], []
    kind, key, values = spec["recompute"]
    for i in range(repeats):
        widget = at.toggle(key=spec["toggle"])
        widget.set_value(not widget.value)
        toggle_times.append(_timed_run(at))
        st.cache_data.clear()
        getattr(at, kind)(key=key).set_value(values[i % 2])
        recompute_times.append(_timed_run(at))
    return {
        "page": name,
        "cold": cold,
        "rerun": warm_rerun,
        "toggle_median": statistics.median(toggle_times),
        "toggle_max": max(toggle_times),
        "recompute_median": statistics.median(recompute_times),
        "recompute_max": max(recompute_times),
        "payloads": payloads,
        "recompute_widget": key,
        "toggle_widget": spec["toggle"],
    }


def iteration_counts() -> None:
    """Iterations to f - f* <= 1e-8 from (2, 1), radius 1, paper rules, at most 1000 iterations."""
    from etr_core.toy.functions import quadratic_function
    from etr_core.toy.quadratics import make_quadratic
    from etr_core.toy.second_order import compare_runs

    print("| κ | θ | CG per step | TR_uni | TR_ada | TR_rms |")
    print("|---|---|---|---|---|---|")
    for kappa in (10.0, 100.0, 1000.0):
        for theta in (0.0, 45.0):
            q = make_quadratic(kappa, theta)
            fn = quadratic_function(q.Q, q.w_star)
            for cap, label in ((1, "1"), (50, "full (≤ 2)")):
                runs = compare_runs(
                    fn,
                    (2.0, 1.0),
                    ("tr_uniform", "tr_adagrad", "tr_rms"),
                    max_iter=1000,
                    gtol=1e-6,
                    radius=1.0,
                    tr_options={"max_krylov": cap},
                )
                cells = []
                for run in runs.values():
                    n = run.iterations_to(ftol=1e-8, f_min=0.0)
                    cells.append("> 1000" if n is None else str(n))
                print(f"| {kappa:g} | {theta:g}° | {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--iterations", action="store_true", help="also print the 2-D iteration counts")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    results = [bench_page(name, spec, args.repeats) for name, spec in PAGES.items()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {platform.python_version()}, streamlit {st.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f}, repeats {args.repeats}"
    )
    if args.markdown:
        print(
            "| page | cold render | rerun (no change) | toggle (cached), median / max | "
            "recompute, median / max | figure payloads (bytes) |"
        )
        print("|---|---|---|---|---|---|")
    for r in results:
        payloads = " + ".join(f"{p:,}" for p in r["payloads"])
        if args.markdown:
            print(
                f"| {r['page']} | {r['cold']:.2f} s | {r['rerun']:.3f} s | "
                f"{r['toggle_median']:.3f} / {r['toggle_max']:.3f} s (`{r['toggle_widget']}`) | "
                f"{r['recompute_median']:.3f} / {r['recompute_max']:.3f} s (`{r['recompute_widget']}`) | "
                f"{payloads} |"
            )
        else:
            print(
                f"{r['page']}: cold {r['cold']:.2f} s, rerun {r['rerun']:.3f} s, toggle median "
                f"{r['toggle_median']:.3f} s (max {r['toggle_max']:.3f}), recompute median "
                f"{r['recompute_median']:.3f} s (max {r['recompute_max']:.3f}), payloads {payloads}"
            )
    if args.iterations:
        print()
        iteration_counts()


if __name__ == "__main__":
    main()
