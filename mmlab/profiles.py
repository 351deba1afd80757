"""Run profiles: how much training one run of a chapter costs.

* ``smoke`` -- continuous integration: seconds per chapter on a CPU. The numbers
  show that the code runs, not what the methods achieve.
* ``quick`` -- a laptop CPU: minutes per chapter. Enough data and epochs for the
  effects the chapters discuss to show, far short of the papers' protocol.
* ``sensitivity`` -- chapter 1's study of CG-MNIST's unknown knobs: the ``quick`` profile's
  sizes and optimiser, one seed, its records committed (like ``full``'s), since the whole study
  is 25 runs, about 1.5 hours of one CPU core.
* ``full``  -- the papers' protocol (for CG-MNIST: all training images, SGD lr 1e-3,
  momentum 0.9 as MMPareto's App. B says, and PMR's 100 epochs). Meant for a GPU.

A profile fixes sizes and the optimiser; a :class:`mmlab.RunConfig` made from it
can still override each field, and the override is part of the run's identity.
Chapter notebooks take the profile from their papermill ``parameters`` cell,
which defaults to the ``MMLAB_PROFILE`` environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import UnknownNameError

DEFAULT_PROFILE = "quick"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    train_size: int | None  # None: every training image not held out for validation
    val_size: int
    test_size: int | None  # None: the whole test set
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    seeds: tuple[int, ...]
    grad_probe_every: int  # steps between measurements of per-loss encoder gradients
    # per dataset, settings that replace the ones above (e.g. CREMA-D's ResNets train on fewer,
    # larger samples than CG-MNIST's small encoders), and ``dataset_options`` that a run gets unless it
    # names them (the full profile's CG-MNIST probe splits)
    datasets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def settings_for(self, dataset: str) -> dict[str, Any]:
        """The RunConfig fields this profile gives a run on ``dataset``."""
        base = dict(train_size=self.train_size, val_size=self.val_size, test_size=self.test_size,
                    epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                    weight_decay=self.weight_decay, grad_probe_every=self.grad_probe_every)
        base.update(self.datasets.get(dataset, {}))
        base["dataset_options"] = dict(base.get("dataset_options", {}))
        return base


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI: 4k images, 3 epochs, lr 1e-2 (seconds); proves the code runs, not what it achieves",
        train_size=4000, val_size=500, test_size=1000, epochs=3, batch_size=64,
        lr=1e-2, momentum=0.9, weight_decay=1e-4, seeds=(0,), grad_probe_every=8,
        # at least two epochs everywhere: one for each stage of pretrain_finetune
        datasets={"avdigits": dict(train_size=1000, val_size=300, test_size=1000, epochs=2),
                  "cremad": dict(train_size=64, val_size=16, test_size=64, epochs=2)},
    ),
    "quick": Profile(
        name="quick",
        description="laptop CPU: 20k training images, 5 epochs, lr 1e-2 (minutes per run)",
        # lr 1e-2: with the papers' 1e-3, 1,560 steps leave every multimodal model near chance on CG-MNIST
        # (joint 11%, uniform 23%, MMPareto 27% in 2026-12), so nothing shows; ten times the step does
        # (joint 22%, uniform 45%, MMPareto 65%, gray alone 98% under protocol mmlab-1: chapter 1)
        train_size=20000, val_size=5000, test_size=None, epochs=5, batch_size=64,
        lr=1e-2, momentum=0.9, weight_decay=1e-4, seeds=(0,), grad_probe_every=20,
        # audio-visual digits (the book's own task, chapter 5): its spectrograms cost about three MNIST
        # images, so fewer samples; lr 1e-2, with which both encoders learn within the profile's steps
        datasets={"avdigits": dict(train_size=6000, val_size=1000, test_size=3000, epochs=5, lr=1e-2),
                  "cremad": dict(train_size=1000, val_size=200, test_size=None, epochs=3)},
    ),
    "sensitivity": Profile(
        name="sensitivity",
        description="chapter 1's study of CG-MNIST's unknown knobs: the quick profile's 20k images, "
        "5 epochs, lr 1e-2, one seed; records committed",
        train_size=20000, val_size=5000, test_size=None, epochs=5, batch_size=64,
        lr=1e-2, momentum=0.9, weight_decay=1e-4, seeds=(0,), grad_probe_every=20,
    ),
    "full": Profile(
        name="full",
        description="the papers' protocol: 55k training images, 100 epochs, SGD lr 1e-3 (GPU)",
        train_size=None, val_size=5000, test_size=None, epochs=100, batch_size=64,
        lr=1e-3, momentum=0.9, weight_decay=1e-4, seeds=(0, 1, 2), grad_probe_every=50,
        # CREMA-D: OGM-GE's protocol (batch 64, SGD lr 1e-3, 100 epochs; its StepLR is not applied), a
        # validation split of 670 clips (10 %) held out of its 6,698 training clips, bf16 autocast
        # CG-MNIST: every run also evaluated on the first protocol's test set (agreement 0.1) and on the digits
        # in their own colours (1), so each record sits on the line of chapter 1 and beside the first protocol
        datasets={"cremad": dict(train_size=None, val_size=670, test_size=None, precision="bf16"),
                  "avdigits": dict(lr=1e-2),
                  "cgmnist": dict(dataset_options={"probe_agreements": [0.1, 1.0]})},
    ),
}


#: profiles whose records are committed to the repository (``results/<profile>/``) and kept across versions of
#: the code (each names its commit); the others' records are local and regenerated
COMMITTED_PROFILES: tuple[str, ...] = ("full", "sensitivity")


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name lists the valid ones."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise UnknownNameError("profile", name, PROFILES) from None


def resolve_profile(name: str | None = None) -> Profile:
    """The profile a chapter should use.

    ``name`` (a notebook parameter) wins; else ``MMLAB_PROFILE``; else
    ``quick``. A bad value gets an error naming the valid profiles.
    """
    if name is None or name == "":
        from_env = os.environ.get("MMLAB_PROFILE")
        if from_env and from_env not in PROFILES:
            raise UnknownNameError("profile", from_env, PROFILES, source="the environment variable MMLAB_PROFILE")
        name = from_env or DEFAULT_PROFILE
    return get_profile(name)
