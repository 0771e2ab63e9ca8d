"""Checks of what the trust-region optimisers accept: parameters, and states to load.

:func:`check_loadable` runs as the last ``load_state_dict`` pre-hook, i.e. after the user's hooks and
before torch changes anything, so a bad state leaves the optimiser exactly as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from etr_core._validation import check_bool, check_int, check_real
from etr_core.config import TRConfig
from etr_core.optim.options import ALL_OPTIONS, LATER_OPTIONS, defaults_for
from etr_core.optim.records import COUNTER_KEYS

__all__ = ["check_loadable", "check_params"]

REGION_KEYS = ("radius", "initial_radius", "counters", "last_accepted")
# optional region keys: handled-fault counts, and the radius the automatic start chose
OPTIONAL_REGION_KEYS = ("fault_counts", "auto_radius")


def check_params(params: Any, existing: list[Tensor], owner: str) -> None:
    """New parameters must be trainable, real floating, dense tensors sharing the dtype and device of
    ``existing`` (one flat trust-region vector); ``(name, tensor)`` pairs are accepted as by torch."""
    if not params:
        raise ValueError("params is empty: pass the tensors to optimise")
    offset = len(existing)
    reference = existing[0] if existing else None
    for i, item in enumerate(params, offset):
        p = item[1] if isinstance(item, tuple) and len(item) == 2 else item
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.requires_grad:
            raise ValueError(
                f"params[{i}] (shape {tuple(p.shape)}) does not require grad; pass only trainable "
                "parameters, e.g. [p for p in model.parameters() if p.requires_grad]"
            )
        if p.is_complex() or not p.is_floating_point():
            raise TypeError(f"params[{i}] must be a real floating-point tensor, got dtype {p.dtype}")
        if p.layout != torch.strided:
            raise TypeError(f"params[{i}] must be a dense tensor, got layout {p.layout}")
        reference = p if reference is None else reference
        if p.dtype != reference.dtype or p.device != reference.device:
            raise TypeError(
                f"all params of {owner} must share one dtype and device (one trust-region vector); params[0] "
                f"is {reference.dtype} on {reference.device}, params[{i}] is {p.dtype} on {p.device}"
            )


def check_loadable(opt: Any, state_dict: Any) -> dict[str, Any] | None:
    """Raise ``ValueError``/``TypeError`` unless ``state_dict`` can be loaded into ``opt`` as a whole.

    Returns the state converted to torch's layout when it was saved in the earlier layout (keys
    ``kind``, ``config``, ``radius``, ...), else ``None`` (torch then loads it as it is)."""
    owner = type(opt).__name__
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    converted = None
    if "kind" in state_dict and "config" in state_dict and "state" not in state_dict:
        state_dict = converted = _from_earlier_layout(opt, state_dict)
    groups = state_dict.get("param_groups")
    if not isinstance(state_dict.get("state"), Mapping) or not isinstance(groups, list):
        raise ValueError(
            f"state_dict must have torch.optim's layout {{'state': {{...}}, 'param_groups': [...]}} "
            f"as {owner}.state_dict() returns it; got keys {sorted(map(str, state_dict))}"
        )
    mine = opt.param_groups
    if len(groups) != len(mine):
        raise ValueError(f"state_dict has {len(groups)} param group(s), this {owner} has {len(mine)}")
    for i, (group, own) in enumerate(zip(groups, mine)):
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
            raise ValueError(f"state_dict['param_groups'][{i}] must be a dict with a 'params' list")
        if len(group["params"]) != len(own["params"]):
            raise ValueError(
                f"state_dict['param_groups'][{i}] has {len(group['params'])} parameter(s), this {owner}'s "
                f"group {i} has {len(own['params'])}: the state is for another model"
            )
        foreign = sorted(k for k in group if k in ALL_OPTIONS and k not in opt._OPTIONS)
        missing = [k for k in opt._OPTIONS if k not in group and k not in LATER_OPTIONS]
        if foreign or missing:
            what = f"has option(s) {foreign} that {owner} does not take" if foreign else f"lacks {missing}"
            raise ValueError(f"state_dict is not a {owner} state: its param_groups[{i}] {what}")
    config = opt._resolve_groups(groups).config
    ids = [pid for group in groups for pid in group["params"]]
    if len(set(ids)) != len(ids):
        raise ValueError("state_dict['param_groups'] lists a parameter id twice")
    stray = [k for k in state_dict["state"] if k not in set(ids)]
    if stray:
        raise ValueError(f"state_dict['state'] has entries {stray[:5]} that no param group lists")
    for k, (pid, p) in enumerate(zip(ids, opt._params)):
        _check_param_state(state_dict["state"].get(pid, {}), k, p, config)
    return converted


def _check_param_state(entry: Any, k: int, p: Tensor, config: TRConfig) -> None:
    where = f"state_dict['state'] entry of parameter {k} (shape {tuple(p.shape)})"
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
    allowed = {"v", *REGION_KEYS, *OPTIONAL_REGION_KEYS} if k == 0 else {"v"}
    unknown = sorted(map(str, set(entry) - allowed))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}")
    if k == 0:
        _check_region(entry, where)
    v = entry.get("v")
    if config.ellipsoid == "uniform":
        if v is not None:
            raise ValueError(f"{where} holds ellipsoid statistics 'v', but the groups say 'uniform'")
        return
    if not isinstance(v, Tensor):
        raise ValueError(f"{where} lacks the {config.ellipsoid!r} ellipsoid's accumulator 'v' (a tensor)")
    if v.is_complex() or not v.is_floating_point():
        raise TypeError(f"{where}: 'v' must be a real floating-point tensor, got dtype {v.dtype}")
    if tuple(v.shape) != tuple(p.shape):
        raise ValueError(f"{where}: 'v' has shape {tuple(v.shape)}, the parameter {tuple(p.shape)}")
    if v.numel() and not bool(torch.isfinite(v).all() and (v >= 0).all()):
        raise ValueError(f"{where}: 'v' (a sum of squared gradients) must be finite and >= 0")


def _check_region(entry: Mapping[str, Any], where: str) -> None:
    missing = [key for key in REGION_KEYS if key not in entry]
    if missing:
        raise ValueError(f"{where} lacks the trust region's {missing}")
    for key in ("radius", "initial_radius"):
        value = check_real(f"{where}: {key}", entry[key])
        if not value > 0:
            raise ValueError(f"{where}: {key} must be > 0, got {value!r}")
    counters = entry["counters"]
    if not isinstance(counters, Mapping) or sorted(counters) != sorted(COUNTER_KEYS):
        raise ValueError(f"{where}: counters must be a dict with keys {list(COUNTER_KEYS)}")
    for key in COUNTER_KEYS:
        check_int(f"{where}: counters[{key!r}]", counters[key], minimum=0)
    check_bool(f"{where}: last_accepted", entry["last_accepted"])
    faults = entry.get("fault_counts", {})
    if not isinstance(faults, Mapping) or not all(isinstance(key, str) for key in faults):
        raise ValueError(f"{where}: fault_counts must be a dict from fault kind (str) to count")
    for key, count in faults.items():
        check_int(f"{where}: fault_counts[{key!r}]", count, minimum=0)
    if "auto_radius" in entry:
        chosen = check_real(f"{where}: auto_radius", entry["auto_radius"])
        if not chosen > 0:
            raise ValueError(f"{where}: auto_radius must be > 0, got {chosen!r}")


def _from_earlier_layout(opt: Any, old: Mapping[str, Any]) -> dict[str, Any]:
    """The earlier single-group layout (``kind``, ``config``, ``radius``, ``ellipsoid``, ``counters``,
    ``last_accepted``, FirstOrderTR's ``radius_rule``/``lr``) in torch's layout for ``opt``."""
    owner = type(opt).__name__
    if old.get("kind") != owner:
        raise ValueError(f"state_dict is for {old.get('kind')!r}, expected {owner!r}")
    if len(opt.param_groups) != 1:
        raise ValueError(f"a state_dict of the earlier layout has one param group, this {owner} has more")
    config = TRConfig.from_dict(old["config"])
    rule = old.get("radius_rule") or "tr"
    lr = old.get("lr") if rule == "eta" else 1.0
    group: dict[str, Any] = {k: v for k, v in defaults_for(config, opt._OPTIONS, lr, rule).items()}
    params = opt._params
    group["params"] = list(range(len(params)))
    state: dict[int, dict[str, Any]] = {i: {} for i in range(len(params))}
    v = (old.get("ellipsoid") or {}).get("v")
    if isinstance(v, Tensor):
        if v.numel() != sum(p.numel() for p in params):
            raise ValueError(f"state_dict's ellipsoid has {v.numel()} entries, the parameters {opt.dim}")
        for i, chunk in enumerate(v.reshape(-1).split([p.numel() for p in params])):
            state[i]["v"] = chunk.reshape(params[i].shape)
    elif config.ellipsoid != "uniform":
        fresh = config.eps if config.eps_mode == "authors" else 0.0
        for i, p in enumerate(params):
            state[i]["v"] = torch.full_like(p, fresh)
    radius = float(old["radius"])
    if not math.isfinite(radius):
        raise ValueError(f"state_dict's radius must be finite, got {radius!r}")
    state[0].update(
        radius=radius,
        initial_radius=config.radius,
        counters={k: int(old["counters"][k]) for k in COUNTER_KEYS},
        last_accepted=bool(old["last_accepted"]),
    )
    return {"state": state, "param_groups": [group]}
