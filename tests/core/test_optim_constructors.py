"""The optimisers' constructors: every keyword argument that is an option reaches ``param_groups``.

The oracle is the constructor's own signature (``inspect``) and the value passed in: each option given
a non-default value must show up unchanged in ``param_groups[0]``, and no option may be left without
an argument (or an argument without an option)."""

from __future__ import annotations

import inspect

import pytest
import torch

from etr_core.optim import EllipsoidalTR, FirstOrderTR
from etr_core.optim.options import ELLIPSOIDAL_OPTIONS, FIRST_ORDER_OPTIONS, constructor_overrides

# A valid value for every option, each different from paper Table 1's default.
NON_DEFAULT = {
    "radius": 0.25,
    "max_radius": 5.0,
    "eta1": 0.01,
    "eta2": 0.9,
    "gamma1": 1.3,
    "gamma2": 1.2,
    "grow_only_on_boundary": True,
    "ellipsoid_update": "after_accept",
    "beta": 0.7,
    "eps": 1e-8,
    "eps_mode": "authors",
    "tiny_pred": 1e-30,
    "krylov_tol": 0.2,
    "theta": 0.4,
    "max_krylov": 7,
    "solver": "cg",
    "stop_rule": "model_decrease",
    "residual_norm": "m_inv",
    "root": "best",
    "hessian_fraction": 0.5,
    "hessian_probes": 3,
    "hessian_block": "layer",
}
# Arguments that are not options handed to the configuration.
NOT_OPTIONS = {"self", "params", "ellipsoid", "preset", "distributed", "lr", "radius_rule"}


def _option_arguments(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - NOT_OPTIONS


@pytest.mark.parametrize(
    ("cls", "names"), [(EllipsoidalTR, ELLIPSOIDAL_OPTIONS), (FirstOrderTR, FIRST_ORDER_OPTIONS)]
)
def test_every_option_argument_reaches_param_groups(cls, names):
    arguments = _option_arguments(cls)
    # the constructor takes exactly the options of its param groups (ellipsoid/lr/radius_rule apart)
    assert arguments == set(names) - NOT_OPTIONS - {"auto_radius"}
    values = {k: NON_DEFAULT[k] for k in sorted(arguments)}
    ellipsoid = "hessian" if "hessian_probes" in values else "rms"  # the Hessian options need it
    opt = cls([torch.nn.Parameter(torch.zeros(3))], ellipsoid=ellipsoid, **values)
    group = opt.param_groups[0]
    for key, value in values.items():
        assert group[key] == value, key


def test_constructor_overrides_reads_only_options_and_needs_each():
    arguments = {k: None for k in ELLIPSOIDAL_OPTIONS} | {"self": object(), "params": [], "preset": "paper"}
    arguments["eta1"] = 0.5
    overrides = constructor_overrides(arguments, ELLIPSOIDAL_OPTIONS)
    assert overrides["eta1"] == 0.5
    assert not {"ellipsoid", "lr", "auto_radius", "self", "params", "preset"} & set(overrides)
    assert set(overrides) == set(ELLIPSOIDAL_OPTIONS) - {"ellipsoid", "lr", "auto_radius"}
    del arguments["theta"]
    with pytest.raises(KeyError, match="theta"):
        constructor_overrides(arguments, ELLIPSOIDAL_OPTIONS)


@pytest.mark.parametrize("cls", [EllipsoidalTR, FirstOrderTR])
def test_class_docstring_is_the_class_doc(cls):
    # help(EllipsoidalTR) shows the paper's algorithm, not the base class's one-liner
    assert cls.__doc__ is not None and "paper" in cls.__doc__
    assert "__doc__" in vars(cls)
