"""LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, sized for any input from 4x4 up.

Module paths: `layer1`, `layer2` (5x5 conv -> ReLU -> 2x2 max-pool), `fc1`, `fc2`, `fc3`.
The classifier producing the logits is `fc3`.
"""

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from kdprune.errors import ConfigError
from kdprune.models.common import check_input_spec, init_weights


class LeNet5(nn.Sequential):
    """Conv 6 -> conv 16 (5x5, padded) -> fc 120 -> fc 84 -> fc classes (configurable)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        widths: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
    ) -> None:
        # Both convs are padded so that 8x8 inputs survive two pools; the flatten size then
        # follows from the image size alone (widths[1] channels on an (image_size // 4)^2 grid).
        c1, c2 = widths
        h1, h2 = hidden
        super().__init__(
            OrderedDict(
                layer1=nn.Sequential(
                    nn.Conv2d(in_channels, c1, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
                ),
                layer2=nn.Sequential(
                    nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
                ),
                flatten=nn.Flatten(),
                fc1=nn.Linear(c2 * (image_size // 4) ** 2, h1),
                relu1=nn.ReLU(),
                fc2=nn.Linear(h1, h2),
                relu2=nn.ReLU(),
                fc3=nn.Linear(h2, num_classes),
            )
        )


def lenet5(
    num_classes: int,
    in_channels: int,
    image_size: int,
    widths: Sequence[int] = (6, 16),
    hidden: Sequence[int] = (120, 84),
) -> LeNet5:
    """Build LeNet-5 for images of in_channels x image_size x image_size (image_size >= 4)."""
    check_input_spec("lenet5", num_classes, in_channels, image_size, min_image_size=4)
    if len(widths) != 2 or len(hidden) != 2 or min(*widths, *hidden) < 1:
        raise ConfigError(
            "lenet5 takes two conv widths and two hidden sizes >= 1, "
            f"got {list(widths)}, {list(hidden)}"
        )
    model = LeNet5(num_classes, in_channels, image_size, tuple(widths), tuple(hidden))
    init_weights(model)
    return model
