"""Models the quantizers cannot handle, for the bad-input tests
(`trusted_targets=[helpers.odd_models.*]`).

Each takes a model config's keys (the LeNet-5 ones pass through unused).
"""

from __future__ import annotations

import torch
from torch import nn


class _Transposed(nn.Module):
    """A conv, a transposed conv (which the PT2E x86 quantizer leaves in float), a classifier."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.up(torch.relu(self.conv(x)))).mean((2, 3)))


class _Branching(_Transposed):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        if x.mean() > 0:
            x = x * 2
        return self.fc(x.mean((2, 3)))


def transposed(num_classes: int, in_channels: int, image_size: int, **_: object) -> nn.Module:
    """A model with a ConvTranspose2d layer."""
    return _Transposed(num_classes, in_channels)


def branching(num_classes: int, in_channels: int, image_size: int, **_: object) -> nn.Module:
    """A model with data-dependent control flow."""
    return _Branching(num_classes, in_channels)
