"""Peak memory of one subproblem solve: Steihaug-Toint CG vs GLTR (one pass) vs GLTR two-pass.

Each solver runs in a fresh process on an ill-conditioned diagonal problem (eigenvalues 1e-2..4)
of dimension ``--dim`` (float32) with a radius of half the Newton step's M-norm, the tolerance
tiny: CG stops at the boundary after a few iterations, GLTR goes on along it for ``--iters``
iterations in its Lanczos phase, where the one-pass variant keeps every Lanczos vector and the
two-pass variant none.
Peak = the process's maximum resident set size after the solve minus before it (``ru_maxrss``), in
MB; one vector of the problem is ``4 * dim`` bytes.

    python3 benchmarks/bench_gltr_memory.py --dim 2000000 --iters 50
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(name: str, dim: int, iters: int) -> None:
    import torch

    from etr_core.subproblem import gltr, steihaug_toint_pcg

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    diag = torch.linspace(1e-2, 4.0, dim)
    g = torch.randn(dim, generator=gen)
    m = torch.rand(dim, generator=gen) + 0.5
    hvp = diag.__mul__
    steihaug_toint_pcg(g[:1000], diag[:1000].__mul__, 1.0, m[:1000], max_iter=3)  # warm-up
    radius = 0.5 * float(torch.sqrt(torch.sum(m * (g / diag) ** 2)))  # half the Newton step: binds
    before = _maxrss_mb()
    if name == "cg":
        res = steihaug_toint_pcg(g, hvp, radius, m, kappa=1e-12, theta=0.0, max_iter=iters)
    else:
        two = name == "gltr_two_pass"
        res = gltr(g, hvp, radius, m, kappa=1e-12, theta=0.0, max_iter=iters, two_pass=two)
    peak = _maxrss_mb() - before
    print(json.dumps({"solver": name, "peak_mb": round(peak, 1), "vector_mb": dim * 4 / 2**20,
                      "iterations": res.iterations, "hvp_calls": res.hvp_calls, "exit": res.exit}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=2_000_000)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.dim, args.iters)
        return
    rows = []
    for name in ("cg", "gltr", "gltr_two_pass"):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--dim", str(args.dim),
                              "--iters", str(args.iters)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(out.stdout.strip())
    cg = rows[0]["peak_mb"]
    for r in rows:
        print(f"{r['solver']}: peak {r['peak_mb']:.0f} MB = {r['peak_mb'] / cg:.2f}x CG "
              f"({r['iterations']} iterations, {r['hvp_calls']} products)")


if __name__ == "__main__":
    main()
