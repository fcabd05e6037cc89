"""LeNet-5 as written in the seed article (seed 001): no activation between the conv layers."""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 for 3x32x32 inputs; keys ``conv_layer.*`` / ``fullconn_layer.*`` as in the seed."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_layer = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # [6, 28, 28]
            nn.MaxPool2d(kernel_size=2, stride=2),  # [6, 14, 14]
            nn.Conv2d(6, 16, kernel_size=5),  # [16, 10, 10]
            nn.MaxPool2d(kernel_size=2, stride=2),  # [16, 5, 5]
        )
        self.fullconn_layer = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_layer(x)
        return self.fullconn_layer(torch.flatten(x, 1))


def lenet5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes=num_classes)
