"""The AlexNet family: torchvision's layout, the 2012 paper's single tower, and the seeds' variants."""

from __future__ import annotations

import torch
from torch import nn


class AlexNet(nn.Module):
    """torchvision's AlexNet (64-192-384-256-256); state_dict keys match torchvision exactly."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # [64, 55, 55]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [64, 27, 27]
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # [192, 27, 27]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [192, 13, 13]
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # [384, 13, 13]
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # [256, 13, 13]
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # [256, 13, 13]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [256, 6, 6]
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class AlexNetOriginal(nn.Module):
    """The 2012 paper / Caffe ``bvlc_alexnet`` as one tower: 96-256-384-384-256 with LRN, 227x227 input.

    LRN uses the paper's constants (size 5, alpha 1e-4, beta 0.75, k 2) as in seed 004;
    the adaptive pool is the identity at 227x227 and keeps other input sizes working.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4),  # [96, 55, 55]
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [96, 27, 27]
            nn.Conv2d(96, 256, kernel_size=5, padding=2),  # [256, 27, 27]
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [256, 13, 13]
            nn.Conv2d(256, 384, kernel_size=3, padding=1),  # [384, 13, 13]
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),  # [384, 13, 13]
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # [256, 13, 13]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [256, 6, 6]
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class AlexNetHalf(nn.Module):
    """One tower of the two-GPU original (48-128-192-192-128, FC 2048-2048), seeds 000 and 001."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, kernel_size=11, stride=4, padding=2),  # [48, 55, 55]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [48, 27, 27]
            nn.Conv2d(48, 128, kernel_size=5, padding=2),  # [128, 27, 27]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [128, 13, 13]
            nn.Conv2d(128, 192, kernel_size=3, padding=1),  # [192, 13, 13]
            nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),  # [192, 13, 13]
            nn.ReLU(inplace=True),
            nn.Conv2d(192, 128, kernel_size=3, padding=1),  # [128, 13, 13]
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [128, 6, 6]
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(128 * 6 * 6, 2048),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(2048, 2048),
            nn.ReLU(inplace=True),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class AlexNetCifar(nn.Module):
    """Seed 001's AlexNet rewritten for 32x32 inputs, with BatchNorm after conv1 and conv2."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_layer = nn.Sequential(
            nn.Conv2d(3, 48, kernel_size=3, padding=1),  # [48, 32, 32]
            nn.MaxPool2d(kernel_size=2, stride=2),  # [48, 16, 16]
            nn.ReLU(),
            nn.BatchNorm2d(48),
            nn.Conv2d(48, 128, kernel_size=3, padding=1),  # [128, 16, 16]
            nn.MaxPool2d(kernel_size=2, stride=2),  # [128, 8, 8]
            nn.ReLU(),
            nn.BatchNorm2d(128),
            nn.Conv2d(128, 192, kernel_size=3, padding=1),  # [192, 8, 8]
            nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),  # [192, 8, 8]
            nn.ReLU(),
            nn.Conv2d(192, 128, kernel_size=3, padding=1),  # [128, 8, 8]
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),  # [128, 4, 4]
        )
        self.fullconn_layer = nn.Sequential(
            nn.Linear(128 * 4 * 4, 2048),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(2048, 2048),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fullconn_layer(torch.flatten(self.conv_layer(x), 1))


class AlexNetFashionMNIST(nn.Module):
    """Seed 003's one-channel AlexNet (96-256-384-384-256) for FashionMNIST resized to 224."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=2),  # [96, 55, 55]
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [96, 27, 27]
            nn.Conv2d(96, 256, kernel_size=5, stride=1, padding=2),  # [256, 27, 27]
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [256, 13, 13]
            nn.Conv2d(256, 384, kernel_size=3, stride=1, padding=1),  # [384, 13, 13]
            nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, stride=1, padding=1),  # [384, 13, 13]
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, stride=1, padding=1),  # [256, 13, 13]
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # [256, 6, 6]
        )
        self.fc = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(img), 1))


def alexnet(num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    return AlexNet(num_classes=num_classes, dropout=dropout)


def alexnet_original(num_classes: int = 1000, dropout: float = 0.5) -> AlexNetOriginal:
    return AlexNetOriginal(num_classes=num_classes, dropout=dropout)


def alexnet_half(num_classes: int = 1000) -> AlexNetHalf:
    return AlexNetHalf(num_classes=num_classes)


def alexnet_cifar(num_classes: int = 10) -> AlexNetCifar:
    return AlexNetCifar(num_classes=num_classes)


def alexnet_fashionmnist(num_classes: int = 10) -> AlexNetFashionMNIST:
    return AlexNetFashionMNIST(num_classes=num_classes)
