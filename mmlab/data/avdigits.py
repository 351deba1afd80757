"""Audio-visual digits (``avdigits``): an MNIST image and a spoken digit of the same class.

A two-modality data set made of real data that runs offline on a CPU (chapter 5,
*Audio-visual learning*). Each sample pairs

* ``"image"``: an MNIST digit (LeCun, Cortes and Burges), ``uint8 [1, 28, 28]``, with
* ``"audio"``: the log-spectrogram of a recording of the same digit spoken in English, from the
  Free Spoken Digit Dataset (FSDD v1.0.10, Jackson et al., CC BY-SA 4.0: 6 speakers x 10 digits
  x 50 takes, 8 kHz mono), ``float16 [1, 129, 63]``.

The construction follows AV-MNIST (Vielzeuf et al., *CentralNet: a Multilayer Approach for
Multimodal Fusion*, ECCV Workshops 2018), with FSDD in place of TIDIGITS.

**Splits.** FSDD's official split puts takes 0-4 in the test set and takes 5-49 in the training
set. Validation holds out takes 5-9 (and MNIST training images, ``val_size`` of them at
random), so validation, like test, is heard on recordings the model never trained on, by the
same six speakers::

    test   MNIST test images         x  FSDD takes 0-4    (30 recordings per digit)
    val    held-out MNIST train      x  FSDD takes 5-9    (30 recordings per digit)
    train  remaining MNIST train     x  FSDD takes 10-49  (240 recordings per digit)

Each sample's recording is drawn uniformly (with replacement) among its split's recordings of
the image's digit; every random choice comes from ``data_seed``.

**Spectrograms.** :func:`mmlab.data.audio.log_spectrogram` with parameters for 8 kHz clips of
about a second: the wave tiled to 1 s at 8 kHz, STFT with ``n_fft = 256`` (32 ms) and hop 128,
giving ``129 x 63``. The 3,000 spectrograms are computed once and cached (see
:func:`spectrogram_bank`); a cache file that cannot be read, or whose content does not match
the recordings, is rebuilt with a warning naming it.

**The difficulty knobs** (the options of :data:`mmlab.data.registry.DATASETS` ``["avdigits"]``)
set how informative each modality is, so the imbalance between them is real and tunable:

* ``image_pca_energy_removed`` = f: PCA of the training split's images (pixels in [0, 1],
  centred on their mean); the fewest leading principal components whose variance reaches the
  fraction f of the total are found, and every image (train, val and test) loses its projection
  on them: ``x - U U^T (x - mean)``, then is clipped to [0, 1] and rounded back to ``uint8``.
  The projection removes the share ``PCAEnergyRemoval.removed`` (>= f) of the training variance;
  the clipping removes somewhat more. AV-MNIST removes 75 % of the energy this way.
* ``image_noise`` = s: Gaussian noise of standard deviation ``s * 255`` added to every pixel
  (after the PCA removal), clipped to 0-255 and rounded; drawn afresh for each sample.
* ``audio_noise`` = a: Gaussian noise added to each recording's wave before its spectrogram, of
  standard deviation ``a`` times the recording's RMS amplitude (a signal-to-noise ratio of
  ``-20 log10 a`` dB, the same for loud and quiet speakers); drawn once per recording.

At 0 a knob changes nothing, and no knob changes which images or recordings are drawn.

**Memory.** The audio of a split is gathered from the 3,000 spectrograms into one ``float16``
tensor (16 KB a sample: 325 MB for 20,000 samples, 890 MB for all 55,000 training images, on
the training device); the batches turn it into float32 one mini-batch at a time.

Example::

    from mmlab.data.registry import get_dataset
    splits = get_dataset("avdigits").load_splits(train_size=2000, val_size=500, test_size=1000)
    splits["train"].inputs["audio"].shape   # torch.Size([2000, 1, 129, 63])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write_bytes
from .audio import log_spectrogram, read_wav
from .cgmnist import _check_size
from .download import FETCH_ERRORS, fetch, fetch_failure
from .errors import DataIntegrityError, DataNotFoundError, check_named_root
from .mnist import DATA_ENV, MNIST, _default_cache_dir
from .split import Split

__all__ = [
    "AVDigitsConfig", "PCAEnergyRemoval", "Recording", "add_pixel_noise", "add_wave_noise",
    "download_fsdd", "find_fsdd_dir", "list_recordings", "make_avdigits", "spectrogram_bank",
]

#: Spectrogram parameters: 1 s at 8 kHz, 32 ms windows, hop 16 ms -> ``129 x 63``.
TARGET_RATE = 8_000
SECONDS = 1.0
N_FFT = 256
HOP_LENGTH = 128
SPECTROGRAM_SHAPE = (N_FFT // 2 + 1, 1 + int(SECONDS * TARGET_RATE) // HOP_LENGTH)

#: FSDD takes per split: 0-4 test (official), 5-9 validation, the rest training.
TEST_TAKES = range(0, 5)
VAL_TAKES = range(5, 10)
SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
FSDD_VERSION = "v1.0.10"
#: The tagged release's source archive: its ``recordings/`` folder holds the WAV files.
FSDD_ARCHIVE_URL = f"{FSDD_URL}/archive/refs/tags/{FSDD_VERSION}.tar.gz"
#: Recordings in that release: 6 speakers x 10 digits x 50 takes.
FSDD_RECORDINGS = 3_000

_NAME = re.compile(r"^(?P<digit>\d+)_(?P<speaker>[A-Za-z][A-Za-z0-9-]*)_(?P<take>\d+)\.wav$")
_CACHE_FORMAT = 1  # bump when the way spectrograms are computed changes
_CHUNK = 8192  # images transformed at once (float32 scratch of ~25 MB)


# --------------------------------------------------------------------------- #
# The recordings
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Recording:
    """One FSDD file, ``{digit}_{speaker}_{take}.wav``."""

    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def split(self) -> str:
        """``"test"`` (takes 0-4), ``"val"`` (takes 5-9) or ``"train"``."""
        if self.take in TEST_TAKES:
            return "test"
        return "val" if self.take in VAL_TAKES else "train"


def find_fsdd_dir(root: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The first folder holding FSDD's ``.wav`` files.

    Looks in ``root``, then ``$MMLAB_DATA``, then the cache folder (``cache_dir``, else
    ``$MMLAB_CACHE``, else ``~/.cache/mmlab``), each in ``fsdd/recordings/``, ``recordings/``
    and the folder itself. If none holds them and ``download`` is true, downloads them into the
    cache (:func:`download_fsdd`). Otherwise, or if that fails, raises :class:`DataNotFoundError`
    listing every folder looked in (and the download tried) and how to get the data.
    """
    check_named_root(root)
    bases = [(Path(root).expanduser(), "root argument")] if root is not None else []
    if os.environ.get(DATA_ENV, "").strip():
        bases.append((Path(os.environ[DATA_ENV].strip()).expanduser(), f"${DATA_ENV}"))
    bases.append((_default_cache_dir(cache_dir), "cache"))
    report = []
    for base, origin in bases:
        for folder in (base / "fsdd" / "recordings", base / "recordings", base):
            if not folder.is_dir():
                report.append(f"  - {folder} ({origin}): no such folder")
            elif not any(folder.glob("*.wav")):
                report.append(f"  - {folder} ({origin}): holds no .wav files")
            else:
                return folder
    if download:
        try:
            return download_fsdd(cache_dir)
        except (DataNotFoundError, DataIntegrityError) as err:
            report.append(f"Download tried: {err}")
    raise DataNotFoundError("\n".join([
        "The Free Spoken Digit Dataset (FSDD) could not be found. Folders looked in:", *report,
        f"How to fix this: clone it (about 20 MB), `git clone --branch {FSDD_VERSION} {FSDD_URL}`, "
        f"and set {DATA_ENV} to a folder that holds it as fsdd/recordings/ (or recordings/), "
        "e.g. `mkdir -p data/fsdd && mv free-spoken-digit-dataset/recordings data/fsdd/ && "
        f"export {DATA_ENV}=$PWD/data`; or pass that folder as root=...",
    ]))


def download_fsdd(cache_dir: str | os.PathLike | None = None, *, url: str | None = None,
                  expected_recordings: int | None = None, timeout: float = 120.0,
                  verbose: bool = True) -> Path:
    """Download FSDD's tagged release (about 20 MB of WAV files) into ``<cache>/fsdd/recordings``
    and return that folder (the cache as in :func:`find_fsdd_dir`).

    Only the archive's ``recordings/*.wav`` files are taken, each name checked against FSDD's
    ``{digit}_{speaker}_{take}.wav``; their number must be ``expected_recordings``. They are
    extracted into a temporary folder next to the target and renamed into place, so the folder
    appears whole or not at all. A failed download raises :class:`DataNotFoundError` naming the
    URL; an archive that is not FSDD's raises :class:`DataIntegrityError`. ``url`` and
    ``expected_recordings`` default to :data:`FSDD_ARCHIVE_URL` and :data:`FSDD_RECORDINGS`.
    """
    import sys
    import tarfile
    import tempfile

    url = FSDD_ARCHIVE_URL if url is None else url
    expected_recordings = FSDD_RECORDINGS if expected_recordings is None else expected_recordings
    target = _default_cache_dir(cache_dir) / "fsdd" / "recordings"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
        if verbose:
            print(f"Downloading the Free Spoken Digit Dataset from {url} ...", file=sys.stderr, flush=True)
        try:
            archive = fetch(url, timeout)
        except FETCH_ERRORS as err:
            raise DataNotFoundError(f"{url} could not be fetched ({fetch_failure(err)})") from err
        extracted = Path(scratch) / "recordings"
        extracted.mkdir()
        count = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                for member in tar:
                    parts = Path(member.name).parts
                    if len(parts) < 2 or parts[-2] != "recordings" or not parts[-1].endswith(".wav"):
                        continue  # the release's code, docs and pictures
                    if not member.isfile() or not _NAME.match(parts[-1]):
                        raise DataIntegrityError(f"{url}: the archive member {member.name!r} is not an FSDD "
                                                 "recording; the archive is not FSDD's release")
                    source = tar.extractfile(member)
                    (extracted / parts[-1]).write_bytes(source.read())
                    count += 1
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataIntegrityError(f"{url}: the download is not a readable .tar.gz archive ({err})") from err
        if count != expected_recordings:
            raise DataIntegrityError(f"{url}: the archive holds {count} recordings, FSDD {FSDD_VERSION} has "
                                     f"{expected_recordings}; nothing was kept")
        if target.exists():
            if any(target.iterdir()):  # a partial folder from elsewhere: kept aside, never mixed in
                aside = target.with_name(f"recordings.replaced-{os.getpid()}")
                warnings.warn(f"{target} held other files; they are moved to {aside}", stacklevel=2)
                target.rename(aside)
            else:
                target.rmdir()
        extracted.rename(target)
    return target


def list_recordings(folder: str | os.PathLike) -> list[Recording]:
    """Every recording in ``folder``, sorted by file name, after checking the names.

    Hidden files are ignored. A name other than ``{digit}_{speaker}_{take}.wav`` with a digit
    0-9, or a split (train, val, test) without a recording of some digit, raises
    :class:`DataIntegrityError` naming the file or the digit and split.
    """
    folder = Path(folder)
    recordings = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        match = _NAME.match(path.name)
        if match is None:
            raise DataIntegrityError(
                f"{path} is not named like an FSDD recording, {{digit}}_{{speaker}}_{{take}}.wav "
                "(e.g. 7_jackson_32.wav). Remove it from the recordings folder.")
        digit = int(match["digit"])
        if digit >= NUM_CLASSES:
            raise DataIntegrityError(f"{path} names digit {digit}, but FSDD's digits are 0-9.")
        recordings.append(Recording(path, digit, match["speaker"], int(match["take"])))
    for split in SPLITS:
        for digit in range(NUM_CLASSES):
            if not any(r.digit == digit and r.split == split for r in recordings):
                takes = {"test": "takes 0-4", "val": "takes 5-9", "train": "takes 10 and above"}[split]
                raise DataIntegrityError(
                    f"{folder} holds no recording of digit {digit} for the {split} split ({takes}); "
                    f"FSDD {FSDD_VERSION} has 50 takes of each digit by each of 6 speakers. "
                    f"Copy the complete recordings folder from {FSDD_URL}.")
    return recordings


# --------------------------------------------------------------------------- #
# Spectrograms
# --------------------------------------------------------------------------- #
def add_wave_noise(wave: np.ndarray, audio_noise: float, rng: np.random.Generator) -> np.ndarray:
    """``wave`` plus Gaussian noise of standard deviation ``audio_noise`` x its RMS amplitude."""
    if audio_noise == 0:
        return wave
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return (wave + rng.normal(0.0, audio_noise * rms, wave.shape)).astype(np.float32)


@contextlib.contextmanager
def _one_thread():
    """Run torch on one thread: these small transforms gain little from more, and torch's thread
    pool slows down many times over when other processes compete for the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _spectrogram(path: Path, audio_noise: float, rng: np.random.Generator) -> np.ndarray:
    wave, rate = read_wav(path)
    return log_spectrogram(add_wave_noise(wave, audio_noise, rng), rate, target_rate=TARGET_RATE,
                           seconds=SECONDS, n_fft=N_FFT, hop_length=HOP_LENGTH)


def _cache_path(recordings: list[Recording], audio_noise: float, seed: int, cache: Path) -> Path:
    """The cache file, named by the parameters and a hash of them and of the files' names and sizes."""
    key = {"format": _CACHE_FORMAT, "rate": TARGET_RATE, "seconds": SECONDS, "n_fft": N_FFT,
           "hop": HOP_LENGTH, "audio_noise": audio_noise, "seed": seed if audio_noise else None,
           "files": [(r.path.name, r.path.stat().st_size) for r in recordings]}
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    noise = f"_noise{audio_noise:g}_seed{seed}" if audio_noise else ""
    name = f"fsdd_sr{TARGET_RATE}_{SECONDS:g}s_nfft{N_FFT}_hop{HOP_LENGTH}{noise}_{digest}.npz"
    return cache / "avdigits" / name


def _read_cache(path: Path, names: list[str]) -> np.ndarray:
    """The cached spectrograms; raises ``ValueError`` (with the reason) if they cannot be used."""
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            specs, cached_names = archive["spectrograms"], archive["names"].tolist()
    except Exception as exc:  # zipfile.BadZipFile, KeyError, OSError, EOFError ...
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if cached_names != names:
        raise ValueError("it lists other recordings")
    if specs.dtype != np.float16 or specs.shape != (len(names), *SPECTROGRAM_SHAPE):
        raise ValueError(f"it holds {specs.dtype} {specs.shape} instead of float16 "
                         f"{(len(names), *SPECTROGRAM_SHAPE)}")
    if not np.isfinite(specs).all():
        raise ValueError("it holds non-finite values")
    return specs


def spectrogram_bank(recordings: list[Recording], *, audio_noise: float = 0.0, seed: int = 0,
                     cache_dir: str | os.PathLike | None = None, progress: bool = True) -> torch.Tensor:
    """The log-spectrograms of ``recordings``, ``float16 [R, 129, 63]``, in their order.

    Read from ``<cache>/avdigits/`` (cache as in :func:`find_fsdd_dir`) when there, else
    computed (with a progress bar) and written there atomically. The file name holds the
    spectrogram parameters, ``audio_noise`` and ``seed`` (which seeds the noise, drawn in the
    order of ``recordings``) and a hash of these and of the files' names and sizes. A cache
    file that cannot be used is rebuilt, with a warning naming it.
    """
    from ..progress import progress_bar

    path = _cache_path(recordings, audio_noise, seed, _default_cache_dir(cache_dir))
    names = [r.path.name for r in recordings]
    if path.is_file():
        try:
            return torch.from_numpy(_read_cache(path, names))
        except ValueError as problem:
            warnings.warn(f"The spectrogram cache {path} cannot be used ({problem}); rebuilding it.",
                          stacklevel=2)
    rng = np.random.default_rng(seed)
    with _one_thread():
        specs = np.stack([_spectrogram(r.path, audio_noise, rng).astype(np.float16) for r in
                          progress_bar(recordings, progress=progress, desc="FSDD spectrograms", leave=False)])
    buffer = io.BytesIO()
    np.savez(buffer, spectrograms=specs, names=np.array(names))
    atomic_write_bytes(path, buffer.getvalue())
    return torch.from_numpy(specs)


# --------------------------------------------------------------------------- #
# Image knobs
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PCAEnergyRemoval:
    """Remove the leading principal components of training images (AV-MNIST's degradation).

    ``mean``: ``float64 [D]`` mean training image (pixels in [0, 1]); ``components``: ``float64
    [D, k]`` orthonormal leading principal directions; ``removed``: the fraction of the training
    variance they carry (at least the fraction asked for, as ``k`` is a whole number).
    """

    mean: torch.Tensor
    components: torch.Tensor
    removed: float

    @classmethod
    def fit(cls, images: torch.Tensor, fraction: float) -> PCAEnergyRemoval:
        """Fit on ``uint8 [N, ...]`` images: the fewest components carrying ``fraction`` of the
        variance."""
        flat = images.reshape(len(images), -1)
        with _one_thread():
            mean = flat.double().mean(0) / 255.0
            scatter = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
            for chunk in flat.split(_CHUNK):
                centred = chunk.double() / 255.0 - mean
                scatter += centred.T @ centred
            variances, vectors = torch.linalg.eigh(scatter)  # ascending
        variances, vectors = variances.flip(0).clamp(min=0), vectors.flip(1)
        share = variances.cumsum(0) / variances.sum().clamp(min=1e-300)
        k = 0 if fraction == 0 else int(torch.searchsorted(share, fraction - 1e-12)) + 1
        k = min(k, len(share))
        return cls(mean, vectors[:, :k].contiguous(), float(share[k - 1]) if k else 0.0)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (``uint8``) without their projection on the components, clipped, rounded."""
        if self.components.shape[1] == 0:
            return images.clone()
        mean, basis = self.mean.float(), self.components.float()
        with _one_thread():
            out = [(x - ((x - mean) @ basis) @ basis.T).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
                   for x in images.reshape(len(images), -1).float().div_(255).split(_CHUNK)]
        return torch.cat(out).reshape(images.shape)


def add_pixel_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``uint8`` images plus Gaussian noise of standard deviation ``std * 255``, clipped, rounded."""
    if std == 0:
        return images.clone()
    noise = torch.randn(images.shape, generator=generator) * (std * 255.0)
    return (images.float() + noise).round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- #
# Building the splits
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class AVDigitsConfig:
    """Sizes, knobs (see the module docstring) and seed of an ``avdigits`` build."""

    train_size: int | None = None  # None: every MNIST training image not held out
    val_size: int = 5000
    test_size: int | None = None  # None: the whole MNIST test set
    image_noise: float = 0.0
    image_pca_energy_removed: float = 0.0
    audio_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_size("train_size", self.train_size, allow_none=True)
        _check_size("val_size", self.val_size, allow_none=False)
        _check_size("test_size", self.test_size, allow_none=True)
        for name, upper in (("image_noise", math.inf), ("image_pca_energy_removed", 1.0),
                            ("audio_noise", math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not 0 <= value <= upper or not math.isfinite(value):
                bound = "in [0, 1]" if upper == 1 else "finite and >= 0"
                raise ValueError(f"{name} must be a number {bound}, but it is {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, but it is {self.seed!r}.")


def _choose(pool: int, size: int | None, what: str, generator: torch.Generator) -> torch.Tensor:
    """``size`` distinct indices of ``range(pool)`` at random, sorted (all of them if ``None``)."""
    if size is None:
        return torch.arange(pool)
    if size > pool:
        raise ValueError(f"{what}: {size} asked for, but there are only {pool}.")
    return torch.randperm(pool, generator=generator)[:size].sort().values


def _pair(labels: torch.Tensor, digits: torch.Tensor, pool: torch.Tensor, split: str,
          generator: torch.Generator) -> torch.Tensor:
    """For each label, a recording (index) of that digit drawn uniformly from ``pool``."""
    chosen = torch.empty_like(labels)
    for digit in range(NUM_CLASSES):
        where = labels == digit
        candidates = pool[digits[pool] == digit]
        if where.any() and len(candidates) == 0:
            raise ValueError(f"The {split} split has images of digit {digit} but the recordings "
                             "given hold none of it for that split.")
        draws = torch.randint(len(candidates), (int(where.sum()),), generator=generator)
        chosen[where] = candidates[draws]
    return chosen


def make_avdigits(mnist: MNIST, recordings: list[Recording],
                  config: AVDigitsConfig = AVDigitsConfig(), *,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Split]:
    """The ``train``, ``val`` and ``test`` :class:`Split` s (see the module docstring).

    ``inputs``: ``"image"`` ``uint8 [N, 1, 28, 28]``, ``"audio"`` ``float16 [N, 1, 129, 63]``;
    ``extras``: ``"recording"`` (``int64 [N]``, index into ``"recording_names"``, the file
    names of ``recordings``) and ``"mnist_index"`` (``int64 [N]``, position in the MNIST split).
    """
    generator = torch.Generator().manual_seed(int(config.seed))
    n_train = len(mnist.train_images)
    if config.val_size > n_train:
        raise ValueError(
            f"val_size={config.val_size} is larger than the MNIST training set ({n_train}).")
    perm = torch.randperm(n_train, generator=generator)
    val_idx = perm[:config.val_size].sort().values
    rest = perm[config.val_size:]
    what = f"train_size (MNIST training images left after holding out val_size={config.val_size})"
    train_idx = rest[_choose(len(rest), config.train_size, what, generator)].sort().values
    test_idx = _choose(len(mnist.test_images), config.test_size, "test_size (MNIST test images)",
                       generator)
    sources = {"train": (mnist.train_images, mnist.train_labels, train_idx),
               "val": (mnist.train_images, mnist.train_labels, val_idx),
               "test": (mnist.test_images, mnist.test_labels, test_idx)}

    digits = torch.tensor([r.digit for r in recordings], dtype=torch.int64)
    part = np.array([r.split for r in recordings])
    paired = {name: _pair(labels[idx].to(torch.int64), digits,
                          torch.from_numpy(np.flatnonzero(part == name)), name, generator)
              for name, (_, labels, idx) in sources.items()}

    pca = None
    if config.image_pca_energy_removed > 0:
        if len(train_idx) < 2:
            raise ValueError("image_pca_energy_removed > 0 fits a PCA on the training images, "
                             f"so it needs train_size >= 2 (it is {len(train_idx)}).")
        pca = PCAEnergyRemoval.fit(mnist.train_images[train_idx], config.image_pca_energy_removed)
    bank = spectrogram_bank(recordings, audio_noise=config.audio_noise, seed=config.seed,
                            cache_dir=cache_dir, progress=progress)
    names = tuple(r.path.name for r in recordings)
    splits = {}
    for name, (images, labels, idx) in sources.items():
        image = images[idx]
        if pca is not None:
            image = pca.apply(image)
        image = add_pixel_noise(image, config.image_noise, generator)
        splits[name] = Split(
            name=name,
            inputs={"image": image.unsqueeze(1), "audio": bank[paired[name]].unsqueeze(1)},
            labels=labels[idx].to(torch.int64),
            extras={"recording": paired[name], "recording_names": names, "mnist_index": idx},
        )
    return splits
