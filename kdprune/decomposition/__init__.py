"""Low-rank decomposition of conv and linear layers: the tensor maths, the factorised layers that
replace them, the methods a `prune_method` config builds, and how ranks are chosen.

    method = Tucker2()                        # or CP(), SVD() for linear layers
    chain = method.decompose(conv, (8, 16))   # an nn.Sequential standing in for `conv`
    replace_module(model, "layer2.0", chain)

`kdprune.pruning.LowRankPruner` uses these as a compression step; a model file records each step
as {path, kind, ranks}, and `rebuild` replays it on a freshly built model before its weights load.
"""

from kdprune.decomposition.layers import (
    FACTORISED,
    ConvSpec,
    CPConv,
    Factorised,
    LinearSpec,
    LowRankLinear,
    Tucker2Conv,
    effective_weight,
    factorised,
    layer_spec,
    rebuild,
    replace_module,
)
from kdprune.decomposition.methods import CP, SVD, Tucker2
from kdprune.decomposition.ranks import (
    COST_UNITS,
    RANK_RULES,
    EnergyRanks,
    Layer,
    UniformRanks,
    VBMFRanks,
    collect_layers,
    module_cost,
)
from kdprune.decomposition.tensors import (
    cp,
    cp_reconstruct,
    energy_rank,
    relative_error,
    svd_factors,
    svdvals,
    tucker2,
    unfold,
)
from kdprune.decomposition.vbmf import evbmf_rank

__all__ = [
    "COST_UNITS",
    "CP",
    "FACTORISED",
    "RANK_RULES",
    "SVD",
    "CPConv",
    "ConvSpec",
    "EnergyRanks",
    "Factorised",
    "Layer",
    "LinearSpec",
    "LowRankLinear",
    "Tucker2",
    "Tucker2Conv",
    "UniformRanks",
    "VBMFRanks",
    "collect_layers",
    "cp",
    "cp_reconstruct",
    "effective_weight",
    "energy_rank",
    "evbmf_rank",
    "factorised",
    "layer_spec",
    "module_cost",
    "rebuild",
    "relative_error",
    "replace_module",
    "svd_factors",
    "svdvals",
    "tucker2",
    "unfold",
]
