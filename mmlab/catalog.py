"""The reader's map of the field: every method the book trains, and the ones it does not have yet, with its paper,
its chapter, its idea in one line, the datasets it has full-profile records of, and whether BalanceBenchmark and the
original authors' code have it (the page "Every method in this book", written by ``scripts/build_book.py``).

The two code columns say only what the book checked: a BalanceBenchmark trainer named in its ``balancemm/trainer``
folder (GeWu-Lab/BalanceBenchmark), and an authors' repository the book read; "not checked" is not "none".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .methods import METHODS, row_title
from .results import ResultsStore, record_protocol

#: how the page names each dataset
DATASET_TITLES = {"cgmnist": "CG-MNIST", "avdigits": "audio-visual digits", "cremad": "CREMA-D"}


@dataclass(frozen=True)
class MethodEntry:
    """One method of the field. ``method`` is the registry id (``None`` for one the book has not built yet);
    ``chapter`` the notebook it is explained in (or, for a planned one, where it belongs)."""

    name: str
    paper: str
    chapter: str
    idea: str
    method: str | None = None
    cite: str | None = None
    balancebenchmark: str | None = None  # its trainer's name there
    authors_code: str | None = None  # "owner/repository", where the book read it


CH1, CH2, CH3, CH4, CH5, CH6 = ("01_modality_imbalance", "02_greedy_learner", "03_gradient_modulation",
                                "04_gradient_conflict", "05_audio_visual", "06_beyond_joint_training")

CATALOG: tuple[MethodEntry, ...] = (
    MethodEntry("One joint loss", "the common baseline", CH1, "the fused cross-entropy alone", "joint",
                balancebenchmark="baseline"),
    MethodEntry("One modality alone", "the common reference", CH1, "each encoder trained by itself: what a modality "
                "can reach", "unimodal", balancebenchmark="unimodal"),
    MethodEntry("Uniform baseline", "Wei & Hu, ICML 2024 (MMPareto's baseline)", CH1, "the fused loss plus one "
                "unimodal loss per modality, weights 1", "uniform", cite="wei2024mmpareto"),
    MethodEntry("Pre-training then fine-tuning", "the two-stage baseline", CH6, "train each encoder alone, then "
                "the fused model", "pretrain_finetune"),
    MethodEntry("Greedy", "Wu et al., ICML 2022", CH2, "measure the branches' conditional utilisation rates and "
                "re-balance their learning speeds", "greedy", cite="wu2022greedy", balancebenchmark="Greedy"),
    MethodEntry("MILES", "Guerra-Manzanares & Shamout, IJCNN 2025", CH2, "slow the encoder of the "
                "modality the fused prediction leans on, each epoch, from the conditional utilisation rates",
                "miles", cite="guerra2025miles"),
    MethodEntry("MSLR", "Yao & Mihalcea, Findings of ACL 2022", CH2, "a learning rate per modality's encoder, kept "
                "from a unimodal search or adapted from each modality's progress", "mslr", cite="yao2022mslr"),
    MethodEntry("MMTM with the joint loss", "Vaezi Joze et al., CVPR 2020", CH2, "cross-modal squeeze-and-excitation "
                "between the encoders' stages", "mmtm", cite="vaezijoze2020mmtm"),
    MethodEntry("G-Blending", "Wang et al., CVPR 2020", CH2, "weight each head's loss by its estimated "
                "generalisation over overfitting", "gblending", cite="wang2020gblending",
                balancebenchmark="GBlending"),
    MethodEntry("OGM-GE", "Peng et al., CVPR 2022", CH3, "slow the leading modality's encoder gradient by its "
                "discrepancy ratio, add Gaussian noise back", "ogm_ge", cite="peng2022ogm", balancebenchmark="OGM",
                authors_code="GeWu-Lab/OGM-GE_CVPR2022"),
    MethodEntry("OPM", "Wei et al., TPAMI 2024", CH3, "drop the leading modality's features in the forward pass, "
                "with a probability set by its lead", "opm", cite="wei2024opm", balancebenchmark="OPM"),
    MethodEntry("AMCo", "Zhou et al., ICASSP 2023", CH3, "find the modality the prediction depends on and mask a "
                "growing share of its features", "amco", cite="zhou2023amco", balancebenchmark="AMCo"),
    MethodEntry("PMR", "Fan et al., CVPR 2023", CH3, "a prototypical loss for the slower modality while it is "
                "behind", "pmr", cite="fan2023pmr", balancebenchmark="PMR",
                authors_code="fanyunfeng-bit/Modal-Imbalance-PMR"),
    MethodEntry("AGM", "Li et al., ICCV 2023", CH3, "Shapley mono-modal responses measure each modality; modulate "
                "departures from their running course", "agm", cite="li2023agm", balancebenchmark="AGM"),
    MethodEntry("MMCosine", "Xu et al., ICASSP 2023", CH3, "cosine-normalised, scaled shares: no modality wins by "
                "the length of its features", "mmcosine", cite="xu2023mmcosine", balancebenchmark="MMCosine",
                authors_code="GeWu-Lab/MMCosine_ICASSP23"),
    MethodEntry("CGGM", "Guo et al., NeurIPS 2024", CH3, "classifiers on detached features scale each encoder's "
                "gradient by the others' improvement, and pull the fused head towards them", "cggm",
                cite="guo2024cggm", authors_code="zrguo/CGGM"),
    MethodEntry("Conventional Pareto (MGDA)", "Sener & Koltun, NeurIPS 2018", CH4, "the min-norm combination of the "
                "losses' gradients", "mgda", cite="sener2018mgda"),
    MethodEntry("PCGrad", "Yu et al., NeurIPS 2020", CH4, "project each gradient off the others it conflicts with",
                "pcgrad", cite="yu2020pcgrad", authors_code="tianheyu927/PCGrad"),
    MethodEntry("GradNorm", "Chen et al., ICML 2018", CH4, "learn loss weights that equalise the gradient norms' "
                "training rates", "gradnorm", cite="chen2018gradnorm"),
    MethodEntry("MetaBalance", "He et al., WWW 2022", CH4, "rescale the auxiliary gradients to the target "
                "gradient's norm", "metabalance", cite="he2022metabalance"),
    MethodEntry("Uncertainty weighting", "Kendall, Gal & Cipolla, CVPR 2018", CH4, "learned log-variances weigh "
                "the multimodal and unimodal losses", "uncertainty", cite="kendall2018uncertainty"),
    MethodEntry("CML", "Ma et al., ICML 2023", CH4, "penalise a prediction that is more confident with a modality "
                "removed than with all of them", "cml", cite="ma2023cml", balancebenchmark="CML"),
    MethodEntry("LFM", "Yang et al., NeurIPS 2024", CH4, "trade the fused loss against an alignment of the "
                "modalities' predictions, the trade-off learned each epoch", "lfm", cite="yang2024lfm",
                balancebenchmark="LFM"),
    MethodEntry("MMPareto", "Wei & Hu, ICML 2024", CH4, "the Pareto combination where the gradients conflict, "
                "their sum rescaled otherwise: SGD noise kept", "mmpareto", cite="wei2024mmpareto",
                balancebenchmark="MMPareto", authors_code="GeWu-Lab/MMPareto_ICML2024"),
    MethodEntry("Sample-level modality valuation", "Wei et al., CVPR 2024", CH5, "each sample's Shapley "
                "contribution per modality; copies that keep only the modality that contributed little",
                "sample_valuation", cite="wei2024valuation", balancebenchmark="Sample"),
    MethodEntry("UDI", "arXiv 2509.02281, 2025", CH6, "train the better modality as a frozen anchor, then the "
                "other guided by it", "udi", cite="udi2025"),
    MethodEntry("UME", "Du et al., ICML 2023", CH6, "train each modality alone; predict with the ensemble of their "
                "logits", "ume", cite="du2023unimodal"),
    MethodEntry("UMT", "Du et al., ICML 2023", CH6, "train unimodal teachers, then distil their features into the "
                "multimodal model's encoders", "umt", cite="du2023unimodal", balancebenchmark="UMT"),
    MethodEntry("InfoReg", "Huang et al., CVPR 2025", CH6, "pull the information-sufficient modality's encoder "
                "back while its Fisher-information trace still grows (the prime learning window)", "inforeg",
                cite="huang2025inforeg", authors_code="GeWu-Lab/InfoReg_CVPR2025"),
    MethodEntry("MBSD", "Liu et al., WSDM 2023", CH6, "where one modality is right, pull the other's prediction "
                "towards it, weighted by their confidence gap", "mbsd", cite="liu2023mbsd", balancebenchmark="MBSD"),
    MethodEntry("MLA", "Zhang et al., CVPR 2024", CH6, "alternate the modalities through one shared head, "
                "protecting what earlier ones taught it", "mla", cite="zhang2024mla", balancebenchmark="MLA",
                authors_code="Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation"),
    MethodEntry("ReconBoost", "Hua et al., ICML 2024", CH6, "modality-alternating boosting with a reconcilement "
                "term", "reconboost", cite="hua2024reconboost", balancebenchmark="ReconBoost",
                authors_code="huacong/ReconBoost"),
    MethodEntry("Diagnosing & Re-learning", "Wei et al., ECCV 2024", CH6, "re-initialise each encoder softly, in "
                "proportion to how separable its features already are", "relearning", cite="wei2024diagnosing",
                balancebenchmark="ReLearning"),
    # a method named by an issue and not built yet goes here: MethodEntry(name, paper, chapter, idea), no registry id
)


def check_catalog() -> None:
    """Every method of the registry has exactly one entry, and every entry's id is in the registry."""
    ids = [e.method for e in CATALOG if e.method is not None]
    missing = sorted(set(METHODS) - set(ids))
    unknown = sorted(set(ids) - set(METHODS))
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    if missing or unknown or doubled:
        raise ValueError(f"the catalog and the method registry differ: missing {missing}, unknown {unknown}, "
                         f"listed twice {doubled}")


def recorded_runs(store: ResultsStore, profile: str = "full") -> dict[str, dict[str, dict[str, int]]]:
    """``{label: {dataset: {protocol: number of seeds}}}`` of the store's records in ``profile``: what "recorded"
    means in the catalog (one record per seed of one configuration; the calibration and ablation runs count under
    their own labels)."""
    found: dict[str, dict[str, dict[str, set]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    for record in store.records(profile=profile):
        config = record["config"]
        found[record["label"]][config["dataset"]][record_protocol(record) or "-"].add(config["seed"])
    return {label: {ds: {p: len(s) for p, s in by_p.items()} for ds, by_p in by_ds.items()}
            for label, by_ds in found.items()}


def _recorded_cell(entry: MethodEntry, runs: dict[str, dict[str, dict[str, int]]]) -> str:
    labels = [entry.method] if entry.method != "unimodal" else [l for l in runs if l.startswith("unimodal-")]
    parts = []
    for label in labels:
        for dataset, by_protocol in sorted(runs.get(label, {}).items()):
            seeds = ", ".join(f"{p}: {n} seed{'s' if n != 1 else ''}" for p, n in sorted(by_protocol.items()))
            who = f"{label.removeprefix('unimodal-')} " if entry.method == "unimodal" else ""
            parts.append(f"{who}{DATASET_TITLES.get(dataset, dataset)} ({seeds})")
    return "; ".join(parts) or "—"


def methods_page(results_root: str | Path | None = None, profile: str = "full") -> str:
    """The page "Every method in this book" (MyST markdown): the catalog with each method's records of ``profile``
    in ``results_root`` (default: the results store's)."""
    check_catalog()
    runs = recorded_runs(ResultsStore(results_root), profile)
    built = [e for e in CATALOG if e.method is not None]
    planned = [e for e in CATALOG if e.method is None]
    lines = [
        "# Every method in this book", "",
        "The reader's map of the field: each method the book trains, the chapter that derives it beside the "
        f"library's code, its idea in one line, and the datasets it has **{profile}-profile** records of (with the "
        "data protocol and the number of seeds; the other profiles' runs are made when a chapter executes). "
        "The last two columns say where else the method is implemented: a trainer of BalanceBenchmark "
        "{cite}`xu2025balancebenchmark`, and the original authors' repository where the book read it -- "
        "*not checked* means the book did not look, not that there is none. The table is written from "
        "`mmlab.catalog` and the records in `results/` when the book is built.", "",
        f"## The {len(built)} methods the book trains", "",
        f"| method | paper | chapter | idea | {profile}-profile records | BalanceBenchmark | authors' code |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in built:
        paper = f"{e.paper} {{cite}}`{e.cite}`" if e.cite else e.paper
        lines.append(f"| {row_title(e.method) if e.method != 'unimodal' else e.name} (`{e.method}`) | {paper} | "
                     f"{_chapter_cell(e.chapter)} | {e.idea} | {_recorded_cell(e, runs)} | "
                     f"{e.balancebenchmark or '—'} | {_code_cell(e.authors_code)} |")
    if not planned:
        return "\n".join(lines) + "\n"
    lines += ["", f"## {len(planned)} methods still to come", "",
              "Named by the survey, the tutorial or BalanceBenchmark, and planned for the chapter given here; none "
              "has code or records in the book yet.", "",
              "| method | paper | chapter | idea | BalanceBenchmark |", "| --- | --- | --- | --- | --- |"]
    for e in planned:
        lines.append(f"| {e.name} | {e.paper} | {_chapter_cell(e.chapter)} | {e.idea} | "
                     f"{e.balancebenchmark or '—'} |")
    return "\n".join(lines) + "\n"


def _chapter_cell(chapter: str) -> str:
    """``{doc}`3 <../notebooks/03_gradient_modulation>``: the chapter's number, linked to it."""
    return f"{{doc}}`{int(chapter[:2])} <../notebooks/{chapter}>`"


def _code_cell(repo: str | None) -> str:
    return f"[{repo}](https://github.com/{repo})" if repo else "*not checked*"
