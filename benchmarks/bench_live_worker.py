"""Live training on a shared server: memory with a real data set, and page loads during a class.

``--memory`` (no browser): this process plays the server. It submits one live run with all seven
methods on a file data set (MNIST from ``$ETR_DATA``, all 60,000 training images) and samples, every
0.25 s, its own resident memory and the worker process's (VmRSS, and PSS, which splits pages shared
with the fork server fairly). It does so twice: with the worker's shared read-only data set (what
the app does) and with ``share_data=False`` (every method loads its own copy, as each method
thread did before runs moved out of the server).

``--classroom`` (real browser: playwright + Debian chromium): starts ``streamlit run app.py``, loads
another page (``--page``) ``--reps`` times on the idle server, then opens ``--sessions`` tabs on
the live page and presses Start in each (the first ``ETR_LIVE_MAX_RUNS`` train, the rest queue),
and loads the other page again ``--reps`` times. A load is timed from ``goto`` until its chart is
drawn and the script run has finished. Medians are reported, with the server process's CPU share
and the 1-minute load average. The live settings come from the environment (``ETR_LIVE_NICE``,
``ETR_LIVE_SCHED_IDLE``, ``ETR_LIVE_POLL_*``), so each can be measured on its own.
``--interleave`` follows each busy load by one with every worker and student stopped (paired
ratios on the same server, far less noisy than busy against idle). Each load also prints its
phases: the HTML, the app's websocket opening, the chart drawn. ``--server-cpus``,
``--client-cpus`` and ``--students-cpus`` pin the server (with its workers), the measured browser
and the students' browser, so that the measured browser can have a core of its own, as a
student's laptop would.

Run from the repository root::

    ETR_DATA=DATA python3 benchmarks/bench_live_worker.py --memory --seconds 40
    python3 benchmarks/bench_live_worker.py --classroom --sessions 8 --reps 3
    python3 benchmarks/bench_live_worker.py --classroom --sessions 8 --reps 6 --interleave \
        --server-cpus 1 --client-cpus 0 --students-cpus 1
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALL_METHODS = ["TR_uni", "TR_ada", "TR_rms", "SGD", "Adagrad", "RMSprop", "Adam"]
LONG_RUN = "lt_budget=20000&lt_max_steps=20000&lt_max_seconds=300&lt_eval_every=10"


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(dataset: str, seconds: float, max_train: int) -> None:
    """Peak memory of the server process and of the worker for one all-methods run."""
    import torch

    from etr_core.live import LiveRun, comparison_configs, start_worker_server

    torch.set_num_threads(1)
    start_worker_server()
    print(f"data set {dataset} from {os.environ.get('ETR_DATA')}, max_train {max_train}, all 7 methods, "
          f"mlp_small, {seconds:g} s per run\n")
    print("| worker data | server RSS before (MB) | server RSS peak (MB) | worker RSS peak (MB) "
          "| worker PSS peak (MB) | steps recorded |")
    print("|---|---|---|---|---|---|")
    for share in (True, False):
        configs = comparison_configs(ALL_METHODS, dataset=dataset, max_steps=100_000, eval_every=50,
                                     device="cpu", data_options={"max_train": max_train})
        before = _status_kib(os.getpid(), "VmRSS")
        run = LiveRun(configs, max_seconds=seconds, share_data=share).start()
        peak_server = peak_worker = peak_pss = 0
        while run.is_alive():
            pid = run._process.pid if run._process is not None else None
            peak_server = max(peak_server, _status_kib(os.getpid(), "VmRSS"))
            if pid:
                peak_worker = max(peak_worker, _status_kib(pid, "VmRSS"))
                peak_pss = max(peak_pss, _pss_kib(pid))
            time.sleep(0.25)
        snap = run.snapshot()
        label = "one shared copy" if share else "one copy per method"
        print(f"| {label} | {before / 1024:.0f} | {peak_server / 1024:.0f} | {peak_worker / 1024:.0f} "
              f"| {peak_pss / 1024:.0f} | {snap.n_steps} ({snap.status}) |")


# ------------------------------------------------------------------ classroom (real browser)


def _server(env: dict[str, str], cpus: str | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(ROOT / "artifacts" / "bench_classroom_streamlit.log", "w")
    pin = ["taskset", "-c", cpus] if cpus else []  # the live workers inherit it
    proc = subprocess.Popen(
        [*pin, sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy")


def _launcher(executable: str, name: str, cpus: str | None = None, niced: bool = False,
              idle: bool = False) -> str:
    """A wrapper script ``artifacts/<name>.sh`` that starts ``executable`` on ``cpus`` only (all when
    ``None``), at nice 19 when ``niced`` (the students' browsers; chromium resets its children's
    priority, so :func:`_keep_niced` holds them there) and under Linux's ``SCHED_IDLE`` policy too
    when ``idle`` (inherited by every process it starts)."""
    wrapper = ROOT / "artifacts" / f"{name}.sh"
    pin = f"taskset -c {cpus} " if cpus else ""
    policy = "chrt --idle 0 " if idle else ""
    nice = "nice -n 19 " if niced else ""
    wrapper.write_text(f'#!/bin/sh\nexec {pin}{policy}{nice}"{executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process (Linux ``/proc``)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _keep_niced(root_pids: set[int], stop: threading.Event, idle: bool = False) -> None:
    """Hold every descendant of ``root_pids`` at nice 19 (chromium resets its renderers' priority),
    and under ``SCHED_IDLE`` when ``idle``."""
    while not stop.wait(0.3):
        tree, todo = _children(), list(root_pids)
        while todo:
            pid = todo.pop()
            todo.extend(tree.get(pid, ()))
            try:
                os.setpriority(os.PRIO_PROCESS, pid, 19)
                for task in Path(f"/proc/{pid}/task").iterdir():
                    os.setpriority(os.PRIO_PROCESS, int(task.name), 19)
                    if idle:
                        os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
            except (OSError, ValueError):
                pass


def _browser_mains() -> set[int]:
    """Pids of chromium browser main processes (not renderers, GPU or utility processes)."""
    mains = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"chromium" in cmd.split(b"\0")[0] and b"--type=" not in cmd:
                mains.add(int(entry.name))
    return mains


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root_pids: set[int]) -> float:
    """CPU seconds of ``root_pids`` and all their descendants still alive."""
    tree, todo, total = _children(), list(root_pids), 0.0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            total += _cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total


def _descendants(root_pids: set[int]) -> list[int]:
    """Every live descendant of ``root_pids`` (not the roots)."""
    tree, todo, found = _children(), list(root_pids), []
    while todo:
        for child in tree.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _cpu_seconds_by_part(server_pid: int, student_mains: set[int]) -> dict[str, float]:
    """CPU seconds so far of the server process, its live workers and the students' browser."""
    server = _cpu_seconds(server_pid)
    return {"server": server, "students": _tree_cpu_seconds(student_mains),
            "workers": _tree_cpu_seconds({server_pid}) - server}


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


# per load: seconds to the first byte, to the app's websocket opening, to the chart drawn
PHASES: list[tuple[float, float, float]] = []


def _load(browser, url: str) -> float:
    """Seconds from ``goto`` to the page's chart drawn and its script run finished; the phases (to
    the HTML, to the app's websocket opening, to the chart drawn) are appended to :data:`PHASES`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    opened: list[float] = []
    page.on("websocket", lambda ws: opened.append(time.perf_counter()))
    try:
        start = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=300_000)
        first = time.perf_counter()
        page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=300_000)
        chart = time.perf_counter()
        _idle(page)
        total = time.perf_counter() - start
        PHASES.append((first - start, (opened[0] if opened else chart) - start, chart - start))
        return total
    finally:
        context.close()


def _last_phases() -> str:
    return f"(HTML, websocket, chart at {', '.join(f'{t:.2f}' for t in PHASES[-1])})"


def _idle(page, timeout_ms: int = 300_000) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                           timeout=timeout_ms)


def _start(tab) -> None:
    """Press Start once the page has settled; press again if the click was lost in a rerun."""
    start = tab.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Start")
    start.wait_for(timeout=300_000)
    for _ in range(5):
        _idle(tab)
        if start.is_enabled():
            start.click(no_wait_after=True)
        try:
            tab.wait_for_function("() => location.search.includes('run=')", timeout=60_000)
            return
        except Exception:  # playwright's timeout: look for a refusal, then retry
            error = tab.get_by_text("Could not start")
            if error.count():
                raise SystemExit(f"Start was refused: {error.first.inner_text()}") from None
    raise SystemExit("Start did not create a run in five attempts")


def classroom(
    sessions: int, reps: int, page_path: str, settle: float, students_cpus: str | None = None,
    students_idle: bool = False, pause: str = "none", interleave: bool = False,
    server_cpus: str | None = None, client_cpus: str | None = None,
) -> None:
    from playwright.sync_api import sync_playwright

    (ROOT / "artifacts").mkdir(exist_ok=True)
    load_before = os.getloadavg()[0]
    if client_cpus:  # this script and playwright's driver, which relay the measured browser's events
        try:
            os.sched_setaffinity(0, {int(c) for c in client_cpus.split(",")})
        except (ValueError, OSError) as exc:
            raise SystemExit(f"--client-cpus must be a comma list of this machine's CPUs (e.g. 0), "
                             f"got {client_cpus!r}: {exc}") from None
    proc, url = _server(dict(os.environ), server_cpus)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    try:
        with sync_playwright() as p:
            chromium = os.environ.get("ETR_CHROMIUM", "/usr/bin/chromium")
            measured = _launcher(chromium, "chromium_measured", client_cpus)
            browser = p.chromium.launch(executable_path=measured, headless=True, args=args)
            # The students' tabs stand for browsers on the students' own machines: they run in a
            # second browser at the lowest CPU priority, so that their chart drawing does not take
            # the measured tab's or the server's CPU on this one machine.
            before = _browser_mains()
            students = p.chromium.launch(executable_path=_launcher(
                chromium, "chromium_students", students_cpus, niced=True, idle=students_idle),
                                         headless=True, args=args)
            stop_nicing = threading.Event()
            student_mains = _browser_mains() - before
            threading.Thread(target=_keep_niced, args=(student_mains, stop_nicing, students_idle),
                             daemon=True).start()
            target = f"{url}/{page_path}"
            _load(browser, target)  # warm-up: first imports and the page's cached computations
            idle = [_load(browser, target) for _ in range(reps)]
            print(f"idle loads (s): {idle}", flush=True)
            tabs = []
            for i in range(sessions):
                context = students.new_context(viewport={"width": 1400, "height": 1000})
                tab = context.new_page()
                methods = "TR_uni,TR_rms,Adam" if i % 2 == 0 else "TR_ada,SGD"
                tab.goto(f"{url}/live_training?lt_methods={methods}&{LONG_RUN}",
                         wait_until="domcontentloaded", timeout=300_000)
                _start(tab)
                tabs.append(tab)
            time.sleep(settle)
            states = [t.get_by_test_id("stMainBlockContainer").inner_text() for t in tabs]
            training = sum("running ·" in s for s in states)
            queued = sum("Queued:" in s for s in states)
            print(f"{training} training, {queued} queued", flush=True)
            # --pause: stop (SIGSTOP) the training workers or the students' browser during the busy
            # loads, to see which of them the slowdown comes from
            paused = []
            if pause in ("workers", "both"):
                paused += _descendants({proc.pid})
            if pause in ("students", "both"):
                paused += list(student_mains) + _descendants(student_mains)
            _signal_all(paused, signal.SIGSTOP)
            busy, quiet = [], []
            load_busy = os.getloadavg()[0]
            used = {"server": 0.0, "students": 0.0, "workers": 0.0, "seconds": 0.0}
            for _ in range(reps):
                before_cpu = _cpu_seconds_by_part(proc.pid, student_mains)
                start = time.perf_counter()
                busy.append(_load(browser, target))
                used["seconds"] += time.perf_counter() - start
                for key, value in _cpu_seconds_by_part(proc.pid, student_mains).items():
                    used[key] += value - before_cpu[key]
                print(f"busy load (s): {busy[-1]:.2f} {_last_phases()}", flush=True)
                if interleave:  # the same server and tabs with every worker and student stopped
                    stopped = [pid for pid in _descendants({proc.pid}) + list(student_mains)
                               + _descendants(student_mains) if pid not in paused]  # --pause keeps its own
                    _signal_all(stopped, signal.SIGSTOP)
                    quiet.append(_load(browser, target))
                    _signal_all(stopped, signal.SIGCONT)
                    print(f"quiet load (s): {quiet[-1]:.2f} {_last_phases()}", flush=True)
            server_share, students_share, workers_share = (
                used[key] / used["seconds"] for key in ("server", "students", "workers"))
            _signal_all(paused, signal.SIGCONT)
            stop_nicing.set()
            students.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\nserver: streamlit run app.py; {sessions} live-page tabs ({training} training, {queued} queued "
          f"when measured); page /{page_path}; {reps} loads each, medians; CPUs: server "
          f"{server_cpus or 'all'}, measured browser {client_cpus or 'all'}, "
          f"students {students_cpus or 'all'}\n")
    print("| server state | page load (s) | loads (s) |")
    print("|---|---|---|")
    for label, times in (("idle", idle), (f"{sessions} live sessions", busy)):
        print(f"| {label} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
    print(f"\nratio busy / idle: {statistics.median(busy) / statistics.median(idle):.2f}")
    if quiet:
        pairs = sorted(b / q for b, q in zip(busy, quiet))
        print(f"busy / quiet, the same server with workers and students stopped, loads alternating: "
              f"median {statistics.median(pairs):.2f} (pairs {', '.join(f'{r:.2f}' for r in pairs)}); "
              f"quiet loads {', '.join(f'{t:.2f}' for t in quiet)} s, quiet / idle "
              f"{statistics.median(quiet) / statistics.median(idle):.2f}")
    print(f"server process CPU while busy (polls of {sessions} tabs + the measured loads): "
          f"{server_share:.2f} cores")
    print(f"paused during the busy loads: {pause}")
    # a worker that ended during the loads takes its CPU time with it: then the share is not known
    shown = f"{workers_share:.2f} cores" if workers_share >= 0 else "not known (a worker ended)"
    print(f"live workers CPU while busy: {shown}")
    print(f"students' browser (nice 19{' + SCHED_IDLE' if students_idle else ''}) CPU while busy: "
          f"{students_share:.2f} cores")
    print(f"load average (1 min): {load_before:.2f} before the server started, {load_busy:.2f} before the "
          "busy loads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--max-train", type=int, default=60000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--classroom", action="store_true")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--page", default="implicit_trust_regions")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the last Start")
    parser.add_argument("--students-cpus", default=None,
                        help="pin the students' browser to these CPUs (taskset list, e.g. 1)")
    parser.add_argument("--students-idle", action="store_true",
                        help="run the students' browser under SCHED_IDLE as well as nice 19: it then gets "
                        "only CPU time nobody else wants, as if it ran on the students' own machines")
    parser.add_argument("--pause", default="none", choices=["none", "workers", "students", "both"],
                        help="SIGSTOP the live workers and/or the students' browser during the busy loads "
                        "(to attribute the slowdown)")
    parser.add_argument("--server-cpus", default=None,
                        help="pin the server and its live workers to these CPUs (taskset list, e.g. 1)")
    parser.add_argument("--client-cpus", default=None,
                        help="pin the measured browser (and this script) to these CPUs (comma list, e.g. 0): "
                        "with --server-cpus and --students-cpus on the other CPUs, the measured browser "
                        "has a machine of its own, as a student's laptop would")
    parser.add_argument("--interleave", action="store_true",
                        help="after each busy load, one more with every worker and student stopped "
                        "(paired ratios, less noise than busy against idle)")
    args = parser.parse_args()
    if args.memory:
        memory(args.dataset, args.seconds, args.max_train)
    if args.classroom:
        classroom(args.sessions, args.reps, args.page, args.settle, args.students_cpus, args.students_idle,
                  args.pause, args.interleave, args.server_cpus, args.client_cpus)


if __name__ == "__main__":
    main()
