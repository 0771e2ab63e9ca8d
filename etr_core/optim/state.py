"""Where the trust-region optimisers keep their options and state: torch's own places.

Options live in ``param_groups`` (see :mod:`etr_core.optim.options`). Dynamic state lives in
``self.state`` in torch's layout, so ``state_dict``/``load_state_dict``, their hooks, ``copy.deepcopy``,
``pickle`` and ``torch.distributed.checkpoint.state_dict`` work as for ``torch.optim.Adam``:

* ``state[p]["v"]`` -- the ellipsoid's accumulator for parameter ``p`` (Eq. 2-3), shaped like ``p``
  ("adagrad" and "rms" only). The tensors are views of one flat buffer, rebuilt if they are replaced.
* ``state[first parameter]`` also holds the region's scalars: ``radius`` (Delta_k), ``initial_radius``
  (the group ``radius`` it started from: setting a new group ``radius`` restarts Delta_k there),
  ``counters`` (forward, backward, hvp, steps, accepted) and ``last_accepted``.

Every parameter has a state entry from construction on (torch tooling treats an empty state as "not
initialised" and would call ``step()`` without a closure). Parameters added by ``add_param_group``
join with fresh ellipsoid statistics (``v = 0``, or ``eps`` for ``eps_mode="authors"``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from etr_core.config import TRConfig
from etr_core.ellipsoids import Ellipsoid, make_ellipsoid
from etr_core.hvp import unflatten_like
from etr_core.optim.loading import check_loadable, check_params
from etr_core.optim.options import (
    SETTINGS,
    GroupOptions,
    check_group_keys,
    ellipsoid_options,
    resolve_groups,
)
from etr_core.optim.records import COUNTER_KEYS, StepRecord

_PLAIN = (float, int, str, bool, type(None))


class _Accumulator:
    """The ellipsoid's accumulator kept as ``state[p]["v"]`` views of one flat buffer (Eq. 2-3)."""

    state: Any
    _params: list[Tensor]

    def _bind_ellipsoid(self, config: TRConfig) -> Ellipsoid:
        ellipsoid = make_ellipsoid(config.ellipsoid, **ellipsoid_options(config))
        if config.ellipsoid != "uniform":
            ellipsoid.v = self._flat_v(config)
        return ellipsoid

    def _flat_v(self, config: TRConfig) -> Tensor:
        """The accumulator as one flat tensor whose views are ``state[p]["v"]``; repacked (copied) when
        those entries were replaced (``load_state_dict``, ``deepcopy``, ``add_param_group``)."""
        params = self._params
        current = [self.state[p].get("v") for p in params]
        cache = self.__dict__.get("_v_cache")
        if cache is not None and len(cache[1]) == len(current) and all(map(operator.is_, cache[1], current)):
            return cache[0]
        first = params[0]
        flat = torch.empty(sum(p.numel() for p in params), dtype=first.dtype, device=first.device)
        views = unflatten_like(flat, params)
        fresh = config.eps if config.eps_mode == "authors" else 0.0
        with torch.no_grad():
            for p, old, view in zip(params, current, views):
                if old is None:
                    view.fill_(fresh)
                else:
                    view.copy_(old.reshape(view.shape))
                self.state[p]["v"] = view
        self._v_cache = (flat, views)
        return flat


class _TRState(_Accumulator, torch.optim.Optimizer):
    """Options in ``param_groups``, state in ``self.state``; subclasses set ``_OPTIONS``."""

    _OPTIONS: tuple[str, ...] = ()

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], defaults: dict[str, Any], distributed: bool
    ) -> None:
        if not isinstance(distributed, bool):
            raise TypeError(f"distributed must be a bool, got {distributed!r}")
        if distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ValueError(
                "distributed=True needs an initialised torch.distributed process group "
                "(call etr_core.distributed.setup() first)"
            )
        self.distributed = distributed
        self.last_step: StepRecord | None = None
        super().__init__(params, {**defaults, **SETTINGS})
        if not self._params:
            raise ValueError("params is empty: pass the tensors to optimise")

    # -- pickling: torch pickles defaults, state and param_groups; keep the two flags as well ----------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["distributed"] = self.__dict__.get("distributed", False)
        state["last_step"] = self.__dict__.get("last_step")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("distributed", False)
        self.__dict__.setdefault("last_step", None)

    # -- parameter groups ------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, checked first: trainable floating tensors of the optimiser's dtype
        and device, known options only, every option equal to the other groups' (one trust region).
        The new parameters start with fresh ellipsoid statistics."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        owner = type(self).__name__
        check_group_keys(param_group, self._OPTIONS, owner)
        params = param_group.get("params")
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("params must be an ordered collection (a list), not a set: its order changes")
        elif params is not None:
            param_group["params"] = list(params)  # a generator is read once, here
        check_params(param_group.get("params"), self._params, owner)
        candidate = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._resolve_groups([*self.param_groups, candidate])
        super().add_param_group(param_group)
        if self._params:
            self._sync_state(self._resolve())

    # -- options and state in force --------------------------------------------------------------------
    @classmethod
    def _resolve_groups(cls, groups: list[Any]) -> GroupOptions:
        """The validated options of ``groups`` (``ValueError`` when they disagree); a subclass with
        options of its own (``EllipsoidalARC``) overrides this one method."""
        return resolve_groups(groups, cls._OPTIONS, cls.__name__)

    def _resolve(self) -> GroupOptions:
        """The options in force, validated; remembered while the groups hold the same plain values."""
        key = tuple(group.get(k) for group in self.param_groups for k in self._OPTIONS)
        cached = self.__dict__.get("_resolved")
        if cached is not None and len(cached[0]) == len(key):
            try:
                if all(type(a) is type(b) and a == b for a, b in zip(cached[0], key)):
                    return cached[1]
            except (TypeError, RuntimeError, ValueError):
                pass
        options = self._resolve_groups(self.param_groups)
        if all(type(v) in _PLAIN for v in key):
            self._resolved = (key, options)
        return options

    @property
    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def _region(self) -> dict[str, Any]:
        """The region's scalars (radius, counters, ...), kept in the first parameter's state."""
        return self.state[self.param_groups[0]["params"][0]]

    @property
    def config(self) -> TRConfig:
        """The configuration the next step runs, read from ``param_groups`` (a fresh copy)."""
        return copy.copy(self._resolve().config)

    @property
    def radius(self) -> float:
        """The current trust-region radius Delta_k."""
        return self._region["radius"]

    @radius.setter
    def radius(self, value: float) -> None:
        self._region["radius"] = float(value)

    @property
    def counters(self) -> dict[str, int]:
        """Running totals: forward, backward, hvp (each one extra backward), steps, accepted."""
        return self._region["counters"]

    @property
    def _last_accepted(self) -> bool:
        return self._region["last_accepted"]

    @_last_accepted.setter
    def _last_accepted(self, value: bool) -> None:
        self._region["last_accepted"] = bool(value)

    # -- switches kept in param_groups (saved, copied and pickled with them) ------------------------------
    def _setting(self, name: str) -> bool:
        return bool(self.param_groups[0].get(name, SETTINGS[name]))

    def _set_setting(self, name: str, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
        for group in self.param_groups:
            group[name] = value

    @property
    def keep_grad(self) -> bool:
        """Leave the step's gradient at ``w`` in ``p.grad`` after ``step`` (default ``True``); kept as
        ``param_groups[i]["keep_grad"]``."""
        return self._setting("keep_grad")

    @keep_grad.setter
    def keep_grad(self, value: bool) -> None:
        self._set_setting("keep_grad", value)

    @property
    def fork_rng(self) -> bool:
        """Give every closure call of a step the same random state (default ``True``; see
        :mod:`etr_core.step_guard`); kept as ``param_groups[i]["fork_rng"]``."""
        return self._setting("fork_rng")

    @fork_rng.setter
    def fork_rng(self, value: bool) -> None:
        self._set_setting("fork_rng", value)

    @property
    def fault_counts(self) -> dict[str, int]:
        """Handled faults by kind (:mod:`etr_core.step_support`), kept in the region's state."""
        return self._region.setdefault("fault_counts", {})

    @property
    def dim(self) -> int:
        """Number of optimised scalars d."""
        return sum(p.numel() for p in self._params)

    @property
    def ellipsoid(self) -> Ellipsoid:
        """The ellipsoid in force, bound to the accumulator in ``self.state`` (updates write through)."""
        options = self._resolve()
        self._sync_state(options)
        return self._bind_ellipsoid(options.config)

    @torch.no_grad()
    def _sync_state(self, options: GroupOptions) -> None:
        """Bring ``self.state`` in line with the options in force: region scalars, a radius restarted at
        an edited group ``radius`` and capped at ``lr * max_radius``, an accumulator for every parameter."""
        config = options.config
        region = self._region
        if "radius" not in region:
            region.update(
                radius=config.radius,
                initial_radius=options.radius,
                counters=dict.fromkeys(COUNTER_KEYS, 0),
                last_accepted=True,
            )
        elif region["initial_radius"] != options.radius:
            region["radius"], region["initial_radius"] = config.radius, options.radius
        if options.radius_rule == "tr" and region["radius"] > options.cap:
            region["radius"] = options.cap
        if config.ellipsoid == "uniform":
            for p in self._params:
                self.state[p].pop("v", None)
        else:
            self._flat_v(config)
        for p in self._params:
            self.state[p]

    # -- persistence -----------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (hooks included), with everything checked after the pre-hooks and
        before anything changes: layout, optimiser kind, group and parameter counts, every option,
        the region scalars, each accumulator's shape, dtype (floating; cast to the parameter's dtype
        as torch does) and values. A state saved by a version before torch's layout is converted."""
        handle = self.register_load_state_dict_pre_hook(check_loadable)  # runs after the user's hooks
        try:
            super().load_state_dict(state_dict)
        finally:
            handle.remove()
        self.last_step = None
        self._sync_state(self._resolve())

