"""Models: per-modality encoders, concatenation fusion, the multimodal classifier."""

from .classifier import ModelOutput, MultimodalClassifier, ParameterGroups  # noqa: F401
from .encoders import ConvEncoder, init_weights  # noqa: F401
from .fusion import ConcatFusion, SharedHeadFusion  # noqa: F401
from .mmtm import MMTM, MMTMClassifier  # noqa: F401
from .zoo import build_model  # noqa: F401
