"""The contract between the one training loop and a method.

A *method* is a small object that plugs into declared hooks of
:func:`mmlab.training.train`; no method copies the loop. One training step is::

    on_epoch_start(state)                               # once per epoch
    samples = method.epoch_samples(state)               # the epoch's training samples (default: each once)
    for state.substep in method.substeps(state):        # one optimiser step each (default: one)
    output = model(inputs, intervene=...)               # forward-time intervention
    losses = method.losses(output, labels, state)       # named loss terms
    total  = method.total_loss(losses, state)
    if method.per_loss_gradients:                       # g per loss, per encoder,
        grads = {loss: g_loss(encoder m)}               # from one forward pass
        encoder grad <- method.combine_encoder_gradients(m, grads, state)
        fusion / heads get the plain gradient of ``total``
    else:
        total.backward()
    method.transform_gradients(output, labels, state)   # per modality's parameter group
    optimizer.step()                                    # (end of a substep)
    method.on_step_end(state)
    logs = method.on_epoch_end(state, evaluate)          # once per epoch; may re-initialise
                                                        # (reinitialize_toward) from state.features

Which later method needs which hook (../shared/reference/HOOKS.md):

=========================  ==================================================
hook                       used by
=========================  ==================================================
``modalities``             unimodal training (one encoder only)
``needs_unimodal_heads``   uniform baseline, MMPareto, MGDA, PCGrad, GradNorm
``fusion``                 Greedy (the model with MMTM cross-modal modules), MLA /
                           ReconBoost (one shared head), MMCosine (cosine shares)
``fusion_options``         MMCosine (the scaling of its cosines)
``setup``                  GradNorm / uncertainty weighting (extra parameters or
                           optimiser), Greedy (checks the model)
``intervene``              OPM (drop a modality's features); sample-level valuation
                           (keep one modality of a re-sampled copy)
``epoch_samples``          sample-level valuation (each epoch's training samples, with
                           copies of those whose modality contributed little;
                           ``state.batch_positions``)
``substeps``               MLA (one optimiser step per modality, in turn, on each
                           batch)
``losses``/``total_loss``  every method; G-Blending and GradNorm re-weight
``combine_encoder_         MMPareto, MGDA, PCGrad (integrate g_m and g_u per
gradients``                encoder)
``transform_gradients``    OGM-GE (scale by k, add GE noise), AGM (``state.inputs``); Greedy
                           (reads the branches' learning speeds)
``on_step_end``            Greedy (re-balancing schedule: cuts the cross-modal
                           input into the slower branch for the next steps),
                           GradNorm updates
``on_epoch_start/end``     OGM-GE window, G-Blending weights (``state.evaluate``),
                           UDI / ReconBoost stages; Diagnosing & Re-learning
                           (``state.features``: every split's features, then
                           :func:`reinitialize_toward` its encoders)
``prediction``             UDI (the sum of the unimodal heads' logits: no fused head)
``per_modality_learning_   MILES, MSLR (the optimiser holds one parameter group per
rates``                    modality's encoder, ``encoder/<m>``, and one for the rest,
                           ``shared``; the method sets their ``lr`` between epochs)
``state_dict``             anything the method must carry across a resume
``capturable``,            a step a CUDA graph may replay (mmlab.training.graph):
``capture_key``            joint, unimodal, uniform, MMPareto, MGDA, PCGrad;
                           OGM-GE and OPM (one graph per window phase)
=========================  ==================================================

Methods log what they want per step with ``state.log(name, value)``; the loop
averages it over the epoch and stores it with the epoch's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import UnknownNameError
from ..models import ModelOutput, MultimodalClassifier, ParameterGroups


@dataclass
class TrainState:
    """What a hook may read (and, for ``optimizer`` and ``model``, act on)."""

    model: MultimodalClassifier
    groups: ParameterGroups
    optimizer: torch.optim.Optimizer
    device: torch.device
    num_epochs: int
    steps_per_epoch: int
    epoch: int = 0  # 0-based, the epoch being trained
    step: int = 0  # global optimiser step
    generator: torch.Generator | None = None  # for a method's own randomness (resumable)
    labels: torch.Tensor | None = None  # the current training batch's labels (for ``intervene``)
    inputs: dict[str, torch.Tensor] | None = None  # and its inputs (AGM evaluates padded copies of them)
    logger: Callable[[str, Any], None] | None = None
    #: ``evaluate(split)``: the metrics of ``"train"``, ``"val"`` or ``"test"`` for the model as it is
    #: now (the ``evaluate`` that ``on_epoch_end`` receives, for hooks that need it earlier)
    evaluate: Callable[[str], dict] | None = None
    #: ``features(split)``: ``(z, labels)``, every modality's encoder features ``z[m]`` (``[N, d]``) of
    #: the whole split, in its order, with the model in evaluation mode (Diagnosing & Re-learning)
    features: Callable[[str], tuple[dict[str, torch.Tensor], torch.Tensor]] | None = None
    #: the substep being trained (one of :meth:`Method.substeps`; ``None`` for a method with one)
    substep: Any = None
    #: where the current training batch's samples stand in the list :meth:`Method.epoch_samples` returned
    #: (``[B]`` on the device); ``None`` in an epoch that trains on every sample once
    batch_positions: torch.Tensor | None = None

    def param_group(self, name: str) -> dict[str, Any]:
        """The optimiser's parameter group called ``name`` (``encoder/<m>`` or ``shared``; only for a method
        with ``per_modality_learning_rates``)."""
        for group in self.optimizer.param_groups:
            if group.get("name") == name:
                return group
        names = [g.get("name") for g in self.optimizer.param_groups]
        raise UnknownNameError("parameter group", name, [n for n in names if n is not None])

    def log(self, name: str, value: Any) -> None:
        """Record ``value`` (number or 0-d tensor) under ``name``; averaged per epoch."""
        if self.logger is not None:
            self.logger(name, value)


class Method:
    """Base class and the plain *one joint loss* method: cross-entropy of the
    fused logits, back-propagated as it is (chapter 1)."""

    name = "joint"
    needs_unimodal_heads = False
    per_loss_gradients = False
    fusion = "concat"  # the model the method trains: "concat" (late fusion) or "mmtm" (chapter 2)
    #: keyword options of that fusion module (``mmlab.models.zoo.FUSION_HEADS``), e.g. MMCosine's ``scaling``
    fusion_options: dict[str, Any] = {}
    #: whether a CUDA graph may capture this method's training step (mmlab.training.graph): its
    #: step hooks (intervene, losses, total_loss, combine_encoder_gradients, transform_gradients) are
    #: tensor functions of the batch and the parameters that never wait for the device, read no host
    #: state that changes between steps, and log tensors only. Read from the class itself: a subclass
    #: must declare it again.
    capturable = False
    #: whether several seeds of this method may train as one stacked model (mmlab.models.stacked): the
    #: stacked encoders run in training mode, each model's encoders alike, so a method that puts one
    #: encoder of one run in evaluation mode (UDI's frozen anchor, a different one per run) must not
    #: stack; its runs asked to stack train one after another
    stackable = True
    #: whether the optimiser gives each modality's encoder a parameter group of its own, named
    #: ``encoder/<m>`` (``state.groups.encoders[m]``), and everything else one more, ``shared``, so that the
    #: method may change a group's ``lr`` (MILES; :meth:`TrainState.param_group`). Default: one group holding
    #: ``model.parameters()``, as the loop has always built it. The groups travel with the optimiser's state
    #: through a checkpoint.
    per_modality_learning_rates = False

    def modalities(self, available: Sequence[str]) -> list[str]:
        """Which of the dataset's modalities the model is built with."""
        return list(available)

    def capture_key(self, state: TrainState) -> Any:
        """The phase of the training whose steps one captured CUDA graph may replay (only for a
        ``capturable`` method): the step's computation may differ between phases, never within one.
        Default: one phase."""
        return None

    def setup(self, state: TrainState) -> None:
        """Called once after the model and optimiser exist (and before a resume)."""

    def substeps(self, state: TrainState) -> Sequence[Any]:
        """The optimiser steps each training batch gets: for each, the loop sets ``state.substep`` and runs
        the forward pass, the losses, the backward pass, :meth:`transform_gradients` and the optimiser step
        (MLA: one per modality, in turn). Training accuracy is counted on the last. Default: one step."""
        return (None,)

    def on_epoch_start(self, state: TrainState) -> None:
        """Called before each training epoch."""

    def epoch_samples(self, state: TrainState) -> torch.Tensor | None:
        """The samples this epoch trains on, called after :meth:`on_epoch_start`: a 1-d integer tensor of
        indices into the training split, of any length and with repeats, which the loop shuffles by the run's
        ``(seed, epoch)`` and cuts into batches. While the epoch trains, ``state.batch_positions`` says which
        entries of that list the current batch holds (a method keeps what it knows about each entry: sample-level
        valuation, which modality a copy keeps). ``state.steps_per_epoch`` stays the plain epoch's. Default
        ``None``: every training sample once, in the plain order. A method that returns samples must not stack."""
        return None

    def intervene(self, features: dict[str, torch.Tensor], state: TrainState) -> dict[str, torch.Tensor]:
        """Forward-time intervention on the features, before fusion (training only)."""
        return features

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        """Named loss terms: ``multimodal`` for the fused head, ``unimodal/<m>`` for heads."""
        return {"multimodal": F.cross_entropy(output.logits, labels)}

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        """The loss whose gradient the non-encoder parameters receive (default: the sum)."""
        terms = list(losses.values())
        return terms[0] if len(terms) == 1 else torch.stack(terms).sum()

    def combine_encoder_gradients(
        self, modality: str, grads: dict[str, list[torch.Tensor]], state: TrainState
    ) -> list[torch.Tensor]:
        """Integrate the per-loss gradients of one encoder (only with ``per_loss_gradients``).

        ``grads[loss_name]`` is the list of gradients of that loss w.r.t. the
        encoder's parameters (losses that do not reach the encoder are absent).
        Default: their sum, which is what ``total.backward()`` would give.
        """
        per_param = zip(*grads.values())
        return [torch.stack(gs).sum(0) for gs in per_param]

    def prediction(self, output: ModelOutput) -> torch.Tensor:
        """The logits the model predicts with, in training accuracy and in every evaluation: the fused
        head's (default). UDI, which trains no fused head, predicts with the sum of its unimodal heads."""
        return output.logits

    def transform_gradients(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> None:
        """After the backward pass, before the optimiser step: edit ``p.grad`` of a
        modality's parameters, found in ``state.groups.encoders[m]``."""

    def on_step_end(self, state: TrainState) -> None:
        """After the optimiser step."""

    def on_epoch_end(self, state: TrainState, evaluate: Callable[[str], dict]) -> dict[str, float]:
        """After each epoch; ``evaluate(split)`` gives that split's metrics. Returns
        extra values to store with the epoch's metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        return (self.__doc__ or self.name).strip().splitlines()[0]


def first_stage_epochs(method: str, option: str, value: int | None, num_epochs: int) -> int:
    """How many epochs a two-stage method's first stage takes: ``value``, or half the run for ``None``; an error
    naming the method and its option unless both stages get at least one epoch (UDI, UMT, pre-training then
    fine-tuning)."""
    epochs = num_epochs // 2 if value is None else value
    if not 1 <= epochs < num_epochs:
        raise ValueError(f"{method} needs at least one epoch of each stage: {option}={epochs} of a "
                         f"{num_epochs}-epoch run")
    return epochs


@torch.no_grad()
def reinitialize_toward(parameters: Sequence[torch.nn.Parameter], initial: Sequence[torch.Tensor],
                        strength: float) -> None:
    """Soft re-initialisation: every parameter moves a fraction ``strength`` of the way back to its
    initial value, :math:`\\theta \\leftarrow (1 - \\alpha)\\theta + \\alpha\\theta_0` (Diagnosing &
    Re-learning, Wei et al., ECCV 2024). ``strength`` 0 leaves them as they are, 1 restores
    ``initial``; the optimiser's state is left as it is."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"a re-initialisation strength lies in [0, 1], got {strength!r}")
    if len(parameters) != len(initial):
        raise ValueError(f"{len(parameters)} parameters but {len(initial)} initial values")
    for p, p0 in zip(parameters, initial):
        p.lerp_(p0.to(p.device, p.dtype), strength)
