"""Which trust-region settings a method runs: one check, worded for the library or for the CLI.

``ARC_rms`` (adaptive cubic regularisation, :class:`etr_core.arc.EllipsoidalARC`) has no trust region:
its ``sigma`` takes the radius's place and is chosen at the first step, and its acceptance and update
constants are CGT 2011's, not Table 1's. Of a :class:`etr_core.config.TRConfig` it runs only the
RMSProp ellipsoid's fields, the Krylov stop rule and the batch size (:data:`ARC_TR_OPTIONS`), so the presets
"fast" (automatic radius) and "authors" (the authors' radius, thresholds, warm-up and pivot) and every
other ``tr_options`` key would be recorded in ``config.json`` without running; they are refused.
The authors' files exist for the paper's ellipsoids only, so ``TR_hess`` has no "authors" preset.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ARC_TR_OPTIONS", "AUTHORS_METHODS", "settings_problem"]

# The TRConfig fields EllipsoidalARC receives (etr_core.training.schedule), and the batch size.
# hessian_probes / hessian_block act only on the Hessian-diagonal ellipsoid, which ARC_rms does not have.
ARC_TR_OPTIONS = ("batch_size", "beta", "ellipsoid", "eps", "eps_mode", "krylov_tol", "max_krylov", "theta")
AUTHORS_METHODS = ("TR_uni", "TR_ada", "TR_rms")  # the ellipsoids of the authors' parameter files


def settings_problem(
    method: str, preset: str, tr_options: Iterable[str], *, flags: bool = False, method_flag: str = "--method"
) -> str | None:
    """Why ``method`` cannot run ``preset`` with ``tr_options`` (their keys), or ``None`` when it can.

    ``flags=True`` words the sentence with the ``etr`` flags (``--method``, ``--preset``,
    ``--tr-option``; ``method_flag`` names the method's flag), otherwise with
    :class:`etr_core.training.TrainConfig`'s field names.
    """
    from etr_core.training.run_config import METHODS

    spec = METHODS.get(method)
    if spec is None or spec.family != "tr":
        return None
    who = f"{method_flag} {method}" if flags else f"method={method!r}"
    option = "--tr-option" if flags else "tr_options"
    if spec.cubic:
        what = "adaptive cubic regularisation, not a trust region"
        takes = f"{option} {', '.join(ARC_TR_OPTIONS)}"
        if preset != "paper":
            given = f"--preset {preset}" if flags else f"preset={preset!r}"
            paper = "--preset paper" if flags else "preset='paper'"
            return (f"{who} is {what}: {given} sets trust-region values it would not run (its sigma is "
                    f"chosen at the first step); {method} runs with {paper} (the default) and accepts "
                    f"{takes}")
        ignored = sorted(str(k) for k in tr_options if k not in ARC_TR_OPTIONS)
        if ignored:
            given = ", ".join(f"--tr-option {k}" for k in ignored) if flags else f"tr_options {ignored}"
            return f"{who} is {what}: {given} would not run; {method} accepts {takes} only"
        return None
    if preset == "authors" and method not in AUTHORS_METHODS:
        given = "--preset authors" if flags else "preset='authors'"
        others = "--preset paper or --preset fast" if flags else "preset='paper' or 'fast'"
        return (f"{who} with {given}: the authors' files exist for {', '.join(AUTHORS_METHODS)} only; "
                f"run {method} with {others}")
    return None
