"""Chapter 1's study of CG-MNIST's unknown knobs: which of them moves the levels, and whether the order holds.

The generator of the papers' CG-MNIST was never released, so several of its choices are unknown; each is a knob
of :class:`~mmlab.data.cgmnist.CGMNISTConfig`. :data:`KNOB_STUDY` trains the methods of :data:`STUDY_METHODS`
once under the first protocol (``mmlab-1``) and once per departure from it, one knob at a time, in the
``sensitivity`` profile (the quick profile's sizes; records committed). Every run also evaluates its test digits
in their own colours (``probe_agreements=[1.0]``), so the test agreement, which changes no training, is read
from every run (:mod:`mmlab.calibration`): one training gives the whole line.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from .calibration import accuracy_at_agreement
from .config import RunConfig
from .data.cgmnist import INDEPENDENT_AGREEMENT, get_protocol

#: the methods of the study: each modality alone, the joint loss, the uniform baseline and MMPareto
STUDY_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("unimodal", {"modality": "gray"}), ("unimodal", {"modality": "color"}),
    ("joint", {}), ("uniform", {}), ("mmpareto", {}),
)
#: knob -> the values studied besides the first protocol's (each changes the training data)
KNOB_STUDY: dict[str, tuple[Any, ...]] = {
    "jitter_variance": (0.1,),
    "palette_spread": (0.5,),
    "painting": ("mask",),
    "normalization": ("pmr",),
}
#: the probe every study run evaluates besides its test split: its test digits in their own colours
STUDY_PROBES = [1.0]
STUDY_PROFILE = "sensitivity"


def study_settings() -> list[tuple[str, Any, dict[str, Any]]]:
    """``(knob, value, dataset options)`` of every setting of the study; the first is the first protocol
    itself (knob ``"none"``)."""
    base = get_protocol("mmlab-1").values()
    settings = [("none", "mmlab-1", {})]
    for knob, values in KNOB_STUDY.items():
        settings += [(knob, value, {knob: value}) for value in values if value != base[knob]]
    return settings


def study_configs(profile: str = STUDY_PROFILE, seed: int = 0) -> list[RunConfig]:
    """Every run of the study: each setting of :func:`study_settings` times each method."""
    return [RunConfig.from_profile(dataset="cgmnist", method=method, method_options=options, seed=seed,
                                   profile=profile,
                                   dataset_options={"protocol": "mmlab-1", **extra, "probe_agreements": STUDY_PROBES})
            for _, _, extra in study_settings() for method, options in STUDY_METHODS]


def _setting_of(record: dict[str, Any]) -> tuple[str, Any]:
    options = {k: v for k, v in record["config"]["dataset_options"].items()
               if k not in ("probe_agreements", "protocol")}
    if not options:
        return "none", "mmlab-1"
    (knob, value), = options.items()
    return knob, value


def study_frame(records: Iterable[dict[str, Any]], agreement: float = INDEPENDENT_AGREEMENT) -> pd.DataFrame:
    """One row per (run, modality): ``knob, value, method, seed, modality, acc (%)`` at test agreement
    ``agreement`` (default 0.1: the first protocol's test colouring), read off each run's line."""
    rows = []
    for record in records:
        knob, value = _setting_of(record)
        final = record["final"]
        modalities = [None] + sorted({k.split("/")[2] for k in final if k.startswith("test/acc/")})
        for modality in modalities:
            rows.append({"knob": knob, "value": value, "method": record["label"], "seed": record["config"]["seed"],
                         "modality": modality or "fused",
                         "acc (%)": 100 * accuracy_at_agreement(record, agreement, modality)})
    return pd.DataFrame(rows)
