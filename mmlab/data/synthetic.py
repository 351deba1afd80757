"""``cremad_shaped``: random content in CREMA-D's exact shapes (chapter 5, *Audio-visual learning*).

For what needs CREMA-D's tensors but not its content: the GPU benchmark of a CREMA-D epoch
(``benchmarks/bench_training.py --cases cremad_shaped``) and tests of the ResNet path through
the training loop on machines without the data. Audio ``float16 [N, 1, 257, 188]`` (OGM-GE's
log-spectrogram shape), visual ``uint8 [N, T, 3, S, S]`` frames, six classes drawn uniformly.
Nothing can be learnt from it: never report its accuracy.
"""

from __future__ import annotations

import torch

from .audio import HOP_LENGTH, N_FFT, SAMPLE_RATE, SECONDS, spectrogram_frames
from .split import Split

SPECTROGRAM_SHAPE = (N_FFT // 2 + 1, spectrogram_frames(int(SECONDS * SAMPLE_RATE), HOP_LENGTH))  # 257 x 188


def make_cremad_shaped(*, train_size, val_size, test_size, data_seed, root=None, frames: int = 3,
                       frame_size: int = 224, spectrogram_bins: int = SPECTROGRAM_SHAPE[0],
                       spectrogram_frames: int = SPECTROGRAM_SHAPE[1]) -> dict[str, Split]:
    """Random splits with CREMA-D's shapes (smaller ones on request, for tests); sizes default to
    CREMA-D's (6,698 - val / 744)."""
    del root  # nothing to read
    sizes = {"train": train_size if train_size is not None else 6698 - val_size,
             "val": val_size, "test": test_size if test_size is not None else 744}
    g = torch.Generator().manual_seed(data_seed)
    splits = {}
    for name, n in sizes.items():
        audio = (torch.randn(n, 1, spectrogram_bins, spectrogram_frames, generator=g) - 4.0).to(torch.float16)
        visual = torch.randint(0, 256, (n, frames, 3, frame_size, frame_size), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 6, (n,), generator=g)
        splits[name] = Split(name, {"audio": audio, "visual": visual}, labels)
    return splits
