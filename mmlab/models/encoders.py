"""Per-modality encoders (explained in chapter 1, *Modality imbalance, observed*).

The CG-MNIST encoder follows the papers' description (MMPareto App. B: "4 conv
layers + 1 average pool"; PMR's public code gives the layer sizes): BatchNorm on
the input, conv 5x5 -> 32, max-pool, conv 3x3 -> 32, conv 3x3 stride 2 -> 64,
conv 3x3 -> 64, global average pool, linear 64 -> 512.

The input BatchNorm and the first convolution are computed as one convolution
(:func:`normalised_convolution`, chapter 4 explains it): the same function and the same
gradients, without the backward pass through the first convolution to its input, which only
the BatchNorm's scale and shift would need (on a CPU it was a fifth of a training step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalised_convolution(norm: nn.BatchNorm2d, conv: nn.Conv2d, x: torch.Tensor,
                           memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``conv(norm(x))`` with the BatchNorm's affine map folded into the convolution.

    With ``x_hat`` the normalised input (no parameters), ``norm(x) = gamma x_hat + beta`` per
    channel, and by linearity ``conv_W(gamma x_hat + beta) = conv_{W gamma}(x_hat) +
    conv_{sum_c beta_c W_c}(1)``: one convolution of ``x_hat`` with one more input channel of
    ones, whose filter is the beta-weighted sum of the others (its zero padding is the padding
    the original sees, so the borders agree). ``x_hat`` needs no gradient, so the backward pass
    computes this convolution's weight gradient only; ``gamma``, ``beta`` and ``W`` get theirs
    through the filter. Running statistics are updated exactly as ``norm(x)`` would update them.
    """
    if conv.padding_mode != "zeros":
        raise ValueError(f"the folded form needs zero padding, got padding_mode={conv.padding_mode!r}")
    # the running-statistics bookkeeping of nn.BatchNorm2d.forward, unchanged
    average_factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            average_factor = 1.0 / float(norm.num_batches_tracked)
    track = not norm.training or norm.track_running_stats
    x_hat = F.batch_norm(x, norm.running_mean if track else None, norm.running_var if track else None,
                         None, None, norm.training or (norm.running_mean is None and norm.running_var is None),
                         average_factor, norm.eps)
    if not norm.affine:
        return F.conv2d(x_hat, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if conv.groups != 1:
        raise ValueError("the folded form is written for an ungrouped convolution")
    ones = x_hat.new_ones(x_hat.shape[0], 1, *x_hat.shape[2:])
    inputs = torch.cat([x_hat, ones], 1).contiguous(memory_format=memory_format)
    gamma, beta = norm.weight.view(1, -1, 1, 1), norm.bias.view(1, -1, 1, 1)
    weight = torch.cat([conv.weight * gamma, (conv.weight * beta).sum(1, keepdim=True)], 1)
    return F.conv2d(inputs, weight, conv.bias, conv.stride, conv.padding, conv.dilation)


class _NormalisedStem(nn.Module):
    """The encoder's first BatchNorm and convolution as one module, sharing their parameters
    (not registered with the encoder: its state_dict keeps the layer names)."""

    def __init__(self, encoder: "ConvEncoder"):
        super().__init__()
        self.norm, self.conv = encoder.net[0], encoder.net[1]
        self.__dict__["encoder"] = encoder  # a plain reference, not a submodule

    def forward(self, x):
        return self.encoder._stem(x)


class ConvEncoder(nn.Module):
    """Four convolutions and an average pool: ``[N, C, H, W] -> [N, feature_dim]``.

    ``pooled_size`` is the side of the average pool's output: 1 (the papers' global pool, for
    digits) or more, which keeps a coarse layout of the feature map -- what a spectrogram needs,
    where *where* in time and frequency the energy lies is the content (chapter 5).
    ``stem_stride`` > 1 makes the first convolution stride, for inputs much larger than a digit
    (a 129 x 63 spectrogram costs ten digits at stride 1).
    """

    def __init__(self, in_channels: int, feature_dim: int = 512, pooled_size: int = 1, stem_stride: int = 1):
        super().__init__()
        self.in_channels, self.feature_dim, self.pooled_size = in_channels, feature_dim, pooled_size
        self.net = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, 32, 5, stride=stem_stride, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),  # 28 -> 14
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 14 -> 7
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pooled_size), nn.Flatten(),
            nn.Linear(64 * pooled_size * pooled_size, feature_dim),
        )

    #: the stem's memory format where it is fixed (under ``torch.func.vmap``, which cannot query
    #: strides: :mod:`mmlab.models.stacked`); None: read off the weights on every call
    memory_format: torch.memory_format | None = None

    def forward(self, x):
        return self.net[2:](self._stem(x))

    def _stem(self, x):
        fmt = self.memory_format
        if fmt is None:
            # the model's memory format, read off a layer where NCHW and NHWC strides differ (the first
            # convolution's 1 x 5 x 5 filters for a gray image are both at once)
            weight = self.net[4].weight
            channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
            fmt = torch.channels_last if channels_last else torch.contiguous_format
        return normalised_convolution(self.net[0], self.net[1], x, fmt)

    #: channels after each of :meth:`stages` (the last is the feature vector)
    @property
    def stage_channels(self) -> tuple[int, ...]:
        return (32, 64, self.feature_dim)

    def stages(self) -> list[nn.Module]:
        """The encoder in three consecutive pieces that share its layers (for cross-modal
        modules between them, chapter 2): to 32 channels at 14x14, to 64 channels at 7x7, and
        to the features. Composing them is :meth:`forward`."""
        return [nn.Sequential(_NormalisedStem(self), *self.net[2:6]), self.net[6:8], self.net[8:]]

    @property
    def output_layer(self) -> nn.Linear:
        """The last layer, whose output is the modality's features (GradNorm balances gradients there)."""
        return self.net[-1]


def init_weights(module: nn.Module) -> nn.Module:
    """The original scripts' initialisation: kaiming-normal convolutions,
    xavier-normal linear layers, zero biases, BatchNorm at (1, 0).

    This matters: with PyTorch's default initialisation and lr 1e-3 the gray
    encoder barely learns in the first epochs (see ../shared/reference/METHODS.md).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
