"""Several models of the same shape trained at once (the reproduction chapter, *Speed*): the seeds of one method.

A small model's training step on a GPU is bound by kernel launches, not arithmetic: CG-MNIST's
encoders at batch 64 leave the card mostly idle. :class:`StackedEncoders` computes the encoder
features of ``K`` models in one batched computation -- ``torch.func.vmap`` over their parameters,
stacked anew at every step -- so that each encoder layer is one launch for all ``K`` rather than
``K``. It is the same function with the same gradients as ``K`` separate forward passes (a test
checks both): every model keeps its own parameters (the leaves its optimiser steps) and its own
BatchNorm statistics (views into one stacked buffer, updated in place by the batched forward).
The rest of each model (intervention, fusion, heads, losses, the method's hooks) runs per model,
on its slice of the features (:meth:`~mmlab.models.MultimodalClassifier.fuse`).
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from .classifier import MultimodalClassifier


def stackable(model: MultimodalClassifier) -> bool:
    """Whether ``model``'s encoders can be stacked: each encoder sees its own modality only (late
    fusion; MMTM's cross-modal modules connect the encoders, chapter 2)."""
    return type(model).encode is MultimodalClassifier.encode and not model.parameter_groups().cross_modal


class StackedEncoders:
    """``features = stacked({m: x[K, B, ...]})`` -> ``{m: z[K, B, D]}``: model ``k``'s encoder of
    modality ``m`` applied to ``x[k]``, for all ``k`` in one batched call.

    Build it after the models are on their device and in their memory format (it ties their
    BatchNorm buffers to one stacked tensor; moving a model afterwards unties them).
    """

    def __init__(self, models: Sequence[MultimodalClassifier]):
        if len(models) < 2:
            raise ValueError("stacking needs at least two models")
        first = models[0]
        for model in models:
            if not stackable(model):
                raise ValueError(f"{type(model).__name__} connects its encoders; it cannot be stacked")
            if model.modalities != first.modalities:
                raise ValueError(f"the models differ in their modalities: {model.modalities} vs {first.modalities}")
        self.models = list(models)
        self.modalities = first.modalities
        self.templates: dict[str, nn.Module] = {}
        self.buffers: dict[str, dict[str, torch.Tensor]] = {}
        for m in self.modalities:
            encoders = [model.encoders[m] for model in models]
            shapes = [[tuple(t.shape) for t in e.state_dict().values()] for e in encoders]
            if any(s != shapes[0] for s in shapes):
                raise ValueError(f"the {m} encoders differ in shape; only models of one architecture stack")
            template = copy.deepcopy(encoders[0]).to("meta")  # the architecture; holds no numbers
            for module in template.modules():
                if hasattr(module, "memory_format"):
                    module.memory_format = torch.contiguous_format  # strides cannot be queried under vmap
            _replace_global_pools(template)
            self.templates[m] = template
            self.buffers[m] = {}
            for name, _ in encoders[0].named_buffers():
                stacked = torch.stack([e.get_buffer(name) for e in encoders])
                self.buffers[m][name] = stacked
                owner, _, attribute = name.rpartition(".")
                for k, e in enumerate(encoders):  # each model's buffer becomes a view of the stack
                    setattr(e.get_submodule(owner) if owner else e, attribute, stacked[k])

    def __len__(self) -> int:
        return len(self.models)

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = {}
        for m in self.modalities:
            encoders = [model.encoders[m] for model in self.models]
            parameters = {name: torch.stack([e.get_parameter(name) for e in encoders])
                          for name, _ in encoders[0].named_parameters()}
            template = self.templates[m].train(encoders[0].training)

            def encode(params, buffers, x, template=template):
                return functional_call(template, (params, buffers), (x,))

            features[m] = vmap(encode)(parameters, self.buffers[m], inputs[m])
        return features


class _GlobalAveragePool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: vmap has a batching rule for it (for the adaptive pool
    it falls back to a loop over the models)."""

    def forward(self, x):
        return x.mean((-2, -1), keepdim=True)


def _replace_global_pools(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
            setattr(module, name, _GlobalAveragePool())
        else:
            _replace_global_pools(child)
