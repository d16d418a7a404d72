"""Channel rounding of a structured cut: `prune_method.round_to` (a positive int, null or `auto`).

Torch-Pruning rounds each layer's kept width down to a multiple of `round_to`; a layer whose kept
width would round to zero is left whole. `auto` rounds to the CPU's channel block
(`kdprune.cpu_features.channel_block`: 16 on AVX-512, 8 on AVX2, none elsewhere), where convolution
kernels run fastest. A block can spoil the cut it rounds: cut by half, a 16-channel layer keeps 8,
which rounds to 0 at 16, so the layer stays whole and the cut loses much of its MACs reduction.
So `auto` tries the blocks from the CPU's down (16 then 8 on AVX-512, 8 on AVX2) and keeps the
first whose cut still reaches the target, else does not round (`first_reaching`; the latency
bench picks its roundings with the same function).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kdprune.cpu_features import CHANNEL_BLOCK, channel_block, cpu_flags
from kdprune.errors import ConfigError

AUTO = "auto"
BLOCKS = tuple(sorted(set(CHANNEL_BLOCK.values()), reverse=True))  # (16, 8): widest first

T = TypeVar("T")


def check_round_to(round_to: Any) -> None:
    """Raise ConfigError unless `round_to` is `auto`, None or a positive int."""
    if round_to is None or round_to == AUTO:
        return
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(
            f"prune_method round_to must be auto, null or a positive int, got {round_to!r}."
        )


def auto_roundings(flags: Iterable[str] | None) -> tuple[int, ...]:
    """The multiples `auto` tries on a CPU with these feature flags, widest first: the CPU's
    channel block and the smaller blocks; none where no block helps."""
    block = channel_block(None if flags is None else set(flags))
    return tuple(b for b in BLOCKS if block is not None and b <= block)


def candidate_roundings(
    round_to: int | str | None, flags: Iterable[str] | None = None
) -> tuple[int | None, ...]:
    """What a cut may round to, in the order tried: `auto` gives the CPU's blocks, then None
    (not rounded); an int or None is itself. `flags` default to this machine's."""
    check_round_to(round_to)
    if not isinstance(round_to, str):  # int or None: auto is the one string check_round_to allows
        return (round_to,)
    return (*auto_roundings(cpu_flags() if flags is None else flags), None)


def first_reaching(
    roundings: Iterable[int | None], cut: Callable[[int | None], T]
) -> tuple[T, int | None]:
    """`cut(r)` for the first of `roundings` with which it does not raise ConfigError (a target
    it cannot reach), and that r; the last one's ConfigError if every one raises."""
    error: ConfigError | None = None
    for round_to in roundings:
        try:
            return cut(round_to), round_to
        except ConfigError as err:
            error = err
    if error is None:
        raise ValueError("first_reaching needs at least one rounding")
    raise error
