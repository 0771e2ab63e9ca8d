"""Run folders that can be trusted: no code from any file, damaged checkpoints found, nothing lost.

Oracles: an uninterrupted run of the same configuration (bitwise), the file formats themselves
(a byte flipped in a tensor's stored bytes), and marker files that only planted code would create.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import warnings

import pytest
import torch

from etr_core import checkpoints, results
from etr_core.checkpoints import CheckpointWarning, read_checkpoint, save_checkpoint
from etr_core.errors import CheckpointError, RunFolderBusyError, user_message
from etr_core.files import RunLock
from etr_core.results import ResultsWarning, load_run, read_jsonl, run_state
from etr_core.training import TrainConfig, train


class Killed(Exception):
    """Stands in for SIGKILL: the run stops abruptly, writing nothing more."""


class KillAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, record):
        if record["step"] == self.step:
            raise Killed


def _cfg(**kwargs) -> TrainConfig:
    base = dict(
        method="SGD",
        device="cpu",
        max_steps=9,
        eval_every=3,
        checkpoint_every=4,
        data_options={"max_train": 200},
    )
    base.update(kwargs)
    return TrainConfig(**base)


class _Payload:
    """Creates ``marker`` when unpickled by an unrestricted unpickler (torch.load(weights_only=False))."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _assert_same_run(a, b) -> None:
    assert a.losses == b.losses
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 9-step run, the oracle of every resumed run below."""
    return train(_cfg(), run_dir=tmp_path_factory.mktemp("ref") / "run")


def _cut(tmp_path, step: int = 6):
    """A run killed at ``step`` (checkpoints at 4 and 8: at step 6 only step 4's exists)."""
    run = tmp_path / "cut"
    with pytest.raises(Killed):
        train(_cfg(), run_dir=run, callbacks=[KillAt(step)])
    return run


# -- no code runs from any file the project reads --------------------------------------------------


def test_planted_checkpoint_payload_runs_nothing_and_is_refused(tmp_path):
    run = _cut(tmp_path)
    marker = tmp_path / "pwned"
    for name in (checkpoints.CHECKPOINT_FILE, checkpoints.PREVIOUS_CHECKPOINT_FILE):
        (run / name).unlink(missing_ok=True)
    torch.save({"step": 4, "config": {}, "x": _Payload(marker)}, run / checkpoints.CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not a safe checkpoint") as info:
        train(_cfg(), run_dir=run, resume=True)
    assert str(run / checkpoints.CHECKPOINT_FILE) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["cos\nsystem\n(S'touch PWNED'\ntR.", "[1, 2]", '"os.system"'])
def test_planted_json_payloads_run_nothing(tmp_path, monkeypatch, text):
    run = tmp_path / "run"
    train(_cfg(max_steps=2), run_dir=run)
    (run / results.CONFIG_FILE).write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"config\.json: (not valid JSON|expected a JSON object)"):
        load_run(run)
    (run / results.CONFIG_FILE).write_text("{}")
    (run / results.METRICS_FILE).write_text(text + "\n")
    with pytest.warns(ResultsWarning, match=r"metrics\.jsonl: skipped \d unreadable line"):
        assert load_run(run).metrics.empty
    assert not (tmp_path / "PWNED").exists()


def test_json_that_looks_like_a_pickle_reduce_is_plain_data(tmp_path):
    run = tmp_path / "run"
    train(_cfg(max_steps=2), run_dir=run)
    planted = {"__reduce__": ["os.system", "touch PWNED"], "method": "SGD"}
    (run / results.CONFIG_FILE).write_text(json.dumps(planted))
    assert load_run(run).config == planted


# -- damaged checkpoints ---------------------------------------------------------------------------


def _flip_tensor_byte(path, tensor: torch.Tensor) -> None:
    raw = bytearray(path.read_bytes())
    data = tensor.contiguous().numpy().tobytes()
    at = raw.find(data)
    assert at > 0 and raw.find(data, at + 1) < 0
    raw[at + len(data) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_flipped_byte_falls_back_to_previous_checkpoint_and_reproduces_the_run(tmp_path, reference):
    run = tmp_path / "cut"
    with pytest.raises(Killed):
        train(_cfg(), run_dir=run, callbacks=[KillAt(9)])  # checkpoints at 4 (prev) and 8
    newest = run / checkpoints.CHECKPOINT_FILE
    weight = read_checkpoint(newest)["model"]["net.1.weight"]
    _flip_tensor_byte(newest, weight)
    assert torch.load(newest, weights_only=True)["step"] == 8  # torch alone accepts the damaged file
    with pytest.warns(CheckpointWarning, match=r"checkpoint\.pt: damaged.*checkpoint\.prev\.pt \(step 4\)"):
        resumed = train(_cfg(), run_dir=run, resume=True)
    assert resumed.summary["resumed_from_step"] == 4
    _assert_same_run(resumed, reference)
    assert (run / results.DAMAGED_CHECKPOINT_FILE).exists()  # kept for inspection, not reused
    assert read_checkpoint(newest)["step"] == 9


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_unreadable_checkpoint_without_a_previous_one_is_refused_by_name(tmp_path, damage):
    run = _cut(tmp_path)
    (run / checkpoints.PREVIOUS_CHECKPOINT_FILE).unlink(missing_ok=True)
    path = run / checkpoints.CHECKPOINT_FILE
    raw = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "garbage": b"x" * 100}[damage])
    with pytest.raises(CheckpointError) as info:
        train(_cfg(), run_dir=run, resume=True)
    message = user_message(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert ("empty" if damage == "empty" else "truncated or damaged") in message


def test_checkpoint_digest_covers_every_entry(tmp_path):
    state = {"step": 3, "w": torch.arange(4.0), "meta": {"lr": 0.1, "names": ["a", "b"]}}
    save_checkpoint(tmp_path, state)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["meta"] == state["meta"]
    for changed in ({**state, "step": 4}, {**state, "meta": {"lr": 0.2, "names": ["a", "b"]}}):
        record = {**changed, "sha256": checkpoints.state_digest(state)}
        torch.save(record, tmp_path / "checkpoint.pt")
        with pytest.raises(CheckpointError, match="does not match its sha256"):
            read_checkpoint(tmp_path / "checkpoint.pt")


# -- logs ------------------------------------------------------------------------------------------


def test_bad_middle_line_is_skipped_and_reported_and_resume_keeps_the_valid_rows(tmp_path, reference):
    run = _cut(tmp_path)  # rows 1..6 written, the checkpoint is at step 4
    path = run / results.METRICS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"step": 2, "loss": oops\n'
    path.write_text("".join(lines))
    with pytest.warns(ResultsWarning, match=r"metrics\.jsonl: skipped 1 unreadable line\(s\) \(line 2\)"):
        assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4, 5, 6]
    with pytest.warns(ResultsWarning):
        train(_cfg(), run_dir=run, resume=True)
    rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 3, 4, 5, 6, 7, 8, 9]
    ref_rows = {r["step"]: r["loss"] for r in read_jsonl(reference.run_dir / results.METRICS_FILE)}
    assert all(r["loss"] == ref_rows[r["step"]] for r in rows)


def test_torn_last_line_is_skipped_silently(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n[3]\n{"step": 2}\n{"step": 3, "lo')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert [str(w.message).count("line 2") for w in caught] == [1]  # the list row, not the torn line


# -- locking, stale files, restarts, recorded changes ----------------------------------------------


def test_a_second_writer_is_refused_while_the_folder_is_locked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        pattern = f"{run} is being written by another process \\(pid {os.getpid()}\\)"
        with pytest.raises(RunFolderBusyError, match=pattern):
            train(_cfg(max_steps=2), run_dir=run)
        assert run_state(run) == "empty"  # refused before writing anything
    train(_cfg(max_steps=2), run_dir=run)  # released: the folder is usable
    with pytest.raises(Killed):
        train(_cfg(max_steps=4), run_dir=run, resume=True, callbacks=[KillAt(3)])
    RunLock(run).acquire().release()  # an exception inside a run releases the lock too


def test_stale_temporaries_are_removed_on_resume(tmp_path, reference):
    run = _cut(tmp_path)
    stale = run / ".checkpoint.pt.1a2b3c4d5e6f.tmp"
    stale.write_bytes(b"\0" * 4096)
    resumed = train(_cfg(), run_dir=run, resume=True)
    assert not stale.exists()
    _assert_same_run(resumed, reference)


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, reference):
    run = tmp_path / "early"
    with pytest.raises(Killed):
        train(_cfg(), run_dir=run, callbacks=[KillAt(3)])
    assert run_state(run) == "unstarted"
    with pytest.warns(ResultsWarning, match="stopped before its first checkpoint"):
        again = train(_cfg(), run_dir=run)
    _assert_same_run(again, reference)
    assert [r["step"] for r in read_jsonl(run / results.METRICS_FILE)] == list(range(1, 10))
    run2 = tmp_path / "early2"
    with pytest.raises(Killed):
        train(_cfg(), run_dir=run2, callbacks=[KillAt(2)])
    with pytest.warns(ResultsWarning):
        resumed = train(_cfg(), run_dir=run2, resume=True)  # resume from step 0
    assert resumed.summary["resumed_from_step"] is None
    _assert_same_run(resumed, reference)


def test_budget_extension_is_recorded(tmp_path):
    run = tmp_path / "run"
    train(_cfg(max_steps=2), run_dir=run)
    train(_cfg(max_steps=3, eval_every=2), run_dir=run, resume=True)
    config = json.loads((run / results.CONFIG_FILE).read_text())
    assert config["max_steps"] == 3
    assert config["resumes"] == [
        {
            "step": 2,
            "changes": {"max_steps": {"before": 2, "after": 3}, "eval_every": {"before": 3, "after": 2}},
        }
    ]
    with pytest.raises(ValueError, match=r"differs in \['batch_size'\]"):
        train(_cfg(max_steps=4, batch_size=64), run_dir=run, resume=True)


# -- permissions and full disks --------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        run = tmp_path / "run"
        train(_cfg(max_steps=4, checkpoint_every=2), run_dir=run)
    finally:
        os.umask(old)
    names = sorted(p.name for p in run.iterdir())
    assert {"checkpoint.pt", "checkpoint.prev.pt", "config.json", "metrics.jsonl", ".lock"} <= set(names)
    for p in run.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


def test_full_disk_names_the_file_leaves_no_temporary_and_the_run_resumes(tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-8 checkpoint
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError) as info:
        train(_cfg(), run_dir=run)
    monkeypatch.setattr(torch, "save", real_save)
    message = user_message(info.value)
    assert f"{run / 'checkpoint.pt'}: no space left on the device" in message and "--resume" in message
    assert not list(run.glob(".*.tmp"))
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 4
    _assert_same_run(train(_cfg(), run_dir=run, resume=True), reference)


def test_unreadable_summary_is_reported_and_read_as_absent(tmp_path):
    run = tmp_path / "run"
    train(_cfg(max_steps=2), run_dir=run)
    (run / results.SUMMARY_FILE).write_text('{"step": 2, ')
    with pytest.warns(ResultsWarning, match=r"summary\.json: not valid JSON"):
        loaded = load_run(run)
    assert loaded.summary is None and list(loaded.metrics["step"]) == [1, 2]
