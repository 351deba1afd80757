"""UME and UMT: the uni-modal ensemble and the uni-modal teacher (Du et al., ICML 2023, "On Uni-Modal Feature
Learning in Supervised Multi-Modal Learning"), chapter 6, beside UDI's anchor.

Du et al. argue that joint training leaves each encoder's *uni-modal* features under-learned, and propose two
remedies, chosen by whether the modalities need to interact:

* **UME** (:class:`UniModalEnsemble`): train each modality's model alone and predict with the ensemble of their
  outputs, ``f(x) = sum_m h^m(z^m)`` (the sum of logits: the same arg-max as their mean). The encoders and heads of
  different modalities share no parameter, so training them together on ``sum_m CE(h^m(z^m), y)`` is training each
  alone; the fused head is not trained and not used.
* **UMT** (:class:`UniModalTeacher`): first train each modality alone (the teachers), then train the multimodal
  model from its initialisation with the fused cross-entropy plus a distillation of each teacher's features into
  the student's encoder, ``L = CE(f(x), y) + alpha sum_m MSE(z^m, z^m_teacher)``.

One run holds both UMT's stages (the loop's epoch hooks): the teachers train for ``teacher_epochs`` (default half the
run), are copied and frozen (in evaluation mode), and the model -- encoders, fused head, heads, BatchNorm statistics
-- is reset to the run's initial state with a fresh optimiser state. In the second stage the unimodal heads keep
learning on the *detached* student features, so the per-modality accuracy reads what the student's encoders support.
BalanceBenchmark (its ``UMTTrainer``) loads teachers trained by separate unimodal runs and distils with ``alpha`` (its
example command: 1.0); splitting one run's epochs between the stages is the book's choice, which keeps every method
within the same budget of epochs. The paper's equation numbers are not cited: the book could not check them.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from ..models import ModelOutput
from .base import TrainState, first_stage_epochs
from .baselines import UniformBaseline


def ensemble_logits(output: ModelOutput) -> torch.Tensor:
    """UME's prediction: the sum of the modalities' own heads' logits."""
    return torch.stack(list(output.unimodal_logits.values())).sum(0)


def feature_distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_m MSE(z^m, z^m_teacher)``, the mean squared error per feature, summed over the modalities; the teachers'
    features carry no gradient."""
    return torch.stack([F.mse_loss(student[m], teacher[m].detach()) for m in teacher]).sum()


class UniModalEnsemble(UniformBaseline):
    """UME: each modality trained alone, predicting with the ensemble of their logits (Du et al., ICML 2023)."""

    name = "ume"

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        return {f"unimodal/{m}": F.cross_entropy(h, labels) for m, h in output.unimodal_logits.items()}

    def prediction(self, output: ModelOutput) -> torch.Tensor:
        return ensemble_logits(output)


class UniModalTeacher(UniformBaseline):
    """UMT: unimodal teachers first, then the multimodal model distilled from their features (Du et al., ICML 2023)."""

    name = "umt"
    capturable = False
    #: the frozen teachers run in evaluation mode beside the student; a stacked run would need one per model
    stackable = False

    def __init__(self, teacher_epochs: int | None = None, alpha: float = 1.0):
        if teacher_epochs is not None and (not isinstance(teacher_epochs, int) or teacher_epochs < 1):
            raise ValueError(f"teacher_epochs must be a whole number of epochs >= 1 (or None: half the run), "
                             f"got {teacher_epochs!r}")
        if not alpha >= 0:
            raise ValueError(f"UMT's alpha must be >= 0, got {alpha!r}")
        self.teacher_epochs, self.alpha = teacher_epochs, float(alpha)
        self.stage_epochs = 0

    def setup(self, state: TrainState) -> None:
        self.stage_epochs = first_stage_epochs("umt", "teacher_epochs", self.teacher_epochs, state.num_epochs)
        # called before a resume loads the checkpoint: the model is at the run's initial state here
        self.initial = copy.deepcopy(state.model.state_dict())
        self.teachers = copy.deepcopy(state.model.encoders).eval().requires_grad_(False)

    def teaching(self, state: TrainState) -> bool:
        return state.epoch < self.stage_epochs

    def on_epoch_start(self, state: TrainState) -> None:
        if state.epoch == self.stage_epochs:
            self.teachers.load_state_dict(state.model.encoders.state_dict())  # the teachers, frozen as trained
            state.model.load_state_dict(self.initial)  # the student starts where the teachers started
            state.optimizer.state.clear()
        self.teachers.eval()
        self._student = not self.teaching(state)

    def losses(self, output: ModelOutput, labels: torch.Tensor, state: TrainState) -> dict[str, torch.Tensor]:
        heads = state.model.unimodal_heads
        if self.teaching(state):
            return {f"unimodal/{m}": F.cross_entropy(h, labels) for m, h in output.unimodal_logits.items()}
        with torch.no_grad():
            teacher = {m: self.teachers[m](state.inputs[m]) for m in output.features}
        terms = {"multimodal": F.cross_entropy(output.logits, labels),
                 "distillation": feature_distillation(output.features, teacher)}
        for m, z in output.features.items():  # the heads read the student's encoders, and do not train them
            terms[f"unimodal/{m}"] = F.cross_entropy(heads[m](z.detach()), labels)
        return terms

    def total_loss(self, losses: dict[str, torch.Tensor], state: TrainState) -> torch.Tensor:
        if "distillation" not in losses:
            return torch.stack(list(losses.values())).sum()
        return torch.stack([v for k, v in losses.items() if k != "distillation"]).sum() + \
            self.alpha * losses["distillation"]

    def prediction(self, output: ModelOutput) -> torch.Tensor:
        """The student's fused logits; in the teachers' stage, whose fused head is not trained, the teachers'
        ensemble (UME's prediction), so that stage's curves show what the teachers reach."""
        return output.logits if self._student else ensemble_logits(output)

    _student = False  # set per epoch by on_epoch_start (``prediction`` sees no training state)

    def on_epoch_end(self, state: TrainState, evaluate) -> dict[str, float]:
        return {"train/umt/teacher_stage": float(self.teaching(state))}

    def state_dict(self) -> dict[str, Any]:
        return {"stage_epochs": self.stage_epochs, "teachers": self.teachers.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["stage_epochs"] != self.stage_epochs:
            raise ValueError(f"the checkpoint trained its teachers for {state['stage_epochs']} epochs, this run for "
                             f"{self.stage_epochs}")
        self.teachers.load_state_dict(state["teachers"])
