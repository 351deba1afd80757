"""A tiny CREMA-D made by the tests, in the release's exact layout and naming.

``AudioWAV/<clip>.wav`` (16 kHz mono int16, as CREMA-D's) and ``VideoFlash/<clip>.flv``
(Flash video, codec FLV1, through FFmpeg's real encoder; 64 x 48 at 10 fps instead of
480 x 360 at 30 fps, to stay fast), and OGM-GE-style split files (``clip,EMO``, no header,
CRLF).

Every frame shows a colour that says which clip and which second it belongs to; within a
second, only the first frame has the full colour (the others are at half brightness), so a
stored frame is bright only if it is exactly the first frame of its second. The right quarter
of every frame is black, so a crop instead of a resize would show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile

FPS = 10
WIDTH, HEIGHT = 64, 48
WAV_RATE = 16_000
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
                    (0, 255, 255)], dtype=np.float64)

#: clip -> seconds; one or two clips per emotion, real-looking names
TRAIN = {
    "1001_DFA_ANG_XX": 2.5,
    "1002_IEO_HAP_HI": 1.5,
    "1003_TIE_SAD_LO": 3.2,
    "1004_IOM_FEA_MD": 2.0,
    "1005_IWW_DIS_XX": 2.4,
    "1006_TAI_NEU_XX": 1.2,
    "1007_MTI_ANG_HI": 2.3,
}
TEST = {
    "1008_IWL_HAP_XX": 2.6,
    "1009_ITH_NEU_XX": 1.8,
}
CLIPS = {**TRAIN, **TEST}


def colour(clip: str, second: int) -> np.ndarray:
    """The full colour of ``second`` of ``clip`` (RGB, 0..255)."""
    return PALETTE[(list(CLIPS).index(clip) + second) % len(PALETTE)]


def write_wav(path: Path, clip: str, seconds: float) -> None:
    n = int(round(seconds * WAV_RATE))
    t = np.arange(n) / WAV_RATE
    freq = 300.0 + 100.0 * list(CLIPS).index(clip)
    noise = np.random.default_rng(len(clip) + n).normal(0, 0.02, n)
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + noise
    wavfile.write(path, WAV_RATE, (wave * 32767).astype(np.int16))


def write_flv(path: Path, clip: str, seconds: float) -> None:
    import av

    with av.open(str(path), "w", format="flv") as container:
        stream = container.add_stream("flv", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = 1  # every frame a key frame: exact colours at each cut
        stream.bit_rate = 2_000_000
        for i in range(int(round(seconds * FPS))):
            second, within = divmod(i, FPS)
            image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            image[:, : WIDTH * 3 // 4] = colour(clip, second) * (1.0 if within == 0 else 0.5)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_split(path: Path, clips) -> None:
    path.write_bytes("".join(f"{c},{c.split('_')[2]}\r\n" for c in clips).encode())


def make_cremad(root: Path, split_dir: Path | None = None) -> Path:
    """Write the tiny CREMA-D into ``root`` (split files into ``split_dir``, default ``root``)."""
    (root / "AudioWAV").mkdir(parents=True)
    (root / "VideoFlash").mkdir()
    for clip, seconds in CLIPS.items():
        write_wav(root / "AudioWAV" / f"{clip}.wav", clip, seconds)
        write_flv(root / "VideoFlash" / f"{clip}.flv", clip, seconds)
    split_dir = root if split_dir is None else split_dir
    split_dir.mkdir(parents=True, exist_ok=True)
    write_split(split_dir / "train.csv", TRAIN)
    write_split(split_dir / "test.csv", TEST)
    return root
