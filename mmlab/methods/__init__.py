"""Methods, by name. Each is a small object plugged into the training loop's hooks
(see :mod:`mmlab.methods.base`)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from ..errors import UnknownNameError
from .base import Method, TrainState  # noqa: F401
from .agm import AGM
from .baselines import JointLoss, UniformBaseline, Unimodal
from .gradient_integration import MMPareto, ConventionalPareto, PCGrad
from .gblending import GBlending
from .gradnorm import GradNorm
from .metabalance import MetaBalance
from .greedy import Greedy, MMTMJoint
from .ogm import OGMGE, OPM
from .pmr import PMR
from .pretrain_finetune import PretrainFinetune

METHODS: dict[str, Callable[..., Method]] = {
    "joint": JointLoss,
    "unimodal": Unimodal,
    "uniform": UniformBaseline,
    "pretrain_finetune": PretrainFinetune,
    "mgda": ConventionalPareto,
    "pcgrad": PCGrad,
    "gradnorm": GradNorm,
    "metabalance": MetaBalance,
    "mmpareto": MMPareto,
    "ogm_ge": OGMGE,
    "opm": OPM,
    "pmr": PMR,
    "agm": AGM,
    "gblending": GBlending,
    "mmtm": MMTMJoint,
    "greedy": Greedy,
}


def build_method(name: str, modalities: Sequence[str] | None = None, **options: Any) -> Method:
    """The method called ``name`` with its ``options``; unknown names and
    options get an error that lists the valid ones."""
    try:
        factory = METHODS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("method", name, METHODS) from None
    params = inspect.signature(factory).parameters
    unknown = set(options) - set(params)
    if unknown:
        valid = [p for p in params if p != "self"] or ["(none)"]
        raise UnknownNameError(f"option of method {name!r}", sorted(unknown)[0], valid)
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise TypeError(
            f"Method {name!r} needs option(s) {missing}"
            + (f" (one of the modalities {list(modalities)})" if modalities and "modality" in missing else "")
        )
    method = factory(**options)
    if modalities is not None:
        method.modalities(list(modalities))  # validates e.g. the unimodal modality
    return method
