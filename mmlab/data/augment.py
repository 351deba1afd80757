"""Training-time augmentation that runs on whole batches, on the training device (chapter 5).

CREMA-D's frames are augmented as in OGM-GE's training transform -- a random resized crop
(area 8-100 % of the frame, aspect ratio 3/4-4/3) to the encoder's input size and a horizontal
flip with probability 1/2 -- but for a whole batch at once: each frame's crop is an affine map
of the normalised coordinates, and one :func:`torch.nn.functional.grid_sample` call resamples
every frame (bilinear). Each frame draws its own crop, as the original per-image transform
does. The random numbers come from a generator the batches seed per epoch, so a resumed run
sees the same crops.

Two departures, both small: a crop that does not fit the frame is shrunk to fit (torchvision
retries ten times, then falls back to a centre crop), and the crop is taken from the stored
frame (the preprocessing's size), not from the full-resolution video frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        flip_probability: float = 0.5) -> torch.Tensor:
    """Random resized crops of ``images`` (``[..., C, H, W]``, floating point) to ``size x size``.

    Every image (every leading index) gets its own crop area, aspect ratio, position and flip.
    """
    if not images.is_floating_point():
        raise TypeError("random_resized_crop works on floating-point images (divide uint8 by 255 first)")
    lead, (c, h, w) = images.shape[:-3], images.shape[-3:]
    flat = images.reshape(-1, c, h, w)
    n, device = flat.shape[0], flat.device

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, generator=generator, device=device)

    area = uniform(*scale)
    log_ratio = uniform(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio) * (h / w)  # width / height of the crop, in pixels -> in fractions
    crop_w = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the frame's width and height
    crop_h = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (1 - crop_w) * (2 * torch.rand(n, generator=generator, device=device) - 1)
    centre_y = (1 - crop_h) * (2 * torch.rand(n, generator=generator, device=device) - 1)
    flip = torch.where(torch.rand(n, generator=generator, device=device) < flip_probability, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device, dtype=flat.dtype)
    theta[:, 0, 0] = crop_w * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(*lead, c, size, size)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` (``[..., C, H, W]``) resized to ``size x size`` (bilinear; the test transform)."""
    lead, (c, h, w) = images.shape[:-3], images.shape[-3:]
    if (h, w) == (size, size):
        return images
    out = F.interpolate(images.reshape(-1, c, h, w), size=(size, size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out.reshape(*lead, c, size, size)
