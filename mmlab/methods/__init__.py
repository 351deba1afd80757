"""Methods, by name. Each is a small object plugged into the training loop's hooks
(see :mod:`mmlab.methods.base`)."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Sequence

from ..errors import UnknownNameError
from .base import Method, TrainState, reinitialize_toward  # noqa: F401
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
from .udi import UDI
from .mla import MLA
from .relearning import DiagnoseRelearn
from .reconboost import ReconBoost
from .uncertainty import UncertaintyWeighting
from .mmcosine import MMCosine
from .cggm import CGGM
from .unimodal_teachers import UniModalEnsemble, UniModalTeacher
from .valuation import SampleValuation
from .inforeg import InfoReg
from .cml import CML
from .amco import AMCo
from .mbsd import MBSD
from .lfm import LFM
from .miles import MILES
from .mslr import MSLR

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
    "udi": UDI,
    "mla": MLA,
    "relearning": DiagnoseRelearn,
    "reconboost": ReconBoost,
    "uncertainty": UncertaintyWeighting,
    "mmcosine": MMCosine,
    "cggm": CGGM,
    "ume": UniModalEnsemble,
    "umt": UniModalTeacher,
    "sample_valuation": SampleValuation,
    "inforeg": InfoReg,
    "cml": CML,
    "amco": AMCo,
    "mbsd": MBSD,
    "lfm": LFM,
    "miles": MILES,
    "mslr": MSLR,
}

#: How prose and captions name each method: the papers' words, not the registry's ids.
METHOD_TITLES: dict[str, str] = {
    "joint": "the joint loss",
    "unimodal": "one modality alone",
    "uniform": "the uniform baseline",
    "pretrain_finetune": "pre-training then fine-tuning",
    "mgda": "conventional Pareto (MGDA)",
    "pcgrad": "PCGrad",
    "gradnorm": "GradNorm",
    "metabalance": "MetaBalance",
    "mmpareto": "MMPareto",
    "ogm_ge": "OGM-GE",
    "opm": "OPM",
    "pmr": "PMR",
    "agm": "AGM",
    "gblending": "G-Blending",
    "mmtm": "MMTM with the joint loss",
    "greedy": "Greedy",
    "udi": "UDI",
    "mla": "MLA",
    "relearning": "Diagnosing & Re-learning",
    "reconboost": "ReconBoost",
    "uncertainty": "uncertainty weighting",
    "mmcosine": "MMCosine",
    "cggm": "CGGM",
    "ume": "the uni-modal ensemble (UME)",
    "umt": "the uni-modal teacher (UMT)",
    "sample_valuation": "sample-level modality valuation",
    "inforeg": "InfoReg",
    "cml": "CML",
    "amco": "AMCo",
    "mbsd": "MBSD",
    "lfm": "LFM",
    "miles": "MILES",
    "mslr": "MSLR",
}


def method_title(label: str) -> str:
    """The name a sentence uses for a method's id or a run's label: ``ogm_ge`` -> ``OGM-GE``,
    ``unimodal-audio`` -> ``audio alone``; a label it does not know is returned as it is."""
    if label.startswith("unimodal-"):
        return f"{label.removeprefix('unimodal-')} alone"
    return METHOD_TITLES.get(label, label)


def row_title(label: str) -> str:
    """How a table's row or a figure's panel names a method: its title in the prose (:func:`method_title`)
    without the article, capitalised: ``uniform`` -> ``Uniform baseline``, ``unimodal-gray`` -> ``Gray alone``;
    a label it does not know is returned as it is."""
    title = method_title(label)
    if title == label:
        return label
    title = title.removeprefix("the ")
    return title[:1].upper() + title[1:]


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
        raise UnknownNameError(f"{name} option", sorted(unknown)[0], valid)
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in options]
    if missing:
        hint = ""
        if modalities and "modality" in missing:
            example = list(modalities)[0]
            hint = (f" (one of the modalities {list(modalities)}: modality={example!r}; on the command line "
                    f"`train --modality {example}`, or `sweep --method {name}:modality={example}`)")
        raise TypeError(f"Method {name!r} needs the {'option' if len(missing) == 1 else 'options'} {missing}{hint}")
    for option, value in options.items():
        _check_option_type(name, option, value, params[option].default)
    method = factory(**options)
    if modalities is not None:
        method.modalities(list(modalities))  # validates e.g. the unimodal modality
    return method


def _check_option_type(method: str, option: str, value: Any, default: Any) -> None:
    """An option whose default is a number, a flag or a word must be given as one (``alpha=abc`` is
    named here, not met later by an operator that cannot compare a string)."""
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        kind, ok = "true or false", isinstance(value, bool)
    elif isinstance(default, numbers.Real):
        kind, ok = "a number", isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif isinstance(default, str):
        kind, ok = "a word", isinstance(value, str)
    else:
        return
    if not ok:
        raise TypeError(f"option {option!r} of method {method!r} must be {kind} (its default is {default!r}), "
                        f"got {value!r} ({type(value).__name__})")
