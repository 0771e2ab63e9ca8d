"""Live workers pause between steps while the server draws a page (etr_core.live.foreground).

The gate is a file whose modification time says until when workers wait: the server's side sets it
around every page's script run, the worker's side reads it between two steps. Checked here with
the clock: what the gate says inside and after a script run, how long a worker waits (bounded by
``max_wait`` and by a stop request), and that a run, in a thread and in a real worker process,
records no step while a page is being drawn and goes on afterwards.
"""

from __future__ import annotations

import threading
import time

import pytest

from etr_core.live import LiveRun, stop_all_runs
from etr_core.live import foreground as fg
from etr_core.live.foreground import ForegroundGate, default_gate, foreground_pause, wait_for_foreground
from tests.core.live_fakes import FakeConfig, fake_train


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    yield
    assert stop_all_runs(timeout=30.0) == 0, "a live run outlived its test"


def test_the_gate_holds_while_any_script_runs_and_for_the_tail_after_the_last(tmp_path):
    gate = ForegroundGate(tmp_path / "g", tail=0.4, hold=30.0)
    assert gate.until() < time.time()  # a new gate lets workers go
    with gate.busy():
        assert gate.active == 1 and gate.until() >= time.time() + 29.0
        with gate.busy():
            assert gate.active == 2
        assert gate.until() >= time.time() + 29.0  # the outer run still holds
    ended = time.time()
    assert gate.active == 0
    assert ended + 0.3 <= gate.until() <= ended + 0.5


def test_an_exception_in_the_script_run_still_releases_the_gate(tmp_path):
    gate = ForegroundGate(tmp_path / "g", tail=0.0)
    with pytest.raises(KeyError), gate.busy():
        raise KeyError("a page failed (or Streamlit's rerun exception)")
    assert gate.active == 0 and gate.until() <= time.time()


def test_a_removed_signal_file_is_recreated(tmp_path):
    gate = ForegroundGate(tmp_path / "sub" / "g", tail=0.2)
    gate.path.unlink()
    with gate.busy():
        assert gate.path.exists() and gate.until() > time.time() + 10


def test_the_worker_waits_until_the_time_the_gate_gives(tmp_path):
    gate = ForegroundGate(tmp_path / "g", tail=0.3)
    assert wait_for_foreground(None, 5.0) == 0.0
    assert wait_for_foreground(tmp_path / "missing", 5.0) < 0.05
    assert wait_for_foreground(gate.path, 5.0) < 0.05  # in the past: no wait
    with gate.busy():
        pass  # tail 0.3 s from now
    waited = wait_for_foreground(gate.path, 5.0)
    assert 0.2 <= waited <= 1.0


def test_the_wait_is_bounded_by_max_wait_and_by_a_stop_request(tmp_path):
    gate = ForegroundGate(tmp_path / "g", tail=0.0, hold=60.0)
    with gate.busy():
        started = time.monotonic()
        waited = wait_for_foreground(gate.path, 0.3)
        assert 0.25 <= waited <= 1.0 and time.monotonic() - started < 1.5
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        waited = wait_for_foreground(gate.path, 30.0, stop.is_set)
        assert 0.15 <= waited <= 1.5


def test_foreground_pause_is_none_without_a_gate(tmp_path):
    assert foreground_pause(None, 5.0) is None
    gate = ForegroundGate(tmp_path / "g", tail=0.2)
    with gate.busy():
        pass
    pause = foreground_pause(gate.path, 5.0)
    assert 0.1 <= pause(lambda: False) <= 1.0


def test_settings_turn_the_gate_off_and_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setattr(fg, "_DEFAULT", None)
    monkeypatch.delenv("ETR_LIVE_YIELD", raising=False)
    assert default_gate() is None  # off by default
    monkeypatch.setenv("ETR_LIVE_YIELD", "0")
    assert default_gate() is None
    monkeypatch.setenv("ETR_LIVE_YIELD", "1")
    monkeypatch.setenv("ETR_LIVE_YIELD_TAIL_MS", "250")
    gate = default_gate()
    assert gate is not None and gate.tail == 0.25 and default_gate() is gate  # one per process
    for name, bad in (("ETR_LIVE_YIELD", "2"), ("ETR_LIVE_YIELD_TAIL_MS", "-1"),
                      ("ETR_LIVE_YIELD_MAX_SECONDS", "soon")):
        monkeypatch.setenv("ETR_LIVE_YIELD", "1")
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            default_gate() if name != "ETR_LIVE_YIELD_MAX_SECONDS" else fg.max_wait_seconds()
        monkeypatch.delenv(name)


def _steps(run: LiveRun) -> int:
    return len(run.snapshot().steps)


@pytest.mark.parametrize("in_process", [True, False], ids=["thread", "worker process"])
def test_a_run_records_no_step_while_a_page_is_drawn_and_goes_on_after(tmp_path, in_process):
    gate = ForegroundGate(tmp_path / "g", tail=0.0)
    run = LiveRun([FakeConfig("A", max_steps=40, sleep=0.01), FakeConfig("B", max_steps=40, sleep=0.01)],
                  train_fn=fake_train, stall_rule=None, in_process=in_process, foreground=gate.path,
                  yield_max_wait=60.0, max_seconds=120.0)
    with gate.busy():
        run.start()
        deadline = time.monotonic() + 60
        while _steps(run) == 0 and time.monotonic() < deadline:  # the first step runs, then it waits
            time.sleep(0.05)
        time.sleep(1.0)
        held = _steps(run)
        time.sleep(1.5)
        assert _steps(run) == held <= 2, "steps were taken while the page was drawn"
    assert run.join(60), run.status
    snap = run.snapshot()
    assert snap.status == "finished" and len(snap.steps) == 80


def test_a_class_that_never_stops_clicking_slows_training_but_never_halts_it(tmp_path):
    gate = ForegroundGate(tmp_path / "g", tail=0.0)
    run = LiveRun([FakeConfig("A", max_steps=4)], train_fn=fake_train, stall_rule=None, in_process=True,
                  foreground=gate.path, yield_max_wait=0.3, max_seconds=60.0)
    with gate.busy():  # held for the whole run
        started = time.monotonic()
        run.start()
        assert run.join(30), run.status
        took = time.monotonic() - started
    assert run.snapshot().status == "finished" and len(run.snapshot().steps) == 4
    assert 4 * 0.3 * 0.8 <= took <= 10.0  # one pause of max_wait per step


def test_a_stop_request_ends_a_pause_at_once(tmp_path):
    gate = ForegroundGate(tmp_path / "g", tail=0.0)
    run = LiveRun([FakeConfig("A", max_steps=100)], train_fn=fake_train, stall_rule=None, in_process=True,
                  foreground=gate.path, yield_max_wait=600.0, max_seconds=600.0)
    with gate.busy():
        run.start()
        deadline = time.monotonic() + 30
        while _steps(run) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        run.stop()
        assert run.join(10), run.status
        assert time.monotonic() - started < 3.0
    assert run.snapshot().status == "stopped" and len(run.snapshot().steps) == 1


@pytest.mark.parametrize("tail, hold", [
    (float("inf"), 60.0), (float("nan"), 60.0), (-0.1, 60.0), (1e12, 60.0),
    (1.0, float("inf")), (1.0, 1e300), (1.0, 0.0), (1.0, float("nan")),
])
def test_a_gate_refuses_times_it_cannot_write(tmp_path, tail, hold):
    with pytest.raises(ValueError, match="tail must be in"):
        ForegroundGate(tmp_path / "g", tail=tail, hold=hold)


def test_a_failed_mark_does_not_leave_the_gate_held(tmp_path, monkeypatch):
    gate = ForegroundGate(tmp_path / "g", tail=0.0)

    def refuse(*args, **kwargs):
        raise OverflowError("timestamp out of range")

    monkeypatch.setattr(fg.os, "utime", refuse)
    with pytest.raises(OverflowError), gate.busy():
        pass
    monkeypatch.undo()
    assert gate.active == 0
    with gate.busy():
        pass
    assert gate.until() <= time.time() + 0.01  # the tail (0 s), not a hold


def test_runs_holding_the_old_path_keep_pausing_after_a_temp_clean_up(monkeypatch):
    import shutil

    monkeypatch.setattr(fg, "_DEFAULT", None)
    monkeypatch.setenv("ETR_LIVE_YIELD", "1")
    first = default_gate()
    path = first.path
    shutil.rmtree(path.parent)
    second = default_gate()
    assert second is first and second.path == path and path.exists()
    with second.busy():
        assert 0.15 <= wait_for_foreground(path, 0.2) <= 1.0  # a run started before still pauses
    shutil.rmtree(path.parent, ignore_errors=True)


def test_the_gate_folder_is_removed_when_the_server_process_ends(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os; os.environ['ETR_LIVE_YIELD'] = '1'\n"
            "from etr_core.live.foreground import default_gate\n"
            "print(default_gate().path)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    path = Path(out.stdout.strip())
    assert path.name == "foreground" and not path.parent.exists()
