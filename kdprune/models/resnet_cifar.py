"""The CIFAR ResNets of He et al. (2016, section 4.2): 3 stages of 16/32/64 channels, 6n + 2 layers.

Shortcuts that change shape are 1x1 conv + BatchNorm (option B), so Torch-Pruning's dependency graph
couples them with the residual branch. Module paths follow torchvision: `conv1`, `bn1`, `layer1` ..
`layer3` (each a Sequential of `BasicBlock`s with `conv1`, `bn1`, `conv2`, `bn2`, `downsample`),
`avgpool`, `fc`. The classifier producing the logits is `fc`.
"""

from torch import Tensor, nn

from kdprune.models.common import check_input_spec, init_weights


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity or 1x1 conv + BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Return relu(F(x) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """A 3x3 stem, three stages of `blocks_per_stage` BasicBlocks, global average pool, fc."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int,
        in_channels: int,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._stage(widths[0], widths[0], blocks_per_stage, stride=1)
        self.layer2 = self._stage(widths[0], widths[1], blocks_per_stage, stride=2)
        self.layer3 = self._stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[2], num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape (batch, num_classes)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def _cifar_resnet(
    name: str, depth: int, num_classes: int, in_channels: int, image_size: int
) -> CifarResNet:
    check_input_spec(name, num_classes, in_channels, image_size)
    model = CifarResNet((depth - 2) // 6, num_classes, in_channels)
    init_weights(model)
    return model


def resnet20(num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """Build ResNet-20 (3 BasicBlocks per stage, about 0.27 M parameters for 10 classes)."""
    return _cifar_resnet("resnet20", 20, num_classes, in_channels, image_size)


def resnet56(num_classes: int, in_channels: int, image_size: int) -> CifarResNet:
    """Build ResNet-56 (9 BasicBlocks per stage, about 0.86 M parameters for 10 classes)."""
    return _cifar_resnet("resnet56", 56, num_classes, in_channels, image_size)
