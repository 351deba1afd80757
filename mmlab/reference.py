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


MMPARETO_TABLE1_SOURCE = (
    "Wei & Hu, MMPareto (ICML 2024), Table 1: CREMA-D, ResNet-18 from scratch, late fusion; per-modality "
    "accuracy of methods without unimodal heads from a linear classifier fine-tuned on the frozen encoder"
)

# method label in mmlab -> (accuracy %, audio accuracy %, visual accuracy %); None = not reported.
CREMAD_PUBLISHED: dict[str, tuple[float | None, float | None, float | None]] = {
    "unimodal-audio": (None, 61.69, None),
    "unimodal-visual": (None, None, 56.05),
    "pretrain_finetune": (71.51, 60.08, 60.22),  # unimodal pre-training, then multimodal fine-tuning
    "joint": (66.13, 59.27, 36.56),
    "uniform": (71.10, 63.44, 51.34),
    "gblending": (72.01, 60.62, 52.23),
    "ogm_ge": (69.19, 56.99, 40.05),
    "greedy": (67.61, 60.69, 38.17),
    "pmr": (66.32, 59.95, 32.53),
    "agm": (70.06, 60.38, 37.54),
    "mmpareto": (75.13, 65.46, 55.24),
}

#: CREMA-D figures of other papers, each from its own protocol (never compared in one column)
CREMAD_OTHER_PROTOCOLS: tuple[tuple[str, str, float], ...] = (
    ("OGM-GE paper (CVPR 2022), concatenation fusion, as quoted in its repository's issues", "joint", 51.7),
    ("OGM-GE paper (CVPR 2022), concatenation fusion, as quoted in its repository's issues", "ogm_ge", 61.9),
    ("UDI (arXiv 2509.02281), its own protocol", "udi", 83.19),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "joint", 65.50),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "ogm_ge", 67.76),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "greedy", 66.48),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "mmpareto", 79.97),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "opm", 68.75),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "pmr", 67.19),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "gblending", 71.59),
    ("BalanceBenchmark (arXiv 2502.10816), AdamW, 30 epochs", "agm", 71.59),
)


def other_protocols_cremad() -> pd.DataFrame:
    """:data:`CREMAD_OTHER_PROTOCOLS` as a table: one row per (source, method), each with its own protocol."""
    return pd.DataFrame(CREMAD_OTHER_PROTOCOLS, columns=["source and protocol", "method", "published acc (%)"])


#: CG-MNIST figures of other papers, each from its own protocol (never compared in one column)
CGMNIST_OTHER_PROTOCOLS: tuple[tuple[str, str, float], ...] = (
    ("UDI (arXiv 2509.02281), its own CG-MNIST protocol (not described in its digest)", "udi", 99.11),
)

#: Throughput of the original MMPareto code's way of computing the two gradients, from the project's reference
#: notes (not a run of this book): a re-implementation in the original code's style -- three backward passes
#: with retain_graph, a fourth on the summed loss, per-parameter clone loops -- on a 2-core CPU, batch 64,
#: torch 2.13, as a fraction of the uniform baseline's throughput measured the same way.
ORIGINAL_STYLE_MMPARETO_THROUGHPUT = 0.42
ORIGINAL_STYLE_MMPARETO_SOURCE = (
    "the book's reference notes: a re-implementation in the original MMPareto code's style (four backward passes "
    "per step, per-parameter Python loops), 2-core CPU, batch 64, torch 2.13; not a recorded run of this book"
)


def published_cremad() -> pd.DataFrame:
    frame = pd.DataFrame(
        [(m, *v) for m, v in CREMAD_PUBLISHED.items()],
        columns=["method", "published acc (%)", "published audio (%)", "published visual (%)"],
    ).set_index("method")
    frame.attrs["source"] = MMPARETO_TABLE1_SOURCE
    return frame


def published(dataset: str) -> pd.DataFrame:
    """The published table the book sets its runs of ``dataset`` beside (an empty frame if none)."""
    tables = {"cgmnist": published_cgmnist, "cremad": published_cremad}
    return tables[dataset]() if dataset in tables else pd.DataFrame()
