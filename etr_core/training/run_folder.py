"""The run-folder part of the trainer: lock and open the folder, write its configuration, save
checkpoints and resume from them (bit for bit on CPU; see :mod:`etr_core.results` for the layout).

These classes are parts of :class:`etr_core.training.trainer._Trainer`; they read the attributes
it sets (``config``, ``model``, ``optimizer``, ``sampler``, ``counters``, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from etr_core.models import count_parameters
from etr_core.training.run_config import _RESUMABLE_CHANGES


class _CheckpointState:
    """What a checkpoint holds of a run (weights, optimiser and sampler state, counters, clock, RNG)
    and how it is put back."""

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "seconds": self.clock.elapsed,
            "counters": dict(self.counters),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "warmup_optimizer": self.warmup_optimizer.state_dict()
            if self.warmup_optimizer is not None
            else None,
            "sampler": self.sampler.state_dict(),
            "pivot": self.pivot_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "last_eval_step": self.evals[-1]["step"] if self.evals else None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.clock.elapsed = float(state["seconds"])
        self.counters = {k: int(v) for k, v in state["counters"].items()}
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.warmup_optimizer is not None and state.get("warmup_optimizer") is not None:
            self.warmup_optimizer.load_state_dict(state["warmup_optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.pivot_state = state["pivot"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def _checkpoint(self) -> None:
        if self.writer is not None:
            self.writer.save_checkpoint(self._state())


class _RunFolder(_CheckpointState):
    """Opening, resuming and following a run folder (rank 0 writes, other ranks only read)."""

    def _config_record(self) -> dict[str, Any]:
        record = self.config.to_dict()
        record["task"] = self.task
        record["parameters"] = count_parameters(self.model)
        record["n_train"] = self.data.n_train
        record["n_test"] = self.data.n_test
        record["batch_size_resolved"] = self.main_batch
        record["lr_resolved"] = self.lr
        record["world_size"] = self.world
        record["tr_config"] = self.tr_config.to_dict() if self.tr_config is not None else None
        if self.config.is_tr and self.config.spec.cubic:  # ARC runs its own options, not a trust region's
            record["tr_config"] = None
            record["arc_options"] = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"}
        record["warmup_and_pivot"] = self.warmup is not None or self.pivot is not None
        return record

    def _open_run_dir(self, resume: bool) -> None:
        """Lock the run folder, then start it or continue it from its newest good checkpoint.

        Runs after the data were loaded and validated, so a bad data file writes nothing. A folder
        that holds a checkpoint or a summary needs ``resume``; one stopped before its first checkpoint
        (configuration only) starts again from step 0. Budget and cadence fields
        (``_RESUMABLE_CHANGES``) may change on resume and are recorded in config.json ("resumes");
        any other difference is refused, naming the fields.
        """
        import warnings

        from etr_core import results

        writer = results.RunWriter(self.run_dir)
        writer.lock()
        try:
            writer.remove_stale_temporaries()
            state = writer.state()
            if state in ("resumable", "finished") and not resume:
                raise FileExistsError(
                    f"{self.run_dir} already holds a run; pass resume=True (CLI: --resume) to continue it "
                    "or choose another folder"
                )
            checkpoint = writer.load_checkpoint(self.device) if resume else None
            history: list[dict[str, Any]] = []
            if checkpoint is not None:
                history = self._resume_from(checkpoint, writer)
            else:
                if state == "unstarted":
                    warnings.warn(
                        f"{self.run_dir} holds a run stopped before its first checkpoint; starting it again "
                        "from step 0",
                        results.ResultsWarning,
                        stacklevel=4,
                    )
                writer.clear_logs()
            record = self._config_record()
            if history:
                record["resumes"] = history
            writer.write_config(record)
            env = results.environment_info(self.device)
            env["resumed_from_step"] = self.resumed_from
            writer.write_environment(env)
        except BaseException:
            writer.close()
            raise
        self.writer = writer

    def _follow_checkpoint(self) -> None:
        """Ranks other than 0 continue from the checkpoint rank 0 resumes from (they only read it).

        Every rank loads the same file (a damaged newest checkpoint sends all of them to the previous
        one), so weights, optimiser state, sampler position and RNG agree when training continues.
        """
        from etr_core import checkpoints

        found = checkpoints.load_checkpoint(self.run_dir, self.device)
        if found is not None:
            self._load_state(found[0])
            self.resumed_from = self.step

    def _resume_from(self, checkpoint: dict[str, Any], writer: Any) -> list[dict[str, Any]]:
        """Load ``checkpoint`` after checking the configuration; the updated list of recorded resumes."""
        from etr_core import checkpoints, results
        from etr_core.errors import CheckpointError, one_line

        path = writer.loaded_checkpoint or self.run_dir / results.CHECKPOINT_FILE
        checkpoints.check_run_state(checkpoint, path)
        saved = checkpoint["config"]
        now = self.config.to_dict()
        differing = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
        if differing:
            raise ValueError(
                f"cannot resume {self.run_dir}: the configuration differs in {differing} "
                f"(saved {[saved.get(k) for k in differing]}, now {[now[k] for k in differing]}); only "
                f"{list(_RESUMABLE_CHANGES)} may change"
            )
        try:
            self._load_state(checkpoint)
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError, IndexError) as exc:
            reason = one_line(str(exc))[:300]
            raise CheckpointError(path, f"does not fit this run ({type(exc).__name__}: {reason})") from None
        writer.truncate_logs(self.step)
        metrics, evals = (self.run_dir / results.METRICS_FILE), (self.run_dir / results.EVALS_FILE)
        self.steps = results.read_jsonl(metrics) if metrics.exists() else []
        self.evals = results.read_jsonl(evals) if evals.exists() else []
        self.resumed_from = self.step
        try:
            previous = results.read_json_object(self.run_dir / results.CONFIG_FILE) or {}
        except ValueError:
            previous = {}
        history = [h for h in previous.get("resumes", []) if isinstance(h, dict)]
        changes = {
            k: {"before": saved.get(k), "after": now[k]} for k in _RESUMABLE_CHANGES if saved.get(k) != now[k]
        }
        history.append({"step": self.step, "changes": changes})
        return history
