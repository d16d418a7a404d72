"""The 5-layer CNN student of the classic KD experiments (knowledge-distillation-pytorch `net.py`).

Module paths: `layer1` .. `layerN` (3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool, one per width),
`pool` (adaptive average pool to at most `pool_size` x `pool_size`), `fc1`, `dropout`, `fc2`.
The classifier producing the logits is `fc2`.
"""

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from kdprune.errors import ConfigError
from kdprune.models.common import check_input_spec, init_weights


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class CNN5(nn.Sequential):
    """Conv blocks of the given widths, then fc hidden -> ReLU -> dropout -> fc num_classes."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        widths: Sequence[int],
        hidden: int,
        dropout: float,
        pool_size: int,
    ) -> None:
        channels = [in_channels, *widths]
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            (f"layer{i + 1}", _conv_block(channels[i], channels[i + 1])) for i in range(len(widths))
        )
        # Pool to a small fixed grid so large inputs (64x64) do not blow up fc1, while small ones
        # (28x28 -> 3x3) keep their whole grid.
        grid = min(pool_size, image_size // 2 ** len(widths))
        layers["pool"] = nn.AdaptiveAvgPool2d(grid)
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(widths[-1] * grid * grid, hidden)
        layers["relu"] = nn.ReLU()
        layers["dropout"] = nn.Dropout(dropout)
        layers["fc2"] = nn.Linear(hidden, num_classes)
        super().__init__(layers)


def cnn5(
    num_classes: int,
    in_channels: int,
    image_size: int,
    widths: Sequence[int] = (32, 64, 128),
    hidden: int = 500,
    dropout: float = 0.3,
    pool_size: int = 4,
) -> CNN5:
    """Build the KD student CNN; needs image_size >= 2 ** len(widths)."""
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ConfigError(f"cnn5: widths must be a non-empty list of positive ints, got {widths}.")
    if hidden < 1 or pool_size < 1:
        raise ConfigError(f"cnn5: hidden and pool_size must be >= 1, got {hidden}, {pool_size}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"cnn5: dropout must be in [0, 1), got {dropout}.")
    check_input_spec("cnn5", num_classes, in_channels, image_size, min_image_size=2 ** len(widths))
    model = CNN5(num_classes, in_channels, image_size, widths, hidden, dropout, pool_size)
    init_weights(model)
    return model
