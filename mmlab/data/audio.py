"""Audio: read a WAV file, resample it, and turn it into a log-magnitude spectrogram.

One code path for every audio modality of the book (chapter 5, *Audio-visual learning*):
CREMA-D's speech and the spoken digits of the Free Spoken Digit Dataset go through the same
:func:`log_spectrogram`, with the parameters of OGM-GE's CREMA-D protocol by default
(Peng et al., CVPR 2022; ../shared/reference/METHODS.md):

1. load the clip at 22,050 Hz, mono, in [-1, 1];
2. tile it (repeat it end to end) and cut it to exactly 3 s;
3. clip to [-1, 1];
4. STFT with ``n_fft = 512``, hop 353, Hann window, centred frames (reflect padding);
5. ``log(|S| + 1e-7)``: an array of ``257 x 188`` for 3 s at 22,050 Hz.

The original code calls librosa for steps 1 and 4; here WAV files are read with
:mod:`scipy.io.wavfile`, resampled with a polyphase filter (:func:`scipy.signal.resample_poly`)
and transformed with :func:`torch.stft`, which computes the same centred STFT.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .errors import DataIntegrityError, DataNotFoundError

#: OGM-GE's CREMA-D audio protocol
SAMPLE_RATE = 22_050
SECONDS = 3.0
N_FFT = 512
HOP_LENGTH = 353
LOG_EPSILON = 1e-7


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """``(wave, sample_rate)``: the file's samples as mono ``float32`` in [-1, 1].

    Integer PCM is scaled by its full range, several channels are averaged. A missing file
    raises :class:`DataNotFoundError`, an unreadable or empty one :class:`DataIntegrityError`,
    each naming the file.
    """
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Audio file {path} does not exist.")
    try:
        rate, data = wavfile.read(path)
    except Exception as exc:  # scipy raises ValueError, EOFError, struct.error ... on bad files
        raise DataIntegrityError(
            f"Audio file {path} could not be read as a WAV file ({type(exc).__name__}: {exc}). "
            "Delete it and copy or download it again."
        ) from None
    if data.size == 0:
        raise DataIntegrityError(f"Audio file {path} holds no samples.")
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        if info.min == 0:  # unsigned 8-bit PCM is centred on 128
            data = (data.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
        else:
            data = data.astype(np.float32) / -float(info.min)
    else:
        data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if not np.isfinite(data).all():
        raise DataIntegrityError(f"Audio file {path} holds non-finite samples.")
    return data, int(rate)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """``wave`` at ``target_rate`` (polyphase filtering; the same array if the rates agree)."""
    if orig_rate == target_rate:
        return wave.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_rate), int(orig_rate)).limit_denominator(10_000)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def tile_to_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Repeat ``wave`` end to end and cut it to exactly ``length`` samples (OGM-GE's step 2)."""
    if len(wave) == 0:
        raise ValueError("cannot tile an empty wave")
    repeats = math.ceil(length / len(wave))
    return np.tile(wave, repeats)[:length]


def spectrogram_frames(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Number of centred STFT frames of a signal of ``num_samples``: ``1 + num_samples // hop``."""
    return 1 + num_samples // hop_length


def log_spectrogram(
    wave: np.ndarray,
    sample_rate: int,
    *,
    target_rate: int = SAMPLE_RATE,
    seconds: float = SECONDS,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
) -> np.ndarray:
    """``log(|STFT| + 1e-7)`` of ``wave`` resampled to ``target_rate`` and tiled to ``seconds``.

    Returns ``float32 [n_fft // 2 + 1, 1 + samples // hop_length]`` (``257 x 188`` with the
    defaults: OGM-GE's CREMA-D input).
    """
    wave = resample(np.asarray(wave, dtype=np.float32), sample_rate, target_rate)
    wave = np.clip(tile_to_length(wave, int(round(seconds * target_rate))), -1.0, 1.0)
    signal = torch.from_numpy(np.ascontiguousarray(wave))
    spec = torch.stft(signal, n_fft=n_fft, hop_length=hop_length, window=torch.hann_window(n_fft),
                      center=True, pad_mode="reflect", return_complex=True)
    return torch.log(spec.abs() + LOG_EPSILON).numpy().astype(np.float32)


def wav_log_spectrogram(path: str | os.PathLike, **options) -> np.ndarray:
    """:func:`log_spectrogram` of the WAV file at ``path`` (errors name the file)."""
    wave, rate = read_wav(path)
    return log_spectrogram(wave, rate, **options)
