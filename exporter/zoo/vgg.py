"""VGG configurations A, B, D, E (torchvision layout) and seed 001's 32x32 VGG16."""

from __future__ import annotations

import torch
from torch import nn

# Channel counts per conv layer; "M" is a 2x2 max pool. Keys follow the paper's table.
CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: list[int | str], batch_norm: bool = False, in_channels: int = 3) -> nn.Sequential:
    """The convolutional trunk for one configuration, indexed exactly like torchvision's."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(v, int)
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """torchvision's VGG: trunk, AdaptiveAvgPool 7x7, three fully connected layers."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class VGG16Cifar(nn.Module):
    """Seed 001's VGG16 for 32x32 inputs: configuration D, then 512-4096-4096-classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_layer = make_layers(CFGS["D"])  # [512, 1, 1]
        self.fullconn_layer = nn.Sequential(
            nn.Linear(512, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fullconn_layer(torch.flatten(self.conv_layer(x), 1))


def _vgg(cfg: str, batch_norm: bool, num_classes: int, dropout: float) -> VGG:
    """Shared body of the torchvision-layout builders: configuration ``cfg`` trunk plus the VGG head."""
    return VGG(make_layers(CFGS[cfg], batch_norm), num_classes=num_classes, dropout=dropout)


def vgg11(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A), torchvision layout."""
    return _vgg("A", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg11_bn(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A) with BatchNorm, torchvision layout."""
    return _vgg("A", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg13(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B), torchvision layout."""
    return _vgg("B", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg13_bn(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B) with BatchNorm, torchvision layout."""
    return _vgg("B", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg16(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D), torchvision layout."""
    return _vgg("D", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg16_bn(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D) with BatchNorm, torchvision layout."""
    return _vgg("D", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg19(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E), torchvision layout."""
    return _vgg("E", batch_norm=False, num_classes=num_classes, dropout=dropout)


def vgg19_bn(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E) with BatchNorm, torchvision layout."""
    return _vgg("E", batch_norm=True, num_classes=num_classes, dropout=dropout)


def vgg16_cifar(num_classes: int = 10) -> VGG16Cifar:
    """Seed 001's VGG16 for 32x32 inputs (configuration D, classifier 512-4096-4096)."""
    return VGG16Cifar(num_classes=num_classes)
