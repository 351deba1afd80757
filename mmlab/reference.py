"""Published numbers, exactly as published, with their source.

Shown beside the book's own runs, never mixed with them. The protocol of each
source differs from ours in ways the chapters state (colours, epochs, model
selection).
"""

from __future__ import annotations

import pandas as pd

MMPARETO_TABLE3_SOURCE = (
    "Wei & Hu, MMPareto (ICML 2024), Table 3: Colored-and-gray MNIST, 4-conv encoders, "
    "SGD lr 1e-3, from scratch"
)

# method label in mmlab -> (accuracy %, macro-F1 %)
CGMNIST_PUBLISHED: dict[str, tuple[float, float]] = {
    "joint": (60.50, 59.89),
    "uniform": (75.68, 75.66),
    "mgda": (62.00, 61.85),
    "gradnorm": (76.16, 76.12),
    "pcgrad": (79.35, 77.14),
    "metabalance": (79.18, 77.87),
    "mmpareto": (81.88, 81.69),
}


def published_cgmnist() -> pd.DataFrame:
    frame = pd.DataFrame(
        [(m, a, f) for m, (a, f) in CGMNIST_PUBLISHED.items()],
        columns=["method", "published acc (%)", "published macro-F1 (%)"],
    ).set_index("method")
    frame.attrs["source"] = MMPARETO_TABLE3_SOURCE
    return frame
