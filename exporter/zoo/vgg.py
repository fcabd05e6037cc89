"""VGG configurations A, B, D, E (torchvision layout) and seed 001's 32x32 VGG16."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

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


def _register_vgg(name: str, cfg: str, batch_norm: bool, params: int) -> None:
    depth = name[3:5]
    bn = " with BatchNorm" if batch_norm else ""

    def builder(num_classes: int = 1000, dropout: float = 0.5) -> VGG:
        return VGG(make_layers(CFGS[cfg], batch_norm), num_classes=num_classes, dropout=dropout)

    builder.__name__ = name
    builder.__doc__ = f"VGG-{depth} (configuration {cfg}){bn}, torchvision layout."
    register_model(
        family="vgg",
        input_shape=(3, 224, 224),
        num_classes=1000,
        description=f"VGG-{depth}, configuration {cfg}{bn} (torchvision layout)",
        source="seed 001 (configurations A-E, SE_VGG)",
        torchvision_name=name,
        stated_params=params,
        name=name,
    )(builder)


# Parameter counts as published in torchvision's model tables.
for _name, _cfg, _bn, _params in [
    ("vgg11", "A", False, 132_863_336),
    ("vgg11_bn", "A", True, 132_868_840),
    ("vgg13", "B", False, 133_047_848),
    ("vgg13_bn", "B", True, 133_053_736),
    ("vgg16", "D", False, 138_357_544),
    ("vgg16_bn", "D", True, 138_365_992),
    ("vgg19", "E", False, 143_667_240),
    ("vgg19_bn", "E", True, 143_678_248),
]:
    _register_vgg(_name, _cfg, _bn, _params)


@register_model(
    family="vgg",
    input_shape=(3, 32, 32),
    num_classes=10,
    description="32x32 VGG16 (configuration D, classifier 512-4096-4096)",
    source="seed 001",
)
def vgg16_cifar(num_classes: int = 10) -> VGG16Cifar:
    return VGG16Cifar(num_classes=num_classes)
