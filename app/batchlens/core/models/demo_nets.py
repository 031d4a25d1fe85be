"""Architectures of the built-in demo models (weights live in resources/models/)."""

from __future__ import annotations

import torch
from torch import nn


class ShapesNet(nn.Module):
    """A small CNN that tells generated shapes apart (input 3x64x64)."""

    def __init__(self, num_classes: int = 4):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DenoiseNet(nn.Module):
    """A small DnCNN-style residual denoiser for single-channel images of any size."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 6):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.body(x)).clamp(0, 1)  # the body predicts the noise


ARCHITECTURES = {"ShapesNet": ShapesNet, "DenoiseNet": DenoiseNet}
