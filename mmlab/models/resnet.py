"""ResNet-18 encoders for CREMA-D (chapter 5, *Audio-visual learning*).

OGM-GE and MMPareto train a ResNet-18 (He et al., CVPR 2016) from scratch per modality
(../shared/reference/METHODS.md):

* audio: the log-spectrogram ``[N, 1, 257, 188]`` through a ResNet-18 whose first convolution
  takes one channel, then global average pooling -> ``[N, 512]``;
* visual: ``T`` frames per clip ``[N, T, 3, H, W]``; every frame goes through the same 2-D
  ResNet-18, the feature maps are stacked to ``[N, 512, T, h, w]`` and averaged over time and
  space -> ``[N, 512]``. Frames arrive in [0, 1] and are normalised with the ImageNet mean and
  standard deviation inside the encoder, as the original transforms do.

The trunk is torchvision's ``resnet18`` where torchvision is installed, and otherwise this
module's :class:`ResNet18`, built with the same layers under the same names (so either's
``state_dict`` loads into the other; ``tests/test_resnet.py`` checks it). Both encoders expose
three :meth:`stages` (to 128, 256 and 512 channels) for MMTM's cross-modal modules (chapter 2);
the visual stages keep the frame axis, ``[N, C, T, h, w]``, so MMTM squeezes over time too.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 512


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18's block)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """ResNet-18 without its classifier: ``[N, C, H, W] -> [N, 512, H/32, W/32]``."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, planes, layers = (64, 128, 256, 512), 64, []
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(planes, width, stride), BasicBlock(width, width)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18_trunk(in_channels: int, prefer_torchvision: bool = True) -> nn.Module:
    """A ResNet-18 trunk (no average pool, no classifier) whose first convolution takes
    ``in_channels``: torchvision's where installed, else :class:`ResNet18`."""
    if prefer_torchvision:
        try:
            from torchvision.models import resnet18
        except ImportError:
            pass
        else:
            net = resnet18(weights=None)
            if in_channels != 3:
                net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            net.avgpool, net.fc = nn.Identity(), nn.Identity()
            trunk = ResNet18.__new__(ResNet18)  # same attributes, torchvision's modules
            nn.Module.__init__(trunk)
            for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
                setattr(trunk, name, getattr(net, name))
            return trunk
    return ResNet18(in_channels)


def _trunk_stages(trunk: nn.Module) -> list[nn.Module]:
    """Three consecutive pieces of the trunk: to 128 channels (stride 8), to 256, to 512."""
    return [
        nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2),
        trunk.layer3,
        trunk.layer4,
    ]


class _StagedEncoder(nn.Module):
    """An encoder that is the composition of its ``_stages`` (a plain list of views of its layers,
    so MMTM can run it stage by stage, chapter 2)."""

    stage_channels = (128, 256, FEATURE_DIM)
    _stages: list[nn.Module]

    def forward(self, x):
        for stage in self._stages:
            x = stage(x)
        return x

    def stages(self) -> list[nn.Module]:
        return list(self._stages)

    @property
    def output_layer(self) -> nn.Module:
        """The trunk's last convolution with its BatchNorm, the last layer before the pooling (GradNorm
        balances gradients there, chapter 4; the whole trunk would cost three backward passes through it)."""
        block = self.trunk.layer4[-1]
        return nn.ModuleList([block.conv2, block.bn2])


class SpectrogramResNet(_StagedEncoder):
    """Audio encoder: ``[N, 1, F, T]`` log-spectrogram -> ``[N, 512]``."""

    def __init__(self, in_channels: int = 1, prefer_torchvision: bool = True):
        super().__init__()
        self.trunk = resnet18_trunk(in_channels, prefer_torchvision)
        self.feature_dim = FEATURE_DIM
        first, second, last = _trunk_stages(self.trunk)
        self._stages = [first, second, _PoolAfter(last)]  # a plain list: views of the trunk's layers


class _PoolAfter(nn.Module):
    """A stage followed by global average pooling over every axis after the channels."""

    def __init__(self, stage: nn.Module):
        super().__init__()
        self.stage = stage

    def forward(self, x):
        return self.stage(x).flatten(2).mean(2)


class _PerFrame(nn.Module):
    """Apply a 2-D module to every frame: ``[N, C, T, H, W]`` (or ``[N, T, C, H, W]`` at the
    input) -> ``[N, C', T, H', W']``."""

    def __init__(self, module: nn.Module, frames_first: bool = False):
        super().__init__()
        self.module, self.frames_first = module, frames_first

    def forward(self, x):
        if not self.frames_first:
            x = x.transpose(1, 2)  # [N, T, C, H, W]
        n, t = x.shape[:2]
        y = self.module(x.reshape(n * t, *x.shape[2:]))
        return y.reshape(n, t, *y.shape[1:]).transpose(1, 2)


class FramesResNet(_StagedEncoder):
    """Visual encoder: ``[N, T, 3, H, W]`` frames in [0, 1] -> ``[N, 512]`` (one 2-D ResNet-18
    over every frame, then the average over time and space)."""

    def __init__(self, in_channels: int = 3, prefer_torchvision: bool = True):
        super().__init__()
        self.normalise = FrameNormalisation(in_channels)
        self.trunk = resnet18_trunk(in_channels, prefer_torchvision)
        self.feature_dim = FEATURE_DIM
        first, second, last = _trunk_stages(self.trunk)
        # a plain list (not submodules): views of the layers registered above
        self._stages = [nn.Sequential(self.normalise, _PerFrame(first, frames_first=True)),
                        _PerFrame(second), _PoolAfter(_PerFrame(last))]


class FrameNormalisation(nn.Module):
    """``(x - mean) / std`` per colour channel of ``[N, T, C, H, W]`` frames (ImageNet's
    statistics for RGB, as the original transforms)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN if channels == 3 else (0.5,) * channels)
        std = torch.tensor(IMAGENET_STD if channels == 3 else (0.5,) * channels)
        self.register_buffer("mean", mean.view(1, 1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 1, -1, 1, 1), persistent=False)

    def forward(self, x):
        if x.dim() != 5:
            raise ValueError(f"the visual encoder takes frames [N, T, C, H, W], got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std
