"""GoogLeNet (Inception v1): torchvision's layout with auxiliary heads, and seed 001's 32x32 version."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU, as torchvision's GoogLeNet uses everywhere."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated on channels.

    Branch 3 uses a 3x3 kernel where the paper says 5x5: that is torchvision's layout
    (kept for checkpoint compatibility and the stated 6,624,904 parameters).
    """

    def __init__(
        self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier, used only in training."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))  # [128, 4, 4]
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1)), inplace=True))
        return self.fc2(x)


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet. In eval mode (and so in every exported graph) it has one output."""

    def __init__(
        self,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)  # [64, 112, 112]
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # [64, 56, 56]
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)  # [192, 56, 56]
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # [192, 28, 28]
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)  # [256, 28, 28]
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)  # [480, 28, 28]
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # [480, 14, 14]
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)  # [512, 14, 14]
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)  # [528, 14, 14]
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)  # [832, 14, 14]
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # [832, 7, 7]
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)  # [1024, 7, 7]
        self.aux1: InceptionAux | None = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2: InceptionAux | None = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """Map torchvision-normalised input to the [-1, 1] scaling the original weights expect."""
        if not self.transform_input:
            return x
        x0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x0, x1, x2), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        training_aux = self.training and self.aux_logits
        aux1 = self.aux1(x) if training_aux and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if training_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.avgpool(self.inception5b(self.inception5a(x)))
        x = self.fc(self.dropout(torch.flatten(x, 1)))
        if aux1 is not None and aux2 is not None:
            return x, aux2, aux1
        return x


class ConvReLU(nn.Module):
    """Seed 001's ``Conv_ReLU``: a biased convolution followed by ReLU, under ``model``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(in_channels, out_channels, **kwargs), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class InceptionSeed(nn.Module):
    """Seed 001's Inception block (true 5x5 branch, no BatchNorm)."""

    def __init__(
        self, in_channels: int, ch1x1: int, ch3x3rd: int, ch3x3: int, ch5x5rd: int, ch5x5: int, poolproj: int
    ) -> None:
        super().__init__()
        self.branch1 = ConvReLU(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvReLU(in_channels, ch3x3rd, kernel_size=1),
            ConvReLU(ch3x3rd, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            ConvReLU(in_channels, ch5x5rd, kernel_size=1),
            ConvReLU(ch5x5rd, ch5x5, kernel_size=5, padding=2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            ConvReLU(in_channels, poolproj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class GoogLeNetCifar(nn.Module):
    """Seed 001's GoogLeNet for 32x32 inputs, without auxiliary classifiers.

    Inception 5b keeps the seed's 182-channel 3x3 reduction (the paper has 192); the
    seed's ``Dropout2d`` on a flattened vector is a plain ``Dropout`` here (same keys).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_layer = nn.Sequential(
            ConvReLU(3, 64, kernel_size=7, stride=2, padding=3),  # [64, 16, 16]
            nn.MaxPool2d(kernel_size=3, stride=2, padding=0),  # [64, 7, 7]
            ConvReLU(64, 64, kernel_size=1),
            ConvReLU(64, 192, kernel_size=3, stride=1, padding=1),  # [192, 7, 7]
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # [192, 4, 4]
            InceptionSeed(192, 64, 96, 128, 16, 32, 32),  # [256, 4, 4]
            InceptionSeed(256, 128, 128, 192, 32, 96, 64),  # [480, 4, 4]
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # [480, 2, 2]
            InceptionSeed(480, 192, 96, 208, 16, 48, 64),  # [512, 2, 2]
            InceptionSeed(512, 160, 112, 224, 24, 64, 64),  # [512, 2, 2]
            InceptionSeed(512, 128, 128, 256, 24, 64, 64),  # [512, 2, 2]
            InceptionSeed(512, 112, 144, 288, 32, 64, 64),  # [528, 2, 2]
            InceptionSeed(528, 256, 160, 320, 32, 128, 128),  # [832, 2, 2]
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # [832, 1, 1]
            InceptionSeed(832, 256, 160, 320, 32, 128, 128),  # [832, 1, 1]
            InceptionSeed(832, 384, 182, 384, 48, 128, 128),  # [1024, 1, 1]
            nn.AdaptiveAvgPool2d((1, 1)),  # [1024, 1, 1]
        )
        self.fullconn_layer = nn.Sequential(nn.Dropout(p=0.4), nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fullconn_layer(torch.flatten(self.conv_layer(x), 1))


def googlenet(num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, transform_input=transform_input)


def googlenet_cifar(num_classes: int = 10) -> GoogLeNetCifar:
    return GoogLeNetCifar(num_classes=num_classes)
