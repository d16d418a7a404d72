"""torchvision architectures with the stem adapted to small images (8x8 to 64x64), never pretrained.

Module paths and classifiers (the layer producing the logits):
- `resnet18`, `resnet34`: torchvision ResNet with `conv1` a 3x3 stride-1 conv and `maxpool` an
  Identity; stages `layer1` .. `layer4`; classifier `fc`.
- `mobilenet_v2`: torchvision MobileNetV2 with `features.0.0` a stride-1 conv; `features.1` ..
  `features.18`; classifier `classifier.1` (after `classifier.0`, a Dropout).
- `vgg16_bn`: the usual CIFAR VGG-16-BN in torchvision's layout: `features` (same indices as
  torchvision's vgg16_bn, max-pools in ceil mode so that inputs below 32x32 never pool to zero),
  `avgpool` to 1x1, then `classifier.0` Linear(512, hidden), ReLU, Dropout and the classifier
  `classifier.3`.

In-place activations are switched off so forward hooks (KD feature taps) see unmodified outputs.
"""

from torch import Tensor, nn
from torchvision import models

from kdprune.errors import ConfigError
from kdprune.models.common import check_input_spec, disable_inplace, init_weights

# torchvision's configuration "D" (VGG-16): conv widths, "M" for a 2x2 max-pool.
_VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def _small_image_resnet(model: models.ResNet, in_channels: int) -> models.ResNet:
    model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    disable_inplace(model)
    return model


def resnet18(num_classes: int, in_channels: int, image_size: int) -> models.ResNet:
    """Build torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool."""
    check_input_spec("resnet18", num_classes, in_channels, image_size)
    model = models.resnet18(weights=None, num_classes=num_classes)
    return _small_image_resnet(model, in_channels)


def resnet34(num_classes: int, in_channels: int, image_size: int) -> models.ResNet:
    """Build torchvision's ResNet-34 with a 3x3 stride-1 stem and no max-pool."""
    check_input_spec("resnet34", num_classes, in_channels, image_size)
    model = models.resnet34(weights=None, num_classes=num_classes)
    return _small_image_resnet(model, in_channels)


def mobilenet_v2(
    num_classes: int,
    in_channels: int,
    image_size: int,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> models.MobileNetV2:
    """Build torchvision's MobileNetV2 with a stride-1 first conv taking in_channels."""
    check_input_spec("mobilenet_v2", num_classes, in_channels, image_size)
    if width_mult <= 0 or not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"mobilenet_v2: need width_mult > 0 and dropout in [0, 1), got {width_mult}, {dropout}."
        )
    model = models.mobilenet_v2(
        weights=None, num_classes=num_classes, width_mult=width_mult, dropout=dropout
    )
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    disable_inplace(model)
    return model


class VGG(nn.Module):
    """VGG-BN for small images: conv features, global average pool, two-layer classifier."""

    def __init__(
        self,
        layout: tuple[int | str, ...],
        num_classes: int,
        in_channels: int,
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.BatchNorm2d(int(item))]
                layers.append(nn.ReLU())
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape (batch, num_classes)."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def vgg16_bn(
    num_classes: int,
    in_channels: int,
    image_size: int,
    hidden: int = 512,
    dropout: float = 0.5,
) -> VGG:
    """Build VGG-16-BN (torchvision's configuration D) with a small-image classifier."""
    check_input_spec("vgg16_bn", num_classes, in_channels, image_size)
    if hidden < 1 or not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"vgg16_bn: need hidden >= 1 and dropout in [0, 1), got {hidden}, {dropout}."
        )
    model = VGG(_VGG16_LAYOUT, num_classes, in_channels, hidden, dropout)
    init_weights(model)
    # torchvision's VGG init for linear layers.
    for module in model.classifier:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
    return model
