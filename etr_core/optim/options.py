"""Hyper-parameters of the trust-region optimisers, kept where torch keeps them: ``param_groups``.

Every option of Algorithm 1 is a key of each parameter group and is read at every ``step``: what
``opt.param_groups[0]`` shows is what the next step runs, and editing it by hand (or with a torch LR
scheduler) takes effect at the next step. The trust region is *one* region over all parameters (one
radius, one rho, paper section 4), so no option may differ between groups: a disagreement raises a
``ValueError`` naming the option. Groups exist so that ``add_param_group``, schedulers and torch's
checkpoint tooling work; they do not carry per-group settings.

``lr`` is not a learning rate (a trust region has none): for the adaptive radius it scales the radius
cap, ``Delta <= lr * max_radius`` (1.0 = paper Table 1), so any torch LR scheduler schedules the cap;
for ``FirstOrderTR(radius_rule="eta")`` it is the step size eta of Theorem 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from etr_core._validation import check_choice, check_positive, check_real
from etr_core.config import TRConfig, default_gamma2
from etr_core.ellipsoids import AdagradEllipsoid, RMSPropEllipsoid, UniformEllipsoid

__all__ = [
    "ALL_OPTIONS",
    "ELLIPSOIDAL_OPTIONS",
    "FIRST_ORDER_OPTIONS",
    "GroupOptions",
    "build_config",
    "check_group_keys",
    "check_hessian_options",
    "constructor_overrides",
    "defaults_for",
    "resolve_groups",
]

COMMON_OPTIONS = (
    "ellipsoid", "radius", "max_radius", "lr", "eta1", "eta2", "gamma1", "gamma2",
    "grow_only_on_boundary", "ellipsoid_update", "beta", "eps", "eps_mode", "tiny_pred",
)
SOLVER_OPTIONS = (
    "krylov_tol", "theta", "max_krylov", "solver", "stop_rule", "residual_norm", "root",
    "auto_radius", "hessian_fraction", "hessian_probes", "hessian_block",
)
# Options added after states were first saved: a group (or saved state) without them takes these.
LATER_OPTIONS = {
    "auto_radius": False, "hessian_fraction": 1.0, "hessian_probes": 1, "hessian_block": "element",
    "auto_sigma": False,  # EllipsoidalARC's
}
# Per-optimiser switches kept in every group (saved, copied and pickled with it); not TR options.
SETTINGS = {"keep_grad": True, "fork_rng": True}
ELLIPSOIDAL_OPTIONS = COMMON_OPTIONS + SOLVER_OPTIONS
FIRST_ORDER_OPTIONS = (*COMMON_OPTIONS, "radius_rule")
ALL_OPTIONS = frozenset(ELLIPSOIDAL_OPTIONS + FIRST_ORDER_OPTIONS)
# Keys torch and its LR schedulers write into groups; they are not options and are left alone.
TORCH_GROUP_KEYS = frozenset(
    {"params", "param_names", "initial_lr", "max_lr", "min_lr", "base_lr", "differentiable", *SETTINGS}
)
_NOT_CONFIG = ("lr", "radius_rule")
_CANONICAL = {"uni": "uniform", "sphere": "uniform", "ada": "adagrad", "rmsprop": "rms"}


def canonical_ellipsoid(name: str) -> str:
    """The ellipsoid's name as the configuration spells it ("uni", "sphere" -> "uniform", "ada" ->
    "adagrad", "rmsprop" -> "rms"; any case); other names lower-cased, for the caller to check."""
    return _CANONICAL.get(name.lower(), name.lower())


class GroupOptions(NamedTuple):
    """The validated options in force: the TR configuration, ``lr`` and ``radius_rule``."""

    config: TRConfig
    lr: float
    radius_rule: str
    radius: float  # the group's initial radius; config.radius is it clipped at max_radius

    @property
    def cap(self) -> float:
        """The radius cap in force, ``lr * max_radius``."""
        return self.lr * self.config.max_radius


def check_group_keys(group: Mapping[str, Any], names: tuple[str, ...], owner: str) -> None:
    """A group dict given by the user may hold only ``names`` and torch's own keys (a misspelt option
    must not be silently ignored); raises ``TypeError`` listing the unknown keys and the options."""
    unknown = sorted(str(k) for k in group if k not in names and k not in TORCH_GROUP_KEYS)
    if unknown:
        raise TypeError(f"unknown {owner} option(s) in a param group: {unknown}; options: {sorted(names)}")


def group_options(group: Mapping[str, Any], names: tuple[str, ...], where: str) -> GroupOptions:
    """Validate the options of one group (every value any real scalar: Python, numpy, 0-dim tensor)."""
    missing = [k for k in names if k not in group and k not in LATER_OPTIONS]
    if missing:
        raise ValueError(f"{where} lacks option(s) {missing}")
    fields = {k: group.get(k, LATER_OPTIONS.get(k)) for k in names if k not in _NOT_CONFIG}
    ellipsoid = fields["ellipsoid"]
    if isinstance(ellipsoid, str):
        fields["ellipsoid"] = canonical_ellipsoid(ellipsoid)
    try:
        radius = check_positive("radius", fields["radius"])
        # a max_radius edited below the initial radius caps it (TRConfig itself insists on radius <= max)
        fields["radius"] = min(radius, check_positive("max_radius", fields["max_radius"]))
        config = TRConfig(**fields)
        radius_rule = check_choice("radius_rule", group.get("radius_rule", "tr"), ("tr", "eta"))
        lr = check_real("lr", group["lr"])
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None
    if lr <= 0:
        what = "the step size eta" if radius_rule == "eta" else "the scale of the radius cap lr * max_radius"
        raise ValueError(
            f"{where}: lr ({what}) must be > 0, got {lr!r}; an LR scheduler must keep it positive "
            "(e.g. CosineAnnealingLR(..., eta_min=1e-3))"
        )
    return GroupOptions(config, lr, radius_rule, radius)


def _values(options: GroupOptions, names: tuple[str, ...]) -> dict[str, Any]:
    out = {k: getattr(options.config, k) for k in names if k not in _NOT_CONFIG}
    out["gamma2"] = options.config.gamma2_value
    out["radius"] = options.radius
    out["lr"] = options.lr
    if "radius_rule" in names:
        out["radius_rule"] = options.radius_rule
    return out


def resolve_groups(groups: list[Mapping[str, Any]], names: tuple[str, ...], owner: str) -> GroupOptions:
    """The options in force for all ``groups``; ``ValueError`` naming the option when groups disagree."""
    first = group_options(groups[0], names, "param_groups[0]")
    reference = _values(first, names) if len(groups) > 1 else {}
    for i, group in enumerate(groups[1:], 1):
        values = _values(group_options(group, names, f"param_groups[{i}]"), names)
        for key in names:
            if values[key] != reference[key]:
                raise ValueError(
                    f"{key} differs between param groups: param_groups[0] has {reference[key]!r}, "
                    f"param_groups[{i}] has {values[key]!r}. {owner} keeps one trust region over all "
                    f"parameters (one radius, one rho), so {key} must be equal in every group: "
                    f"set it in all of them, e.g. `for g in opt.param_groups: g[{key!r}] = ...`"
                )
    return first


def defaults_for(config: TRConfig, names: tuple[str, ...], lr: float, radius_rule: str) -> dict[str, Any]:
    """The group defaults (plain Python values) for ``config``; ``gamma2`` resolved to its number.
    ``ValueError`` when ``config`` asks for ``auto_radius`` or a ``hessian_fraction`` below 1 and the
    optimiser (``names``) has no such option (they need a quadratic model: ``EllipsoidalTR``)."""
    for key, off in (("auto_radius", False), ("hessian_fraction", 1.0)):
        if key not in names and getattr(config, key) != off:
            what = "radius='auto'" if key == "auto_radius" else f"hessian_fraction={config.hessian_fraction}"
            raise ValueError(
                f"{what} needs the quadratic model's Hessian products (EllipsoidalTR); this optimiser "
                "has none: give a number as radius / leave hessian_fraction at 1"
            )
    return _values(GroupOptions(config, lr, radius_rule, config.radius), names)


PRESET_NAMES = ("paper", "fast", "authors:<dataset>:<model>")


def named_preset(name: str, ellipsoid: Any = None) -> TRConfig:
    """The configuration of a preset named by a string: "paper" (Table 1, the default), "fast"
    (:func:`etr_core.config.fast`) or "authors:<dataset>:<model>" (:func:`etr_core.config.authors`),
    for the ellipsoid ``ellipsoid`` when it is a name (else "rms"). ``ValueError`` for other names."""
    from etr_core.config import authors, fast, paper_table1

    kind = canonical_ellipsoid(ellipsoid) if isinstance(ellipsoid, str) else "rms"
    if kind not in ("uniform", "adagrad", "rms"):
        kind = "rms"  # build_config reports the bad ellipsoid name itself
    parts = name.strip().lower().split(":")
    if parts == ["paper"]:
        return paper_table1(kind)
    if parts == ["fast"]:
        return fast(kind)
    if parts[0] == "authors" and len(parts) == 3:
        return authors(parts[1], parts[2], kind)
    if parts[0] == "authors":
        from etr_core.config import AUTHORS_PRESETS

        spelt = ", ".join(f"'authors:{d}:{m}'" for d, m in AUTHORS_PRESETS)
        raise ValueError(
            f"preset={name!r}: the authors published settings per dataset and model, so the preset is "
            f"spelt 'authors:<dataset>:<model>', one of {spelt}"
        )
    raise ValueError(
        f"preset must be one of {list(PRESET_NAMES)} or a TRConfig, got {name!r} "
        "(e.g. preset='authors:fashion_mnist:fc')"
    )


def ellipsoid_options(config: TRConfig) -> dict[str, Any]:
    """Keyword options of :func:`etr_core.ellipsoids.make_ellipsoid` for ``config.ellipsoid``."""
    if config.ellipsoid == "uniform":
        return {}
    options: dict[str, Any] = {"eps": config.eps, "eps_mode": config.eps_mode}
    if config.ellipsoid in ("rms", "hessian"):
        options["beta"] = config.beta
    if config.ellipsoid == "hessian":
        options.update(probes=config.hessian_probes, block=config.hessian_block)
    return options


def _object_options(ellipsoid: Any) -> tuple[str, dict[str, Any]]:
    """Name and options of a built-in ellipsoid object passed instead of a name."""
    if isinstance(ellipsoid, UniformEllipsoid):
        return "uniform", {}
    if getattr(ellipsoid, "name", None) == "hessian":  # etr_core.hessian_diagonal (beyond the paper)
        return "hessian", {"eps": ellipsoid.eps, "eps_mode": ellipsoid.eps_mode, "beta": ellipsoid.beta,
                           "hessian_probes": ellipsoid.probes, "hessian_block": ellipsoid.block}
    if isinstance(ellipsoid, (AdagradEllipsoid, RMSPropEllipsoid)):
        if getattr(ellipsoid, "bias_correction", False):
            raise ValueError(
                "ellipsoid=RMSPropEllipsoid(bias_correction=True) is not an option of the optimisers "
                "(Eq. 3 has no bias correction); pass ellipsoid='rms'"
            )
        options = {"eps": ellipsoid.eps, "eps_mode": ellipsoid.eps_mode}
        if isinstance(ellipsoid, RMSPropEllipsoid):
            options["beta"] = ellipsoid.beta
        return ellipsoid.name, options
    raise TypeError(
        "ellipsoid must be 'uniform', 'adagrad', 'rms' or one of etr_core.ellipsoids' UniformEllipsoid, "
        f"AdagradEllipsoid, RMSPropEllipsoid; got {type(ellipsoid).__name__}"
    )


# Options a constructor does not pass to build_config as overrides: the ellipsoid has its own argument,
# lr and radius_rule are no TRConfig fields, and auto_radius is spelt radius="auto".
_NOT_OVERRIDES = frozenset({"ellipsoid", "auto_radius", *_NOT_CONFIG})


def constructor_overrides(arguments: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that a constructor hands to :func:`build_config`, read from its
    ``arguments`` (its ``locals()``: one keyword argument per option, ``None`` for "from the preset").
    ``KeyError`` when the constructor lacks an argument for one of them."""
    return {k: arguments[k] for k in names if k not in _NOT_OVERRIDES}


def build_config(preset: TRConfig | None, ellipsoid: Any, overrides: dict[str, Any]) -> TRConfig:
    """The constructor's configuration: ``preset`` (default paper Table 1, "rms"), then the ellipsoid,
    then every override that is not ``None``. Table 1's shrink factor follows a changed ellipsoid."""
    if isinstance(preset, str):
        preset = named_preset(preset, ellipsoid)
    if preset is not None and not isinstance(preset, TRConfig):
        raise TypeError(
            "preset must be 'paper', 'fast', 'authors:<dataset>:<model>' or a TRConfig "
            f"(e.g. etr_core.config.paper_table1('rms')), got {preset!r}"
        )
    base = preset if preset is not None else TRConfig(ellipsoid="rms")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(changes.get("radius"), str):
        if changes["radius"].lower() != "auto":
            raise ValueError(f"radius must be a positive number or 'auto', got {changes['radius']!r}")
        del changes["radius"]
        changes["auto_radius"] = True
    unknown = set(changes) - set(ALL_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    if ellipsoid is None:
        ellipsoid = base.ellipsoid
    if isinstance(ellipsoid, str):
        check_choice(
            "ellipsoid",
            ellipsoid.lower(),
            ("uniform", "uni", "sphere", "adagrad", "ada", "rms", "rmsprop", "hessian"),
        )
        changes["ellipsoid"] = canonical_ellipsoid(ellipsoid)
    else:
        name, options = _object_options(ellipsoid)
        changes["ellipsoid"] = name
        for key, value in options.items():
            changes.setdefault(key, value)
    if (
        changes["ellipsoid"] != base.ellipsoid
        and "gamma2" not in changes
        and base.gamma2 is not None
        and base.gamma2 == default_gamma2(base.ellipsoid)
    ):
        changes["gamma2"] = None  # Table 1's shrink factor follows the ellipsoid
    config = base.replace(**changes)
    check_hessian_options(config.ellipsoid, config.hessian_probes, config.hessian_block)
    return config


def check_hessian_options(ellipsoid: str, probes: int, block: str) -> None:
    """``ValueError`` when ``hessian_probes`` or ``hessian_block`` differs from its default (1, "element")
    while ``ellipsoid`` is not "hessian": only the Hessian-diagonal ellipsoid reads them, and an option
    that is silently ignored hides a mistake (as ``torch.optim.SGD`` refuses ``nesterov`` without
    momentum)."""
    if ellipsoid == "hessian":
        return
    for name, value, default in (("hessian_probes", probes, 1), ("hessian_block", block, "element")):
        if value != default:
            raise ValueError(
                f"{name}={value!r} needs ellipsoid='hessian' (the Hessian-diagonal ellipsoid is the only "
                f"one that reads it), got ellipsoid={ellipsoid!r}: pass ellipsoid='hessian' or leave "
                f"{name} out"
            )
