"""Benchmark of the curvature analysis (paper section 3.2): exact Hessian time and peak memory vs d,
the app page's computation at d ~ 2,000, and the cost of the estimators in gradient-equivalents.

Peak memory is the growth of the process's peak resident set size (``resource.getrusage``
``ru_maxrss``), measured in a fresh subprocess per (size, method, chunk) so that one measurement
never inherits another's peak; tracemalloc does not see torch's allocations. Each child first warms
up ``torch.func`` on a tiny network, then records its baseline peak, then builds the Hessian.

Run by hand (it takes a few minutes on 2 cores)::

    python3 benchmarks/bench_hessian.py                      # all parts, markdown to stdout
    python3 benchmarks/bench_hessian.py --part exact --sizes 10000 --methods reverse
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# d -> MLP layer sizes (input, hidden, classes), batch 256, tanh, cross entropy, float32
SIZES = {1042: (32, 24, 10), 1960: (64, 26, 10), 3760: (64, 50, 10), 10000: (100, 90, 10)}
assert all(d == (a + 1) * b + (b + 1) * c for d, (a, b, c) in SIZES.items())


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_exact(d: int, method: str, chunk: int, reps: int, threads: int, device: str = "cpu") -> dict:
    import torch

    from etr_core.curvature import exact_hessian
    from etr_core.devices import synchronize
    from etr_core.models import MLP

    torch.set_num_threads(threads)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    warm = MLP([8, 4, 3]).to(dev)
    exact_hessian(warm, torch.randn(16, 8, generator=gen).to(dev),
                  torch.randint(0, 3, (16,), generator=gen).to(dev), method=method, chunk_size=chunk)
    sizes = SIZES[d]
    torch.manual_seed(0)
    model = MLP(list(sizes)).to(dev)
    x = torch.randn(256, sizes[0], generator=gen).to(dev)
    y = torch.randint(0, sizes[-1], (256,), generator=gen).to(dev)
    base = _maxrss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_gpu = torch.cuda.memory_allocated(dev)
    times = []
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        H = exact_hessian(model, x, y, method=method, chunk_size=chunk, max_params=20_000)
        synchronize(dev)
        times.append(time.perf_counter() - t0)
        del H
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(dev) - base_gpu) / 2**20
    else:
        peak = _maxrss_mb() - base
    return {"d": d, "method": method, "chunk": chunk, "seconds": statistics.median(times),
            "times": times, "peak_mb": peak, "h_mb": d * d * 4 / 2**20, "device": device}


def run_exact(sizes: list[int], methods: list[str], chunks: list[int], threads: int,
              device: str = "cpu") -> list[dict]:
    rows = []
    for d in sizes:
        reps = 1 if d >= 10_000 else 3
        # interleave methods so that slow drift of a shared machine hits all of them alike
        for chunk in chunks:
            for method in methods:
                spec = json.dumps([d, method, chunk, reps, threads, device])
                cmd = [sys.executable, __file__, "--child", spec]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  exact d={d} {method} chunk={chunk}: {rows[-1]['seconds']:.2f} s, "
                      f"+{rows[-1]['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    return rows


def run_page(threads: int, reps: int = 3) -> list[dict]:
    """The page's work at default settings and at d ~ 2,000: train, 3 Hessians, masses, Lanczos."""
    import torch

    from etr_core.data import load_dataset
    from etr_core.hessian_experiment import PHASES, analyse_network, parameter_count

    torch.set_num_threads(threads)
    ds = load_dataset("digits", seed=0)
    x = ds.train_x.reshape(ds.n_train, -1)
    analyse_network([64, 4, 10], x, ds.train_y, steps=2, dtype=torch.float32)  # warm-up
    rows = []
    for width in (16, 26):
        sizes = [64, width, 10]
        for label, phases in (("one phase (what one cached page call does)", (PHASES[0],)),
                              ("three phases: init, middle, end", PHASES)):
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                analyse_network(sizes, x, ds.train_y, steps=200, batch=256, phases=phases,
                                heatmap_cells=200, dtype=torch.float32)
                times.append(time.perf_counter() - t0)
            d = parameter_count(sizes)
            rows.append({"d": d, "what": label, "seconds": statistics.median(times), "times": times})
            print(f"  page d={d} {label}: {rows[-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    return rows


def run_page_app(reps: int = 3) -> list[dict]:
    """The whole page under AppTest: a fresh setting (cache miss) and the same setting again (hit)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from etr_core import hessian_plan
    from etr_core.hessian_experiment import parameter_count

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/hessian_diagonal.py").run()
    rows = []
    for width in (16, 24, 32):
        cold, warm = [], []
        for _ in range(reps):
            st.cache_data.clear()
            hessian_plan._REGISTRY = None  # the page's results live in the job registry's cache
            at.select_slider(key="hd_width").set_value(2).run()
            t0 = time.perf_counter()
            at.select_slider(key="hd_width").set_value(width).run()
            t1 = time.perf_counter()
            at.run()
            t2 = time.perf_counter()
            if at.exception:
                raise RuntimeError(str(at.exception))
            cold.append(t1 - t0)
            warm.append(t2 - t1)
        d = parameter_count([64, width, 10])
        rows.append({"d": d, "cold": statistics.median(cold), "warm": statistics.median(warm)})
        print(f"  page app d={d}: {rows[-1]['cold']:.2f} s cold, {rows[-1]['warm']:.2f} s cached",
              file=sys.stderr, flush=True)
    return rows


def run_estimators(threads: int, d: int = 10_000) -> dict:
    """Cost per sampled row and per Hutchinson probe in gradients; accuracy against the exact H."""
    import torch

    from etr_core.curvature import (
        diagonal_mass,
        exact_hessian,
        hutchinson_diagonal,
        network_hvp,
        parameter_blocks,
        relative_l2_error,
        sampled_row_mass,
    )
    from etr_core.models import MLP

    torch.set_num_threads(threads)
    sizes = SIZES[d]
    torch.manual_seed(0)
    model = MLP(list(sizes))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (256,), generator=gen)
    params = list(model.parameters())

    def gradient() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)

    hvp = network_hvp(model, x, y)
    v = torch.randn(d, generator=gen)
    e = torch.zeros(d)
    e[5] = 1
    for _ in range(3):
        gradient()
        hvp(v)
    ratios, setups, grad_ms = [], [], []
    for _ in range(21):  # paired, interleaved: ratios within the same round
        t0 = time.perf_counter()
        gradient()
        t1 = time.perf_counter()
        hvp(e)
        t2 = time.perf_counter()
        network_hvp(model, x, y)
        t3 = time.perf_counter()
        grad_ms.append((t1 - t0) * 1e3)
        ratios.append((t2 - t1) / (t1 - t0))
        setups.append((t3 - t2) / (t1 - t0))
    H = exact_hessian(model, x, y).matrix
    exact = diagonal_mass(H)
    diag = H.diagonal().clone()
    row_estimates = {}
    for rows in (30, 100, 300):
        vals, ses = [], []
        for seed in range(10):
            est = sampled_row_mass(hvp, parameter_blocks(model), rows, seed=seed)
            vals.append(est.estimate)
            ses.append(est.std_error)
        covered = sum(abs(v - exact) <= 1.96 * s for v, s in zip(vals, ses))
        row_estimates[rows] = {"mean": statistics.mean(vals), "sd": statistics.stdev(vals),
                               "mean_reported_se": statistics.mean(ses), "covered_of_10": covered}
    hutch = {}
    for probes in (10, 100, 1000):
        t0 = time.perf_counter()
        est = hutchinson_diagonal(hvp, d, probes, seed=1)
        seconds = time.perf_counter() - t0
        abs_sum_err = abs(float(est.diag.abs().sum()) - float(diag.abs().sum())) / float(diag.abs().sum())
        hutch[probes] = {"rel_l2_error": relative_l2_error(est.diag, diag),
                         "reported_rel_se": float(est.std_error.norm() / diag.norm()),
                         "self_rel_se": est.relative_std_error,
                         "abs_sum_rel_error": abs_sum_err, "seconds": seconds}
    return {"d": d, "grad_ms": statistics.median(grad_ms), "hvp_over_grad": statistics.median(ratios),
            "setup_over_grad": statistics.median(setups), "exact_delta": exact,
            "rows": row_estimates, "hutchinson": hutch}


def run_cuda_check() -> list[str]:
    """Correctness on CUDA against the CPU: exact Hessians, estimators, one experiment run."""
    import torch

    from etr_core.curvature import (
        HESSIAN_METHODS,
        diagonal_mass,
        exact_hessian,
        hutchinson_diagonal,
        lanczos_extreme_eigenvalues,
        network_hvp,
        parameter_blocks,
        sampled_row_mass,
    )
    from etr_core.hessian_experiment import analyse_network
    from etr_core.models import MLP

    if not torch.cuda.is_available():
        return ["CUDA check skipped: torch.cuda.is_available() is False"]
    lines = [f"CUDA check on {torch.cuda.get_device_name(0)}:"]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MLP([20, 16, 5]).double()
    x = torch.randn(128, 20, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (128,), generator=gen)
    H_cpu = exact_hessian(model, x, y).matrix
    gpu_model = MLP([20, 16, 5]).double().cuda()
    gpu_model.load_state_dict(model.state_dict())
    xg, yg = x.cuda(), y.cuda()
    for method in HESSIAN_METHODS:
        H_gpu = exact_hessian(gpu_model, xg, yg, method=method).matrix
        err = float((H_gpu.cpu() - H_cpu).abs().max() / H_cpu.abs().max())
        lines.append(f"  exact_hessian({method}): on {H_gpu.device}, max rel. diff vs CPU {err:.1e}")
    hvp = network_hvp(gpu_model, xg, yg)
    est = sampled_row_mass(hvp, parameter_blocks(gpu_model), 10_000)
    exact = diagonal_mass(H_cpu)
    lines.append(f"  sampled_row_mass census on cuda: {est.estimate:.6f} vs CPU exact {exact:.6f}")
    hut = hutchinson_diagonal(hvp, H_cpu.shape[0], 20)
    finite = bool(torch.isfinite(hut.diag).all())
    lines.append(f"  hutchinson with cuda HVPs: {hut.probes} probes, all finite {finite}")
    lz = lanczos_extreme_eigenvalues(hvp, H_cpu.shape[0], H_cpu.shape[0])
    eig = torch.linalg.eigvalsh(H_cpu)
    lines.append(f"  lanczos on cuda: [{lz.smallest:.6f}, {lz.largest:.6f}] vs eigvalsh "
                 f"[{float(eig[0]):.6f}, {float(eig[-1]):.6f}]")
    a_cpu = analyse_network([20, 16, 5], x.float(), y, steps=20, batch=64, device="cpu")
    a_gpu = analyse_network([20, 16, 5], x.float(), y, steps=20, batch=64, device="cuda")
    for sc, sg in zip(a_cpu.snapshots, a_gpu.snapshots):
        lines.append(f"  analyse_network {sc.phase}: delta_H cpu {sc.comparison.delta_h:.6f} "
                     f"cuda {sg.comparison.delta_h:.6f}")
    return lines


def markdown(exact: list[dict], page: list[dict], est: dict | None, threads: int, load: str, cmd: str,
             app: list[dict] | None = None) -> str:
    import torch

    lines = ["## Exact Hessian, page computation and estimators", "",
             f"Command: `{cmd}`", "",
             f"torch {torch.__version__}, {os.cpu_count()} CPU cores, {threads} intra-op thread(s); "
             f"1-minute load average before / after the run: {load}.", ""]
    if exact:
        where = exact[0].get("device", "cpu")
        memory = "peak GPU allocation growth" if where == "cuda" else "peak RSS growth"
        lines += [f"### Exact Hessian on {where} (tanh MLP, cross entropy, batch 256, float32)", "",
                  f"| d | method | chunk | time (median) | {memory} | size of H |",
                  "|---|---|---|---|---|---|"]
        for r in exact:
            lines.append(f"| {r['d']:,} | {r['method']} | {r['chunk']} | {r['seconds']:.2f} s | "
                         f"+{r['peak_mb']:.0f} MB | {r['h_mb']:.0f} MB |")
        lines.append("")
    if page:
        lines += ["### The page computation (digits, RMSProp 200 steps, batch 256, float32, heatmap 200x200)",
                  "",
                  "| d | what | time (median of 3) |", "|---|---|---|"]
        for r in page:
            lines.append(f"| {r['d']:,} | {r['what']} | {r['seconds']:.2f} s |")
        lines.append("")
    if app:
        lines += ["### The whole page under AppTest (default settings, hidden width varied; median of 3)", "",
                  "| d | new setting (cache cleared): train, 3 Hessians, Monte Carlo, figures | same setting "
                  "again (cached) |", "|---|---|---|"]
        for r in app:
            lines.append(f"| {r['d']:,} | {r['cold']:.2f} s | {r['warm']:.2f} s |")
        lines.append("")
    if est:
        lines += [f"### Estimators at d = {est['d']:,} (batch 256, float32)", "",
                  f"* one gradient: {est['grad_ms']:.1f} ms; one HVP on the retained graph (= one sampled "
                  f"row or one Hutchinson probe): **{est['hvp_over_grad']:.2f} gradient-equivalents** "
                  f"(paired median of 21); the create_graph set-up: {est['setup_over_grad']:.2f} gradients.",
                  f"* exact δ_H = {est['exact_delta']:.5f}", "",
                  "| sampled rows | mean of 10 estimates | sd over seeds | mean reported std. error "
                  "| intervals covering exact |", "|---|---|---|---|---|"]
        for rows, r in est["rows"].items():
            relative = 100 * r["sd"] / est["exact_delta"]
            lines.append(f"| {rows} | {r['mean']:.5f} | {r['sd']:.5f} ({relative:.0f}%) "
                         f"| {r['mean_reported_se']:.5f} | {r['covered_of_10']}/10 |")
        lines += ["", "| Hutchinson probes | relative L2 error of diag "
                  "| ‖reported std. error‖ / ‖exact diag‖ | ‖std. error‖ / ‖estimate‖ "
                  "| error of Σ|diag| | time |",
                  "|---|---|---|---|---|---|"]
        for probes, r in est["hutchinson"].items():
            lines.append(f"| {probes} | {100 * r['rel_l2_error']:.0f}% | {100 * r['reported_rel_se']:.0f}% | "
                         f"{100 * r['self_rel_se']:.0f}% | {100 * r['abs_sum_rel_error']:.1f}% | "
                         f"{r['seconds']:.2f} s |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "exact", "page", "estimators", "cuda_check"), default="all")
    parser.add_argument("--sizes", default="1042,1960,3760,10000")
    parser.add_argument("--methods", default="reverse,forward,double_backward")
    parser.add_argument("--chunks", default="512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="device of the exact-Hessian part (cpu or cuda)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_exact(*json.loads(args.child))))
        return
    if args.part == "cuda_check":
        print("\n".join(run_cuda_check()))
        return
    load_before = f"{os.getloadavg()[0]:.1f}"
    exact = page = app = []
    est = None
    if args.part in ("all", "exact"):
        exact = run_exact([int(s) for s in args.sizes.split(",")], args.methods.split(","),
                          [int(c) for c in args.chunks.split(",")], args.threads, args.device)
    if args.part in ("all", "page"):
        page = run_page(args.threads)
        app = run_page_app()
    if args.part in ("all", "estimators"):
        est = run_estimators(args.threads)
    load = f"{load_before} / {os.getloadavg()[0]:.1f}"
    cmd = "python3 benchmarks/bench_hessian.py " + " ".join(sys.argv[1:])
    print(markdown(exact, page, est, args.threads, load, cmd.strip(), app))


if __name__ == "__main__":
    main()
