"""mmlab: the library behind *Balanced Multimodal Learning, executable*.

The package grows out of the book's chapters: each module says which chapter
explains it. Layers, from the bottom up::

    data      -> MNIST, Colored-and-gray MNIST, audio, the audio-visual digits, CREMA-D, the registry
    models    -> per-modality encoders (small CNNs, ResNet-18), fusion (concatenation, MMTM), the classifier
    methods   -> small objects that plug into the training loop's hooks
    training  -> the one training loop, checkpoints, the results store
    sweep / reproduction -> many runs at once; the reproduction's plans and tables (the reproduction chapter)
    metrics / analysis / plots / widgets -> what the chapters show

Importing :mod:`mmlab` is light: plotting and widget modules load on demand.
"""

__version__ = "0.1.0"

from .errors import NonFiniteLossError, OtherCodeWarning, ResultsFileError, UnknownNameError  # noqa: F401
from .profiles import PROFILES, Profile, get_profile, resolve_profile  # noqa: F401
from .config import RunConfig  # noqa: F401


def __getattr__(name):  # lazy access to the heavier entry points
    if name in {"train", "load_or_run"}:
        from . import training

        return getattr(training, name)
    if name == "ResultsStore":
        from .results import ResultsStore

        return ResultsStore
    raise AttributeError(f"module 'mmlab' has no attribute {name!r}")
