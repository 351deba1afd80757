"""Per-modality encoders (explained in chapter 1, *Modality imbalance, observed*).

The CG-MNIST encoder follows the papers' description (MMPareto App. B: "4 conv
layers + 1 average pool"; PMR's public code gives the layer sizes): BatchNorm on
the input, conv 5x5 -> 32, max-pool, conv 3x3 -> 32, conv 3x3 stride 2 -> 64,
conv 3x3 -> 64, global average pool, linear 64 -> 512.
"""

from __future__ import annotations

from torch import nn


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

    def forward(self, x):
        return self.net(x)

    #: channels after each of :meth:`stages` (the last is the feature vector)
    @property
    def stage_channels(self) -> tuple[int, ...]:
        return (32, 64, self.feature_dim)

    def stages(self) -> list[nn.Module]:
        """The encoder in three consecutive pieces that share its layers (for cross-modal
        modules between them, chapter 2): to 32 channels at 14x14, to 64 channels at 7x7, and
        to the features. Composing them is :meth:`forward`."""
        return [self.net[:6], self.net[6:8], self.net[8:]]

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
