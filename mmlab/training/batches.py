"""Mini-batches from tensors that stay on the device.

CG-MNIST is small (uint8 images, well under 200 MB), so the whole split lives
on the training device and a batch is an index into it: no DataLoader, no
worker processes, no host-to-device copy per step. The shuffling order of epoch
``e`` depends only on ``(seed, e)``, which is what makes a resumed run follow
the same path as an uninterrupted one. A dataset's training augmentation (``transform``,
e.g. CREMA-D's random crops, chapter 5) runs on the batch, on the device, with a generator
seeded by ``(seed, epoch)`` for the same reason.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator, Sequence

import torch

#: a training-time augmentation of a whole batch: ``(inputs, generator) -> inputs``
BatchTransform = Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]


class ResidentBatches:
    def __init__(self, split, modalities: Sequence[str], batch_size: int, device: torch.device,
                 shuffle: bool = False, seed: int = 0, transform: BatchTransform | None = None):
        self.modalities = list(modalities)
        self.inputs = {m: split.inputs[m].to(device) for m in self.modalities}
        self.labels = split.labels.to(device)
        self.batch_size, self.device, self.shuffle, self.seed = batch_size, device, shuffle, seed
        self.transform = transform
        self.num_samples = len(self.labels)
        # a split may ask for its [0, 1] pixels to be standardised per channel (CG-MNIST's
        # normalization="pmr"): (x - mean) / std, as [1, C, 1, 1] tensors on the device
        self.normalization = {
            m: tuple(torch.tensor(v, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) for v in stats)
            for m, stats in (getattr(split, "normalization", None) or {}).items() if m in self.modalities}

    def reseeded(self, seed: int) -> "ResidentBatches":
        """The same batches (the same tensors on the device, not a copy) in the order of ``seed``."""
        other = copy.copy(self)
        other.seed = seed
        return other

    def for_evaluation(self, batch_size: int) -> "ResidentBatches":
        """The same samples (the same tensors, not a copy) in their order, without augmentation."""
        other = copy.copy(self)
        other.batch_size, other.shuffle, other.transform = batch_size, False, None
        return other

    def __len__(self) -> int:
        return self.batches_in(self.num_samples)  # a last batch of one sample would break BatchNorm

    def batches_in(self, count: int) -> int:
        """How many batches an epoch of ``count`` samples has (see :meth:`__len__`)."""
        full, rest = divmod(count, self.batch_size)
        return full + (1 if rest >= 2 else 0)

    def order(self, epoch: int, count: int | None = None) -> torch.Tensor:
        """The epoch's permutation of ``count`` positions (default: the split's samples)."""
        count = self.num_samples if count is None else count
        if not self.shuffle:
            return torch.arange(count, device=self.device)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(count, generator=g).to(self.device)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """The epoch's batches ``(inputs, labels)``: every sample once, in the order of ``(seed, epoch)``."""
        for inputs, labels, _ in self.epoch_of(epoch, None):
            yield inputs, labels

    def epoch_of(self, epoch: int, samples: torch.Tensor | None
                 ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]:
        """The batches of an epoch over ``samples`` (indices into the split, repeats allowed; ``None``: each
        sample once), shuffled by ``(seed, epoch)``, as ``(inputs, labels, positions)``: ``positions`` are the
        batch's places in ``samples`` (:meth:`mmlab.methods.Method.epoch_samples`)."""
        if samples is not None:
            samples = check_samples(samples, self.num_samples).to(self.device)
        count = self.num_samples if samples is None else len(samples)
        order = self.order(epoch, count)
        generator = None
        if self.transform is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(self.seed * 1_000_003 + epoch + 500_009)
        for start in range(0, count, self.batch_size):
            positions = order[start:start + self.batch_size]
            if len(positions) < 2:
                break
            idx = positions if samples is None else samples.index_select(0, positions)
            inputs = {m: _as_float(x.index_select(0, idx)) for m, x in self.inputs.items()}
            for m, (mean, std) in self.normalization.items():
                inputs[m] = inputs[m].sub_(mean).div_(std)
            if self.transform is not None:
                inputs = self.transform(inputs, generator)
            yield inputs, self.labels.index_select(0, idx), positions


def check_samples(samples: torch.Tensor, num_samples: int) -> torch.Tensor:
    """An epoch's list of training samples, checked: a 1-d integer tensor of at least two indices, each in
    ``[0, num_samples)``."""
    if not isinstance(samples, torch.Tensor) or samples.dim() != 1 or samples.dtype.is_floating_point \
            or samples.dtype == torch.bool:
        raise ValueError("an epoch's samples must be a 1-d integer tensor of indices into the training split, got "
                         + (f"a {samples.dtype} tensor of shape {tuple(samples.shape)}"
                            if isinstance(samples, torch.Tensor) else repr(type(samples).__name__)))
    if len(samples) < 2:
        raise ValueError(f"an epoch needs at least two samples (one batch of two), got {len(samples)}")
    low, high = int(samples.min()), int(samples.max())
    if low < 0 or high >= num_samples:
        raise ValueError(f"an epoch's sample indices must lie in [0, {num_samples}), got {low}..{high}")
    return samples.long()


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images to [0, 1]; real-valued inputs (spectrograms, float16 on disk) to float32."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
