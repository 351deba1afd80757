"""The datasets the book trains on, by name.

A :class:`DatasetSpec` says which modalities a dataset has (and their channels),
how many classes, which options it takes, and how to build its train /
validation / test splits. Everything above the data layer reaches a dataset
through :func:`get_dataset`, so adding one (chapter 5's audio-visual digits,
CREMA-D) is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import UnknownNameError
from .cgmnist import CURRENT_PROTOCOL, LEGACY_PROTOCOL


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    modalities: dict[str, int]  # modality -> input channels
    num_classes: int
    default_options: dict[str, Any] = field(default_factory=dict)
    builder: Callable[..., dict] | None = None
    # training-time augmentation of a batch on the device, from the dataset's options:
    # ``train_transform(options) -> (inputs, generator) -> inputs`` (CREMA-D's crops; chapter 5)
    train_transform: Callable[[dict[str, Any]], Callable] | None = None
    # convolutions and image inputs in channels-last memory format (MultimodalClassifier.
    # use_channels_last): the fast kernels of oneDNN on a CPU and of cuDNN on a GPU
    channels_last: bool = False
    # checks the values of the options (``check_options(options)`` raises ValueError naming a bad one),
    # so that a bad value fails when the run is configured, not when its data is built
    check_options: Callable[[dict[str, Any]], None] | None = None
    # what the prose and the captions call it ("Colored-and-gray MNIST"); the id when left empty
    title: str = ""
    # the name of the protocol that (validated) options make the data under, which every record
    # keeps (``describe_protocol(options) -> str``; CG-MNIST's ``"mmlab-1"``); None: the dataset has none
    describe_protocol: Callable[[dict[str, Any]], str] | None = None
    # option values that a run's identity leaves out (RunConfig.to_dict): what the records made before
    # the option existed were made with, so that naming it finds them (CG-MNIST: protocol "mmlab-1")
    implicit_options: dict[str, Any] = field(default_factory=dict)
    # option values a run made through a profile gets unless it names them (RunConfig.from_profile: the
    # command line, the chapters, the sweeps): CG-MNIST's current protocol, "mmlab-2" (a RunConfig built
    # field by field gets default_options, whose protocol is the first, so older identities are unchanged)
    run_defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.name)

    def batch_transform(self, options: Mapping[str, Any] | None = None):
        """The training augmentation for these options, or ``None``."""
        if self.train_transform is None:
            return None
        return self.train_transform(self.validate_options(options or {}))

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(self.default_options)
        if unknown:
            raise UnknownNameError(
                f"{self.name} option", sorted(unknown)[0], self.default_options
            )
        merged = {**self.default_options, **options}
        if self.check_options is not None:
            self.check_options(merged)
        return merged

    def protocol(self, options: Mapping[str, Any] | None = None) -> str | None:
        """The protocol these options make the data under (``None`` where the dataset names none)."""
        if self.describe_protocol is None:
            return None
        return self.describe_protocol(self.validate_options(options or {}))

    def load_splits(
        self,
        *,
        train_size: int | None,
        val_size: int,
        test_size: int | None,
        data_seed: int = 0,
        options: Mapping[str, Any] | None = None,
        root: str | None = None,
    ) -> dict:
        """The ``train``, ``val`` and ``test`` splits (:class:`MultimodalSplit`).

        ``root``: a data folder to look in first; one that does not exist raises
        :class:`~mmlab.data.errors.DataNotFoundError` (naming it, and how data is found)."""
        from .errors import check_named_root

        opts = self.validate_options(options or {})
        check_named_root(root)
        return self.builder(
            train_size=train_size, val_size=val_size, test_size=test_size,
            data_seed=data_seed, root=root, **opts,
        )


def _cgmnist_config(options, **sizes):
    from .cgmnist import CGMNISTConfig, protocol_settings

    probes = options.get("probe_agreements") or ()
    return CGMNISTConfig(**protocol_settings(options), probe_agreements=probes, **sizes)


def _build_cgmnist(*, train_size, val_size, test_size, data_seed, root, **options):
    from .cgmnist import make_cgmnist
    from .mnist import load_mnist

    config = _cgmnist_config(options, train_size=train_size, val_size=val_size, test_size=test_size,
                             seed=data_seed)
    return make_cgmnist(load_mnist(root), config)


def _check_cgmnist(options):
    _cgmnist_config(options)  # an unknown protocol, or CGMNISTConfig's __post_init__, names a bad value


def _describe_cgmnist(options):
    from .cgmnist import describe_protocol

    return describe_protocol(options)


def _check_avdigits(options):
    from .avdigits import AVDigitsConfig

    AVDigitsConfig(**options)


def _check_cremad(options):
    frames = options["frames"]  # how many of the stored frames exist is known once the cache is read
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a whole number >= 1, got {frames!r}")


def _build_cremad(*, train_size, val_size, test_size, data_seed, root, frames):
    from .cremad import load_cremad_splits

    return load_cremad_splits(
        train_size=train_size, val_size=val_size, test_size=test_size,
        data_seed=data_seed, root=root, frames=frames,
    )


def _frames_augmentation(options):
    """OGM-GE's training augmentation of the frames, on the device: a random resized crop back to
    the stored frame size, and a horizontal flip (:mod:`mmlab.data.augment`)."""
    from .augment import random_resized_crop

    def transform(inputs, generator):
        frames = inputs["visual"]
        return {**inputs, "visual": random_resized_crop(frames, frames.shape[-1], generator)}

    return transform


def _build_avdigits(*, train_size, val_size, test_size, data_seed, root, image_noise,
                    image_pca_energy_removed, audio_noise):
    from .avdigits import AVDigitsConfig, find_fsdd_dir, list_recordings, make_avdigits
    from .mnist import load_mnist

    config = AVDigitsConfig(
        train_size=train_size, val_size=val_size, test_size=test_size, image_noise=image_noise,
        image_pca_energy_removed=image_pca_energy_removed, audio_noise=audio_noise, seed=data_seed,
    )
    return make_avdigits(load_mnist(root), list_recordings(find_fsdd_dir(root, download=True)), config)


DATASETS: dict[str, DatasetSpec] = {
    "cgmnist": DatasetSpec(
        name="cgmnist",
        title="Colored-and-gray MNIST",
        description="Colored-and-gray MNIST: the same digit in gray and in a class-tied colour "
        "(colour shortcut in training only)",
        modalities={"gray": 1, "color": 3},
        num_classes=10,
        # a protocol sets every knob (mmlab.data.cgmnist.PROTOCOLS); a knob given here replaces its
        # value (None: the protocol's); probe_agreements adds test splits, one per agreement
        default_options={"protocol": LEGACY_PROTOCOL, "jitter_variance": None, "val_coloring": None,
                         "test_agreement": None, "palette_spread": None, "painting": None,
                         "normalization": None, "train_pool": None, "probe_agreements": []},
        builder=_build_cgmnist,
        check_options=_check_cgmnist,
        describe_protocol=_describe_cgmnist,
        implicit_options={"protocol": LEGACY_PROTOCOL, "probe_agreements": []},
        run_defaults={"protocol": CURRENT_PROTOCOL},
        channels_last=True,
    ),
    "cremad": DatasetSpec(
        name="cremad",
        title="CREMA-D",
        description="CREMA-D: six acted emotions, speech log-spectrograms and face frames at "
        "1 fps, OGM-GE's split (preprocess it once: book/cremad.md)",
        modalities={"audio": 1, "visual": 3},
        num_classes=6,
        default_options={"frames": 1},  # frames per clip handed out (OGM-GE: 1)
        builder=_build_cremad,
        check_options=_check_cremad,
        train_transform=_frames_augmentation,
        channels_last=True,
    ),
    "avdigits": DatasetSpec(
        name="avdigits",
        title="Audio-visual digits",
        description="Audio-visual digits: an MNIST image and a spoken digit (FSDD log-spectrogram) "
        "of the same class; knobs degrade either modality (chapter 5)",
        modalities={"image": 1, "audio": 1},
        num_classes=10,
        default_options={"image_noise": 0.0, "image_pca_energy_removed": 0.75, "audio_noise": 0.0},
        builder=_build_avdigits,
        check_options=_check_avdigits,
        channels_last=True,
    ),
}


def _build_cremad_shaped(**kwargs):
    from .synthetic import make_cremad_shaped

    return make_cremad_shaped(**kwargs)


DATASETS["cremad_shaped"] = DatasetSpec(
    name="cremad_shaped",
    title="CREMA-D-shaped noise",
    description="random content in CREMA-D's shapes (benchmarks and tests; nothing to learn)",
    modalities={"audio": 1, "visual": 3},
    num_classes=6,
    default_options={"frames": 3, "frame_size": 224, "spectrogram_bins": 257, "spectrogram_frames": 188},
    builder=_build_cremad_shaped,
    train_transform=_frames_augmentation,
    channels_last=True,
)


def get_dataset(name: str) -> DatasetSpec:
    """The dataset called ``name``; an unknown name lists the valid ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("dataset", name, DATASETS) from None
