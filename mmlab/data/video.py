"""Video: decode the frames of a clip at one frame per second and resize them.

The visual input of the audio-visual chapter (chapter 5, *Audio-visual learning*) follows
OGM-GE's CREMA-D protocol (Peng et al., CVPR 2022; ../shared/reference/METHODS.md): from each
video keep **one frame per second**, the first frame of every second, i.e. the frames numbered
``0, fps, 2 fps, ...`` (OGM-GE's ``data/CREMAD/video_preprocessing.py`` keeps the decoded frame
``count`` when ``count % int(fps) == 0``). Here the ``k``-th kept frame is the decoded frame
``round(k * fps)``, which is the same frame for the integer rates of CREMA-D (30 fps) and stays
on the second for rates such as 29.97, where ``int(fps)`` would drift.

Frames are decoded with PyAV (FFmpeg's libraries) and resized to ``size x size`` with
:func:`resize_frame` (bilinear with antialiasing, what ``torchvision.transforms.Resize`` does on
tensors), the whole frame squeezed to a square as OGM-GE's test transform ``Resize((224, 224))``
does; nothing is cropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataIntegrityError, DataNotFoundError


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [3, size, size]``: an ``uint8 [H, W, 3]`` RGB frame resized, aspect not kept.

    Bilinear interpolation with antialiasing (``align_corners=False``), rounded to the nearest
    integer; a frame already ``size x size`` is only transposed.
    """
    chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    if chw.shape[1:] == (size, size):
        return chw.contiguous().numpy()
    resized = F.interpolate(chw[None].float(), size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8).numpy()


def one_fps_frames(path: str | os.PathLike, count: int, size: int) -> tuple[np.ndarray, int]:
    """``(frames, distinct)``: ``count`` frames of the video at ``path``, one per second.

    ``frames`` is ``uint8 [count, 3, size, size]``: the first frame of seconds ``0 .. count-1``,
    each resized by :func:`resize_frame`. A clip shorter than ``count`` seconds has only
    ``distinct < count`` such frames; they are repeated in turn (``frames[k]`` is the one-fps
    frame ``k % distinct``), as its audio is tiled to 3 s, so that frame ``k`` still comes from
    the second of sound that plays at time ``k``. Only the first ``count`` seconds are decoded.

    A missing file raises :class:`DataNotFoundError`; one that FFmpeg cannot decode, that has no
    video stream, no frame rate or no frames raises :class:`DataIntegrityError`, naming the file.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Video file {path} does not exist.")
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    kept: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataIntegrityError(f"Video file {path} holds no video stream.")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # the parallelism is one process per clip
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or float(rate) <= 0:
                raise DataIntegrityError(f"Video file {path} does not state its frame rate.")
            wanted = [round(k * float(rate)) for k in range(count)]
            for index, frame in enumerate(container.decode(stream)):
                if index == wanted[len(kept)]:
                    kept.append(resize_frame(frame.to_ndarray(format="rgb24"), size))
                    if len(kept) == count:
                        break
    except DataIntegrityError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise DataIntegrityError(
            f"Video file {path} could not be decoded ({type(exc).__name__}: {exc}). "
            "Delete it and copy or download it again."
        ) from None
    if not kept:
        raise DataIntegrityError(f"Video file {path} holds no video frames.")
    distinct = len(kept)
    return np.stack([kept[k % distinct] for k in range(count)]), distinct
