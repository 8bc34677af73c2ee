"""ResNet-18 (He, Zhang, Ren & Sun, CVPR 2016, "Deep Residual Learning for Image Recognition").

The layout is the ImageNet ResNet-18 of the paper's Table 1: a 7x7 stride-2 convolution and a 3x3
stride-2 max pool, four stages of two basic blocks (two 3x3 convolutions with batch norm and an
identity shortcut; a 1x1 stride-2 convolution with batch norm on the shortcut where a stage halves the
resolution and doubles the width: 64, 128, 256, 512 channels), global average pooling and a linear layer.
Inputs of any size from 32x32 up work (224x224 gives a 7x7 map at ``layer4``, 32x32 a 1x1 map).

Parameter and buffer names are those of torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1`` ..
``layer4`` with blocks ``0`` and ``1`` holding ``conv1``/``bn1``/``conv2``/``bn2`` and, where the shape
changes, ``downsample.0``/``downsample.1``, then ``fc``), so a torchvision ResNet-18 state_dict loads
with ``--arch xaibench.models.archs:resnet18``. Two deliberate differences leave the state_dict as it
is: every activation is its own non-inplace ``nn.ReLU`` (``relu1`` and ``relu2`` in each block; captum's
DeepLift and guided backpropagation hook ``nn.ReLU`` modules), and the model is an ``nn.Sequential``
with a ``flatten`` module, so that ``xaibench concepts`` cuts it after ``layer4`` and only the pool,
``flatten`` and ``fc`` run on rebuilt activations.

This module imports torch; ``xaibench.models.archs`` imports it only when a ResNet is built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)), the shortcut projected by a 1x1
    convolution and batch norm (``downsample``) where the stride or the width changes.

    Args:
        in_channels: channels of the block's input.
        channels: channels of both convolutions and of the output.
        stride: stride of the first convolution and of the projection.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + shortcut)


def _stage(in_channels: int, channels: int, stride: int) -> nn.Sequential:
    """``BLOCKS_PER_STAGE`` basic blocks, the first with ``stride``."""
    blocks = [BasicBlock(in_channels, channels, stride)]
    blocks += [BasicBlock(channels, channels) for _ in range(BLOCKS_PER_STAGE - 1)]
    return nn.Sequential(*blocks)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Sequential:
    """ResNet-18 with He initialisation of the convolutions (He et al., ICCV 2015, fan-out, as the
    paper trains it) and unit batch-norm scales.

    Args:
        num_classes: number of output logits.
        in_channels: channels of the input images.
    """
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, STAGE_WIDTHS[0], 7, stride=2, padding=3, bias=False)),
        ("bn1", nn.BatchNorm2d(STAGE_WIDTHS[0])),
        ("relu", nn.ReLU()),
        ("maxpool", nn.MaxPool2d(3, stride=2, padding=1)),
    ]
    width = STAGE_WIDTHS[0]
    for index, channels in enumerate(STAGE_WIDTHS, start=1):
        layers.append((f"layer{index}", _stage(width, channels, 1 if index == 1 else 2)))
        width = channels
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(width, num_classes))]
    model = nn.Sequential(OrderedDict(layers))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model
