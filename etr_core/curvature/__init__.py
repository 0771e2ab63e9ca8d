"""Curvature analysis of small networks: is the Hessian diagonally dominant? (paper section 3.2)

* :mod:`~etr_core.curvature.buffers` -- measuring without side effects (buffers, BatchNorm, Dropout).
* :mod:`~etr_core.curvature.hessian` -- exact Hessian of a network's loss and its block ranges.
* :mod:`~etr_core.curvature.mass` -- diagonal mass ``delta`` (Becker et al., 1988), per block.
* :mod:`~etr_core.curvature.wigner` -- the Wigner baseline of Proposition 1 (corrected), in closed
  form, exactly and by Monte Carlo, and the comparison of Fig. 2.
* :mod:`~etr_core.curvature.estimators` -- sampled-row mass, Hutchinson and Bekas diagonals.
* :mod:`~etr_core.curvature.spectrum` -- extreme eigenvalues by Lanczos on HVPs.
"""

from etr_core.curvature.buffers import batch_statistics_only, buffer_copies, fixed_rng
from etr_core.curvature.estimators import (
    DiagonalEstimate,
    RowSampleEstimate,
    bekas_diagonal,
    hutchinson_diagonal,
    relative_l2_error,
    sampled_row_mass,
    stratified_allocation,
)
from etr_core.curvature.hessian import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_PARAMS,
    HESSIAN_METHODS,
    ExactHessian,
    NetworkHvp,
    ParameterBlock,
    check_hessian_size,
    exact_hessian,
    loss_of_flat_parameters,
    network_hvp,
    parameter_blocks,
)
from etr_core.curvature.mass import (
    BlockMass,
    EntryScales,
    block_diagonal_mass,
    block_masses,
    diagonal_mass,
    entry_scales,
)
from etr_core.curvature.spectrum import LanczosResult, lanczos_extreme_eigenvalues
from etr_core.curvature.wigner import (
    MonteCarloEstimate,
    WignerComparison,
    compare_with_wigner,
    paper_printed_wigner_mass,
    sample_wigner,
    wigner_mass_closed_form,
    wigner_mass_exact,
    wigner_mass_monte_carlo,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_PARAMS",
    "HESSIAN_METHODS",
    "BlockMass",
    "DiagonalEstimate",
    "EntryScales",
    "ExactHessian",
    "LanczosResult",
    "MonteCarloEstimate",
    "NetworkHvp",
    "ParameterBlock",
    "RowSampleEstimate",
    "WignerComparison",
    "batch_statistics_only",
    "bekas_diagonal",
    "block_diagonal_mass",
    "block_masses",
    "buffer_copies",
    "check_hessian_size",
    "compare_with_wigner",
    "diagonal_mass",
    "entry_scales",
    "exact_hessian",
    "fixed_rng",
    "hutchinson_diagonal",
    "lanczos_extreme_eigenvalues",
    "loss_of_flat_parameters",
    "network_hvp",
    "paper_printed_wigner_mass",
    "parameter_blocks",
    "relative_l2_error",
    "sample_wigner",
    "sampled_row_mass",
    "stratified_allocation",
    "wigner_mass_closed_form",
    "wigner_mass_exact",
    "wigner_mass_monte_carlo",
]
