"""Run folders: configuration, environment, metrics, evaluations, summary and checkpoints.

Layout of one run folder::

    config.json        the TrainConfig (plus the resolved TR hyper-parameters)
    environment.json   versions, device, threads, command line, start time
    metrics.jsonl      one JSON object per logged training step (the ``on_step`` record)
    evals.jsonl        one JSON object per evaluation (the ``on_eval`` record)
    summary.json       written when the run ends (stop reason, final numbers, counters)
    checkpoint.pt      model, optimiser, sampler, RNG states, counters and clock, with a sha256
    checkpoint.prev.pt the checkpoint before it (used when checkpoint.pt is damaged)
    .lock              held (fcntl) by the process writing the folder

Every JSON file is strict JSON: non-finite floats are written as ``null`` so a NaN can never
corrupt a results file for other readers. ``checkpoint.pt`` and the JSON files are written
atomically (temporary file in the same folder, ``fsync``, ``os.replace``), so killing the process
at any moment leaves either the previous or the new complete file, never a torn one; temporary
files left by a killed writer (``.checkpoint.pt.*.tmp``) are removed when the folder is opened
for writing again. Checkpoints load with ``torch.load(weights_only=True)`` and are verified
against their checksum (:mod:`etr_core.checkpoints`). Readers of the JSON-lines logs skip an
unreadable line with a :class:`ResultsWarning` naming the file and line instead of stopping there.
Files get the permissions ``open()`` gives (``0o666`` less the umask).

:mod:`~etr_core.results.layout` holds the file names, strict JSON and atomic writes,
:mod:`~etr_core.results.writer` the :class:`RunWriter`, :mod:`~etr_core.results.reader` the readers.
Every name is importable from here.
"""

from __future__ import annotations

# __all__ is the public surface; the file names and helpers below are re-exported for the code that
# imports them from here
from etr_core.files import atomic_write, fsync_dir
from etr_core.results.layout import CHECKPOINT_FILE as CHECKPOINT_FILE
from etr_core.results.layout import CONFIG_FILE as CONFIG_FILE
from etr_core.results.layout import DAMAGED_CHECKPOINT_FILE as DAMAGED_CHECKPOINT_FILE
from etr_core.results.layout import ENVIRONMENT_FILE as ENVIRONMENT_FILE
from etr_core.results.layout import EVALS_FILE as EVALS_FILE
from etr_core.results.layout import METRICS_FILE as METRICS_FILE
from etr_core.results.layout import PREVIOUS_CHECKPOINT_FILE as PREVIOUS_CHECKPOINT_FILE
from etr_core.results.layout import SUMMARY_FILE as SUMMARY_FILE
from etr_core.results.layout import (
    ResultsWarning,
    atomic_torch_save,
    atomic_write_json,
    dumps,
    json_safe,
    run_state,
)
from etr_core.results.layout import environment_info as environment_info
from etr_core.results.reader import LoadedRun, find_runs, load_run, read_jsonl
from etr_core.results.reader import read_json_object as read_json_object
from etr_core.results.writer import RunWriter

__all__ = [
    "LoadedRun",
    "ResultsWarning",
    "RunWriter",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "dumps",
    "find_runs",
    "fsync_dir",
    "json_safe",
    "load_run",
    "read_jsonl",
    "run_state",
]
