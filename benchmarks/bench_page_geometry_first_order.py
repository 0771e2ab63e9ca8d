"""Server time of widget changes and figure payload of the page "Adaptive methods are trust-region
methods" (paper Fig. 1, Fig. 5, Theorem 1), measured with Streamlit's AppTest.

What is timed is ``AppTest.run()`` after one widget change: the whole page script, its cached
computations and the serialisation of both Plotly figures (no browser). Scenarios, each measured
``--reps`` times, round-robin so that a loaded machine slows all of them alike:

* ``toggle trust regions (cached)``: "Show trust regions" off/on; trajectories come from the cache;
* ``kappa change (cached)``: kappa 20 -> 30 -> 20 after both were computed once;
* ``kappa change (cold)``: the caches are cleared first, so trajectories, random starts (30 runs per
  method) and figures are all recomputed: the cost of the first visit to a new setting;
* ``Fig. 5 preset (cold)``: the first-order TR methods are switched on (their 30 random starts run
  through ``etr_core.minimize``), caches cleared.

    python3 benchmarks/bench_page_geometry_first_order.py --reps 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGE = "pages/implicit_trust_regions.py"


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(PAGE).run()
    if at.exception:
        raise RuntimeError(at.exception)
    return at


def timed(at: AppTest, change) -> float:
    change(at)
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(at.exception)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    at = open_page()
    sizes = [chart.proto.ByteSize() for chart in at.get("plotly_chart")]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    n_frames = len(spec.get("frames", []))
    # warm both kappa values into the cache
    at.select_slider(key="itr_kappa").set_value(30).run()
    at.select_slider(key="itr_kappa").set_value(20).run()

    state = {"tr": True, "kappa": 20}

    def toggle(a: AppTest) -> None:
        state["tr"] = not state["tr"]
        a.toggle(key="itr_show_tr").set_value(state["tr"])

    def kappa_cached(a: AppTest) -> None:
        state["kappa"] = 30 if state["kappa"] == 20 else 20
        a.select_slider(key="itr_kappa").set_value(state["kappa"])

    def kappa_cold(a: AppTest) -> None:
        st.cache_data.clear()
        kappa_cached(a)

    scenarios = {
        "toggle trust regions (cached)": toggle,
        "kappa change (cached)": kappa_cached,
        "kappa change (cold)": kappa_cold,
    }
    times: dict[str, list[float]] = {name: [] for name in scenarios}
    times["Fig. 5 preset (cold)"] = []
    fig5_sizes: list[int] = []
    for rep in range(args.reps):
        names = list(scenarios)
        names = names[rep % len(names):] + names[: rep % len(names)]
        for name in names:
            times[name].append(timed(at, scenarios[name]))
        # Fig. 5 on a fresh page so the defaults are restored afterwards
        other = open_page()
        st.cache_data.clear()
        fig5 = timed(other, lambda a: a.button(key="itr_preset_Fig. 5").click())
        times["Fig. 5 preset (cold)"].append(fig5)
        fig5_sizes = [chart.proto.ByteSize() for chart in other.get("plotly_chart")]

    print(f"## Page `{PAGE}`: server time per widget change (AppTest, {args.reps} reps, median [min, max])\n")
    print("| scenario | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    print(f"\nFigure payload at default settings (GD + Adagrad, 40 iterations, kappa 20): geometry chart "
          f"{sizes[0] / 1e3:.1f} kB ({n_frames} frames), suboptimality chart {sizes[1] / 1e3:.1f} kB.")
    print(f"Fig. 5 preset (4 methods, 60 iterations): geometry chart {fig5_sizes[0] / 1e3:.1f} kB, "
          f"suboptimality chart {fig5_sizes[1] / 1e3:.1f} kB.")


if __name__ == "__main__":
    main()
