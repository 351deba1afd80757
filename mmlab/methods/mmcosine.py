"""MMCosine: the multi-modal cosine loss (Xu, Feng, Zhang & Hu, ICASSP 2023), chapter 3.

Under concatenation fusion the fused logits are a sum of shares, ``f(x) = sum_m (W^m z^m + b/M)`` (chapter 1), and a
share can grow without limit by making the features longer. MMCosine normalises each modality's features and each
class's block of fusion weights modality-wise (the paper's "modality-wise L2 normalisation"), drops the bias, and
scales the cosines by one constant ``s``:

    f_c(x) = sum_m s cos(z^m, W^m_c),      L = CE(f(x), y).

Each share is bounded by ``s``; the gradient that reaches ``z^m`` is orthogonal to ``z^m`` (a feature's length cannot
change a cosine), so neither modality wins by scale, and the scale ``s`` sets how sharp the softmax can get. The
model is :class:`~mmlab.models.fusion.CosineFusion` (the loop builds it from :attr:`fusion` and
:attr:`fusion_options`); the loss is the joint cross-entropy, as in the authors' ``main_CD.py`` with ``--mmcosine
True`` (its optional NCE term is off by default, ``lam = 0``, and not built here). ``scaling`` defaults to the
authors' 10. BalanceBenchmark's trainer trains the cosine logits only within a window of epochs and the plain fused
logits outside it (and evaluates the plain ones); here, as in the authors' script, the model is the cosine one
throughout, in training and in evaluation. The paper's equation numbers are not cited: the book could not check them against its text.
"""

from __future__ import annotations

from typing import Any

from .baselines import JointLoss


class MMCosine(JointLoss):
    """MMCosine: the joint loss on cosine-normalised, scaled shares (Xu et al., ICASSP 2023)."""

    name = "mmcosine"
    fusion = "cosine"
    capturable = True  # the joint loss's step, on another fusion module: tensor functions only

    def __init__(self, scaling: float = 10.0):
        if not scaling > 0:
            raise ValueError(f"MMCosine's scaling must be positive, got {scaling!r}")
        self.scaling = float(scaling)

    @property
    def fusion_options(self) -> dict[str, Any]:
        return {"scaling": self.scaling}
