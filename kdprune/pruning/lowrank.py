"""Low-rank decomposition as a compression step (`prune_method=tucker2|cp`), a `Pruner` like any.

Every conv with a kernel larger than 1x1 (groups 1, zero padding) outside `ignored_layers` and
the classifier is replaced by a factorised chain (`kdprune.decomposition`); with
`decompose_linears`, hidden linear layers get a truncated SVD too. Ranks come from `ratio` and
`unit` as pruning targets do: `params` / `macs` is the share of the model's count removed (the rank
rule's knob is bisected until the count is within `tolerance`); `channels` sets the knob directly
to 1 - ratio (uniform: the share of each layer's ranks kept; energy: the share of spectral energy
kept; vbmf: the multiple of VBMF's ranks). `allocation` names the rank rule (uniform | energy |
vbmf, see `kdprune.decomposition.ranks`). A layer is decomposed only where that makes it cheaper.

It is a `prune_method` option rather than a sibling config group because an order has one
compression step: a sibling group would need a rule for which of the two applies (or both, in
which order), and every order, check, sweep and report key would learn a second name for the
same slot. As a `Pruner` it gets `ratio` / `unit` targets, the orders, KD, sweeps and the ledger
for free, and the report groups it by `method` like any pruning method.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from kdprune.decomposition import (
    COST_UNITS,
    RANK_RULES,
    SVD,
    ConvSpec,
    Factorised,
    Layer,
    LinearSpec,
    UniformRanks,
    collect_layers,
    layer_spec,
    replace_module,
)
from kdprune.errors import ConfigError
from kdprune.models.counting import count
from kdprune.pruning.base import (
    UNITS,
    Pruner,
    PruneResult,
    Rebuild,
    check_choice,
    check_ratio,
    check_tolerance,
    ignored_module_paths,
    is_ignored,
    move_inputs,
    scheduled_fraction,
)
from kdprune.pruning.search import TargetSearch, unreachable

SEARCH_STEPS = 40  # bisection steps on the rank rule's knob (2**-40: far below one rank step)
REFINE_STEPS = 64  # single-rank steps that may close the last gap to a target


def _decomposable(module: nn.Module, linears: bool) -> bool:
    spec = layer_spec(module)
    if isinstance(spec, ConvSpec):
        return spec.kernel_size[0] * spec.kernel_size[1] > 1
    return linears and isinstance(spec, LinearSpec) and min(spec.in_features, spec.out_features) > 1


class LowRankPruner(Pruner):
    """Replace layers by low-rank factorised chains, in place (see the module docstring)."""

    kind = "low_rank"  # layers are factorised: fewer params and MACs, new (thinner) layers

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor,
        *,
        decomposition: Any,
        ratio: float,
        unit: str = "macs",
        allocation: str = "uniform",
        min_rank: int = 1,
        decompose_linears: bool = False,
        ignored_layers: Iterable[str] = (),
        tolerance: float = 0.02,
        calibration: Any = None,
        loss_fn: Any = None,
    ) -> None:
        self.check_options(
            decomposition=decomposition,
            ratio=ratio,
            unit=unit,
            allocation=allocation,
            min_rank=min_rank,
            decompose_linears=decompose_linears,
            tolerance=tolerance,
        )
        self.model, self.example_inputs = model, example_inputs
        self.ratio, self.unit, self.allocation = float(ratio), unit, allocation
        self.min_rank, self.tolerance = int(min_rank), float(tolerance)
        self.ignored = ignored_module_paths(model, ignored_layers)
        linear_method = SVD() if decompose_linears else None
        self.methods = self._targets(decomposition, linear_method)
        self._final: dict[str, tuple[int, ...]] | None = None  # the gradual cut's end point
        self._check_reach()

    @staticmethod
    def check_options(
        decomposition: Any = None,
        ratio: Any = None,
        unit: Any = "macs",
        allocation: Any = "uniform",
        min_rank: Any = 1,
        decompose_linears: Any = False,
        tolerance: Any = 0.02,
        **_: Any,
    ) -> None:
        """Raise ConfigError if an option is out of range (no model needed)."""
        check_ratio(ratio)
        check_choice(unit, UNITS, "unit")
        check_choice(allocation, tuple(RANK_RULES), "allocation")
        if not callable(getattr(decomposition, "decompose", None)):
            raise ConfigError(
                "prune_method decomposition must be a decomposition object "
                f"(kdprune.decomposition.Tucker2 or CP), got {decomposition!r}."
            )
        if isinstance(min_rank, bool) or not isinstance(min_rank, int) or min_rank < 1:
            raise ConfigError(f"prune_method min_rank must be an int >= 1, got {min_rank!r}.")
        if not isinstance(decompose_linears, bool):
            raise ConfigError(
                f"prune_method decompose_linears must be true or false, got {decompose_linears!r}."
            )
        check_tolerance(tolerance)

    def check_target(self) -> None:
        """Search the ranks of a params/macs target now, on these weights (ConfigError if the
        rank steps cannot land within tolerance)."""
        if self.unit != "channels":
            self.plan()

    def plan(self) -> dict[str, tuple[int, ...]]:
        """The ranks `apply` would give, on the bound model's current weights: module path ->
        ranks of every layer it would decompose. The model is not touched."""
        layers = self._layers()
        rules = [RANK_RULES[self.allocation](layer, self.min_rank) for layer in layers]
        if self.unit not in COST_UNITS:
            return self._choose(layers, rules, 1.0 - self.ratio, "macs")
        return self._search(layers, rules)

    def apply(self) -> PruneResult:
        """Decompose the bound model in place; the history lists the decomposition steps."""
        start = time.perf_counter()
        ranks = self.plan()
        steps = self._decompose(ranks)
        details = {"ranks": {path: list(r) for path, r in ranks.items()}}
        return PruneResult(steps, None, time.perf_counter() - start, details)

    def step_toward(
        self, before: float, after: float, target: float, rebuild: Rebuild
    ) -> PruneResult | None:
        """One pruner shrinks the ranks all the way: `apply_fraction(after / target)`."""
        return self.apply_fraction(scheduled_fraction(after, target))

    def apply_fraction(self, fraction: float) -> PruneResult | None:
        """Gradual decomposition (the joint order): move every layer `fraction` of the way from
        its full ranks to the ranks of the one-shot cut, re-decomposing the layer's current
        (trained) weight at the new ranks; at 1 it lands exactly on that cut. The cut is planned
        at the first call, on the weights trained so far. None when no rank changed."""
        start = time.perf_counter()
        if self._final is None:
            self._final = self.plan()
        ranks = {}
        for path, final in self._final.items():
            module = self.model.get_submodule(path)
            full = self.methods[path].full_ranks(layer_spec(module))
            step = tuple(round(f - fraction * (f - r)) for f, r in zip(full, final, strict=True))
            current = module.ranks if isinstance(module, Factorised) else full
            if step != tuple(current):
                ranks[path] = step
        if not ranks:
            return None
        return PruneResult(self._decompose(ranks), None, time.perf_counter() - start)

    def _targets(self, method: Any, linear_method: Any) -> dict[str, Any]:
        """Module path -> decomposition of every layer to decompose (ConfigError if none)."""
        targets, inside = {}, ()
        for path, module in self.model.named_modules():
            if inside and path.startswith(inside):
                continue  # the layers of a factorised chain are not decomposed again
            inside = path + "." if isinstance(module, Factorised) else inside
            if is_ignored(path, self.ignored) or not _decomposable(
                module, linear_method is not None
            ):
                continue
            targets[path] = method if isinstance(layer_spec(module), ConvSpec) else linear_method
        if not targets:
            raise ConfigError(
                f"nothing to decompose in {type(self.model).__name__}: no conv with a kernel "
                "larger than 1x1 (groups 1)"
                + (" or hidden linear layer" if linear_method else "")
                + f" outside the ignored layers ({', '.join(self.ignored)})."
            )
        return targets

    def _layers(self) -> list[Layer]:
        example = move_inputs(self.example_inputs, self.model)
        with torch.no_grad():
            return collect_layers(self.model, example, self.methods)

    def _total(self, unit: str) -> int:
        return count(self.model, self.example_inputs, unit)

    def _check_reach(self) -> None:
        """Raise ConfigError if a params/macs target is more than every layer at min_rank gives."""
        if self.unit not in COST_UNITS or self.ratio == 0:
            return
        layers = self._layers()
        rules = [UniformRanks(layer, self.min_rank) for layer in layers]
        ranks = self._choose(layers, rules, 0.0, self.unit)
        reach = self._reduction(layers, ranks, self._total(self.unit))
        if self.ratio > reach + self.tolerance:
            linears = any(isinstance(m, SVD) for m in self.methods.values())
            how = f"decomposing every layer at rank {self.min_rank}"
            end = "." if linears else " (decompose_linears=true also factorises linear layers)."
            raise unreachable(self.unit, self.ratio, how, reach, end)

    def _choose(
        self, layers: list[Layer], rules: list[Any], t: float, unit: str
    ) -> dict[str, tuple[int, ...]]:
        """Ranks at knob `t` of every layer that the decomposition makes cheaper in `unit`."""
        chosen = {}
        for layer, rule in zip(layers, rules, strict=True):
            ranks = rule(t)
            if layer.cost(ranks)[unit] < layer.dense[unit]:
                chosen[layer.path] = ranks
        return chosen

    def _reduction(
        self, layers: list[Layer], ranks: dict[str, tuple[int, ...]], total: int
    ) -> float:
        """The share of the model's `unit` count (`total`) that decomposing at `ranks` removes."""
        saved = sum(
            layer.dense[self.unit] - layer.cost(ranks[layer.path])[self.unit]
            for layer in layers
            if layer.path in ranks
        )
        return saved / total

    def _search(self, layers: list[Layer], rules: list[Any]) -> dict[str, tuple[int, ...]]:
        """Bisect the knob until the reduction is closest to the target; ConfigError if it stays
        further than `tolerance` (rank steps too coarse, or beyond reach)."""
        total = self._total(self.unit)

        def reduction_at(t: float) -> tuple[float, dict[str, tuple[int, ...]]]:
            ranks = self._choose(layers, rules, t, self.unit)
            return self._reduction(layers, ranks, total), ranks

        # A larger knob keeps more rank: the reduction falls as it grows.
        search = TargetSearch(reduction_at, self.ratio, increasing=False)
        low, high = 0.0, max(rule.knob_range[1] for rule in rules)
        search.evaluate(high)
        search.evaluate(low)
        low, high = search.bisect(low, high, (low + high) / 2, SEARCH_STEPS)
        best = search.closest()  # on a tie the larger knob (more rank kept)
        reduction, ranks = search.tried[best]
        if abs(reduction - self.ratio) > self.tolerance / 2 and search.tried[low][0] >= self.ratio:
            ranks = self._refine(layers, search.tried[low][1], total)
            reduction = self._reduction(layers, ranks, total)
        if abs(reduction - self.ratio) > self.tolerance + 1e-9:
            least = search.tried[max(search.tried)][0]
            why = (
                f"even the largest ranks of allocation={self.allocation} remove {least:.1%}"
                if least > self.ratio
                else f"the closest rank steps remove {reduction:.1%}"
            )
            raise ConfigError(
                f"decomposition could not reach a {self.unit} reduction of {self.ratio:.1%}: {why}."
            )
        return ranks

    def _refine(
        self, layers: list[Layer], ranks: dict[str, tuple[int, ...]], total: int
    ) -> dict[str, tuple[int, ...]]:
        """Spend the surplus of a cut that removes more than the target, one rank at a time:
        small models move in coarse rank steps, and the uniform knob moves every layer at once.
        Each step raises the one rank that lands closest to the target, while that gets closer."""
        current = dict(ranks)
        error = abs(self._reduction(layers, current, total) - self.ratio)
        for _ in range(REFINE_STEPS):
            moves = []
            for layer in layers:
                if layer.path not in current:
                    continue
                layer_ranks = current[layer.path]
                for mode, (rank, top) in enumerate(
                    zip(layer_ranks, layer.full_ranks(), strict=True)
                ):
                    if rank < top:
                        up = (*layer_ranks[:mode], rank + 1, *layer_ranks[mode + 1 :])
                        moves.append({**current, layer.path: up})
            scored = [(abs(self._reduction(layers, m, total) - self.ratio), m) for m in moves]
            best = min(scored, key=lambda pair: pair[0], default=None)
            if best is None or best[0] >= error:
                return current
            error, current = best
        return current

    def _decompose(self, ranks: dict[str, tuple[int, ...]]) -> list[dict[str, Any]]:
        """Replace each layer by its decomposition at `ranks`; return the replayable steps."""
        steps = []
        for path, layer_ranks in ranks.items():
            module = self.model.get_submodule(path)
            method = self.methods[path]
            new = method.decompose(module, tuple(layer_ranks)).train(module.training)
            replace_module(self.model, path, new)
            steps.append({"path": path, "kind": method.kind, "ranks": list(layer_ranks)})
        return steps
