"""The configuration of one training run, and its identity.

A :class:`RunConfig` holds every setting that changes a run's result. Its
:attr:`~RunConfig.key` (a hash of those settings) names the run in the results
store and in the checkpoint folder, so ``load_or_run`` can find a finished run
again. Settings that do not change the result (device, progress bars) are not
part of it.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from .profiles import get_profile

#: forward-pass arithmetic a run may ask for (``RunConfig.precision``)
PRECISIONS = ("fp32", "bf16")


def method_label(method: str, options: Mapping[str, Any]) -> str:
    """A run's readable name: the method and its options' values in the order of their names
    (``unimodal-gray``, ``ogm_ge-0.8``); an option that is a flag reads as its name, or ``no_`` and its name
    (``udi-no_complementarity``), so that two flags off do not read alike; a mapping reads as its keys and values
    in the order of the keys (``mslr-color0.1_gray1.0-keep``), a word fit for a folder's name."""
    def word(key: str, value: Any) -> str:
        if isinstance(value, bool):
            return key if value else f"no_{key}"
        if isinstance(value, Mapping):
            return "_".join(f"{k}{v}" for k, v in sorted(value.items()))
        return str(value)

    opts = "-".join(word(k, v) for k, v in sorted(options.items()))
    return f"{method}-{opts}" if opts else method


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "cgmnist"
    method: str = "uniform"
    seed: int = 0
    profile: str = "quick"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    train_size: int | None = 20000
    val_size: int = 5000
    test_size: int | None = None
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_probe_every: int = 20
    data_seed: int = 0  # the dataset draw (colours, splits) is the same for every training seed
    # record the greedy-learner measures through training (chapter 2): per step each encoder's
    # learning speed, per epoch each modality's conditional utilization rate. Left out of the
    # identity when False, so the keys of runs that do not ask for it are unchanged.
    measure_imbalance: bool = False
    # arithmetic of the forward pass: "fp32", or "bf16" (autocast to bfloat16: the GPU path of
    # CREMA-D's ResNets, chapter 5). Part of the identity only when not "fp32".
    precision: str = "fp32"

    @classmethod
    def from_profile(
        cls,
        dataset: str = "cgmnist",
        method: str = "uniform",
        seed: int = 0,
        profile: str | None = None,
        method_options: Mapping[str, Any] | None = None,
        dataset_options: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> "RunConfig":
        """A config with the profile's sizes and optimiser, then ``overrides``.

        ``dataset_options`` are the dataset's run defaults (``DatasetSpec.run_defaults``: CG-MNIST's current
        protocol, ``mmlab-2``), then the profile's for the dataset (the full profile's CG-MNIST runs also evaluate
        the first protocol's test set and the digits in their own colours), then the options given, each
        replacing the one before (``{"protocol": "mmlab-1"}``: the first protocol). An option at its implicit
        value (``DatasetSpec.implicit_options``) is left out, so the config equals the one its record loads as.
        Names are checked here, so a typo fails before any training starts.
        """
        from .data.registry import DATASETS
        from .profiles import resolve_profile

        prof = resolve_profile(profile)
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(
                f"Unknown RunConfig {'field' if len(unknown) == 1 else 'fields'} {sorted(unknown)}; valid: {sorted(known)}"
            )
        base = prof.settings_for(dataset)
        options = {**(DATASETS[dataset].run_defaults if dataset in DATASETS else {}),
                   **base.pop("dataset_options", {}), **dict(dataset_options or {})}
        implicit = DATASETS[dataset].implicit_options if dataset in DATASETS else {}
        options = {k: v for k, v in options.items() if not (k in implicit and implicit[k] == v)}  # as from_dict
        base.update(overrides)
        config = cls(
            dataset=dataset, method=method, seed=int(seed), profile=prof.name,
            method_options=dict(method_options or {}),
            dataset_options=options, **base,
        )
        config.validate()
        return config

    def validate(self) -> "RunConfig":
        """Check names and values; raise a clear error on the first bad one."""
        from .data.registry import get_dataset
        from .methods import build_method

        get_profile(self.profile)
        self._check_types()
        spec = get_dataset(self.dataset)
        spec.validate_options(self.dataset_options)
        build_method(self.method, spec.modalities, **self.method_options)
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs two samples)")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.grad_probe_every < 0:
            raise ValueError("grad_probe_every must be >= 0 (0 switches the probe off)")
        if self.seed < 0 or self.data_seed < 0:
            raise ValueError(f"seed and data_seed must be >= 0, got {self.seed} and {self.data_seed}")
        for name in ("train_size", "test_size", "val_size"):
            size = getattr(self, name)
            least = 1 if name == "train_size" else 2  # an evaluation split needs a batch of two (BatchNorm)
            if size is not None and size < least:
                raise ValueError(f"{name} must be at least {least} (or None: all of the split), got {size}"
                                 + ("; every run is evaluated on a validation split after each epoch"
                                    if name == "val_size" else ""))
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {self.momentum} and {self.weight_decay}")
        return self

    #: fields that hold a whole number (None allowed where the default is None) and a real number
    _WHOLE = ("seed", "train_size", "val_size", "test_size", "epochs", "batch_size", "grad_probe_every", "data_seed")
    _REAL = ("lr", "momentum", "weight_decay")

    def _check_types(self) -> None:
        """A value of the wrong type (``--set lr=abc``, ``epochs=2.5``) is named, not met later by an
        operator that cannot compare it."""
        def is_whole(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        for name in self._WHOLE:
            value = getattr(self, name)
            if not (is_whole(value) or (value is None and name in ("train_size", "val_size", "test_size"))):
                raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
        for name in self._REAL:
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
        if not isinstance(self.measure_imbalance, bool):
            raise ValueError(f"measure_imbalance must be true or false, got {self.measure_imbalance!r}")

    # -- identity -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["method_options"] = dict(sorted(self.method_options.items()))
        d["dataset_options"] = dict(sorted(self.dataset_options.items()))
        from .data.registry import DATASETS

        spec = DATASETS.get(self.dataset)
        for name, value in (spec.implicit_options if spec is not None else {}).items():
            if d["dataset_options"].get(name, value) == value:  # e.g. CG-MNIST's first protocol, named
                d["dataset_options"].pop(name, None)  # or not: one run, one identity
        if not d["measure_imbalance"]:
            del d["measure_imbalance"]  # optional settings at their default are not part of the key
        if d["precision"] == "fp32":
            del d["precision"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def key(self) -> str:
        """A short stable hash of every setting that changes the result."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """A readable name: the method, and its options (``unimodal-gray``; see :func:`method_label`)."""
        return method_label(self.method, self.method_options)

    def with_(self, **changes: Any) -> "RunConfig":
        return replace(self, **changes)
