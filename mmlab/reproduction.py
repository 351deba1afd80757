"""What the reproduction chapter trains, and its tables: our runs beside the published numbers
(notebooks/07_reproduction.ipynb).

:data:`PLANS` lists, per dataset, the runs of the reproduction: each a method with its options,
under the label its records carry. :func:`reproduction_configs` turns a plan into
:class:`~mmlab.RunConfig` objects for a profile (what ``python -m mmlab sweep`` trains), and
:func:`reproduction_table` sets the recorded runs beside the published table of the dataset
(:mod:`mmlab.reference`), :func:`epoch_selection_table` shows how much of a difference the choice of the
reported epoch makes, and :func:`order_agreement` whether the methods come in the paper's order. A planned run that has no record is shown as *missing*, a published
method that ``mmlab`` does not implement as *not implemented*: nothing is ever filled in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from .analysis import final_table
from .config import RunConfig, method_label
from .data.cgmnist import CURRENT_PROTOCOL, LEGACY_PROTOCOL
from .profiles import resolve_profile
from .reference import published


@dataclass(frozen=True)
class Planned:
    method: str
    method_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:  # the same rule as RunConfig.label
        return method_label(self.method, self.method_options)


def _unimodal(modality: str) -> Planned:
    return Planned("unimodal", {"modality": modality})


_BALANCING = [Planned(m) for m in ("joint", "uniform", "mgda", "gradnorm", "pcgrad", "metabalance",
                                   "mmpareto", "ogm_ge", "opm", "greedy")]

#: dataset -> the runs of its reproduction table, in the table's order
PLANS: dict[str, list[Planned]] = {
    "cgmnist": [_unimodal("gray"), _unimodal("color"), *_BALANCING],
    "avdigits": [_unimodal("image"), _unimodal("audio"), *_BALANCING],
    # the two-stage baseline, PMR, G-Blending and AGM are in MMPareto's CREMA-D table (Table 1) only
    "cremad": [_unimodal("audio"), _unimodal("visual"), Planned("pretrain_finetune"), *_BALANCING, Planned("pmr"),
               Planned("gblending"), Planned("agm")],
}

#: settings every run of a dataset's reproduction has beyond its profile: the audio-visual runs
#: also record the greedy-learner measures (chapter 5 shows them; the reproduction chapter reads the same runs)
RUN_SETTINGS: dict[str, dict[str, Any]] = {
    "avdigits": {"measure_imbalance": True},
    "cremad": {"measure_imbalance": True},
}

#: datasets whose reproduction is recorded under several data protocols: protocol -> the dataset options of the
#: plan's runs under it, the current protocol first (the default of :func:`reproduction_configs`). CG-MNIST's
#: full-profile runs under the calibrated ``mmlab-2`` also evaluate the first protocol's test set and the digits in
#: their own colours (the profile's probes; the held-out runs of :mod:`mmlab.calibration` are these runs); the
#: first protocol's 36 records evaluate no probe.
PLAN_PROTOCOLS: dict[str, dict[str, dict[str, Any]]] = {
    "cgmnist": {
        CURRENT_PROTOCOL: {"protocol": CURRENT_PROTOCOL},
        LEGACY_PROTOCOL: {"protocol": LEGACY_PROTOCOL, "probe_agreements": []},
    },
}

#: what each dataset's published column is, and how its protocol differs from ours
PROTOCOLS: dict[str, str] = {
    "cgmnist": (
        "Ours (full profile): all 55k training images not held out for validation, 100 epochs (PMR's setting; "
        "MMPareto gives none), SGD lr 1e-3, momentum 0.9, weight decay 1e-4, batch 64, the last epoch reported; "
        "colours of our own (the original generator was never released), jitter variance 0.03, test colours drawn "
        "from a random class, independent of the label. Published (MMPareto, Table 3; App. B): the same encoder "
        "(after PMR) and optimiser; test colours 'weakly color-correlated' with the labels, a correlation we do "
        "not reproduce. MMPareto released no CG-MNIST code; the public scripts it builds on (OGM-GE's, PMR's) "
        "report the best epoch on the test set."
    ),
    "cremad": (
        "Ours (full profile): OGM-GE's train/test split, 670 clips of train held out for validation (6,028 left to "
        "train on), ResNet-18 from scratch per modality, one 1-fps frame and a 257x188 log-spectrogram per clip, "
        "SGD lr 1e-3 momentum 0.9, 100 epochs (OGM-GE's), bf16 autocast, the last epoch reported. Published "
        "(MMPareto, Table 1): several frames per clip (App. B), and in its public code fbank audio features, lr 2e-3 "
        "and 50 epochs, the best epoch on the test set; the per-modality accuracy of the rows marked * in Table 1 "
        "(methods without unimodal heads) from a linear classifier fine-tuned on the frozen encoder (ours: the "
        "accuracy of the modality's share of the fused logits, or of its unimodal head)."
    ),
    "avdigits": "The book's own task (MNIST images and spoken digits, chapter 5): no published numbers exist.",
}

#: what differs from :data:`PROTOCOLS`' note under each of a dataset's other data protocols (:data:`PLAN_PROTOCOLS`)
PROTOCOL_NOTES: dict[str, dict[str, str]] = {
    "cgmnist": {
        LEGACY_PROTOCOL: "Data protocol mmlab-1, our first.",
        CURRENT_PROTOCOL: (
            "Data protocol mmlab-2, the book's current one: mmlab-1 but for the test colours, weakly tied to the "
            "label (test agreement 0.449: a test digit wears its own class's colour with probability 0.39, a random "
            "class's otherwise), the one knob fitted, on one published row only (the joint loss's 60.50%; chapter 1). "
            "The note's 'independent of the label' is mmlab-1's test set, which every mmlab-2 run also evaluates."),
    },
}


def protocol_note(dataset: str, protocol: str | None = None) -> str:
    """How ``dataset``'s reproduction differs from the published protocol, under data ``protocol`` (default: the
    current one, for a dataset with several)."""
    note = PROTOCOLS.get(dataset, "")
    notes = PROTOCOL_NOTES.get(dataset)
    if notes is None:
        return note
    name = protocol or next(iter(PLAN_PROTOCOLS[dataset]))
    return f"{notes[name]} {note}"


def plan(dataset: str, methods: Iterable[str] | None = None) -> list[Planned]:
    """The planned runs of ``dataset``, optionally restricted to the given labels."""
    planned = PLANS[dataset]
    if methods is None:
        return list(planned)
    wanted = list(methods)
    unknown = set(wanted) - {p.label for p in planned}
    if unknown:
        from .errors import UnknownNameError

        raise UnknownNameError(f"run of the {dataset} reproduction", sorted(unknown)[0], [p.label for p in planned])
    return [p for p in planned if p.label in wanted]


def plan_protocol_options(dataset: str, protocol: str | None = None) -> dict[str, Any]:
    """The dataset options of ``dataset``'s planned runs under ``protocol`` (:data:`PLAN_PROTOCOLS`; default the
    current protocol); ``{}`` for a dataset recorded under one protocol only, which takes no ``protocol``."""
    protocols = PLAN_PROTOCOLS.get(dataset)
    if protocols is None:
        if protocol is not None:
            raise ValueError(f"the {dataset} reproduction has no data protocols to choose from, "
                             f"but protocol={protocol!r} was given")
        return {}
    if protocol is None:
        return dict(next(iter(protocols.values())))
    if protocol not in protocols:
        from .errors import UnknownNameError

        raise UnknownNameError(f"protocol of the {dataset} reproduction", protocol, protocols)
    return dict(protocols[protocol])


def reproduction_configs(dataset: str, profile: str | None = None, seeds: Sequence[int] | None = None,
                         methods: Iterable[str] | None = None, protocol: str | None = None,
                         **overrides: Any) -> list[RunConfig]:
    """Every run of the reproduction of ``dataset`` in ``profile`` (seeds: the profile's), under ``protocol``
    (CG-MNIST: the current ``mmlab-2`` by default, or the first, ``mmlab-1``; :data:`PLAN_PROTOCOLS`)."""
    prof = resolve_profile(profile)
    settings = {**RUN_SETTINGS.get(dataset, {}), **overrides}
    given = dict(settings.get("dataset_options", {}))
    if protocol is None and given.get("protocol") in PLAN_PROTOCOLS.get(dataset, {}):
        protocol = given["protocol"]  # e.g. sweep --plan --data-option protocol=mmlab-1: that protocol's plan
    settings["dataset_options"] = {**plan_protocol_options(dataset, protocol), **given}
    return [RunConfig.from_profile(dataset=dataset, method=p.method, method_options=p.method_options,
                                   seed=seed, profile=prof.name, **settings)
            for p in plan(dataset, methods) for seed in (prof.seeds if seeds is None else seeds)]


def plan_records(records: Iterable[Mapping[str, Any]], dataset: str, profile: str = "full",
                 protocol: str | None = None) -> list[Mapping[str, Any]]:
    """The records among ``records`` that are runs of ``dataset``'s plan in ``profile`` under ``protocol``
    (:func:`reproduction_configs`, every seed of the profile): a record with other settings -- a calibration
    run, another protocol's run, another option -- is not a seed of the plan's rows, even in the same folder."""
    prof = resolve_profile(profile)
    keys = {c.key for c in reproduction_configs(dataset, profile, seeds=range(max(prof.seeds) + 1),
                                                protocol=protocol)}
    return [r for r in records if r.get("key") in keys]


#: chapter 6's training schedules, recorded per seed in the full profile (``sweep --study schedules``)
SCHEDULES: list[Planned] = [Planned("udi"), Planned("mla"), Planned("reconboost"), Planned("relearning")]
#: UDI's ablations (the seed's), recorded for one seed
UDI_ABLATIONS: list[Planned] = [Planned("udi", {"anchor": "color"}), Planned("udi", {"controller": "static"}),
                                Planned("udi", {"complementarity": False}), Planned("udi", {"consistency": False})]


def schedule_configs(profile: str = "full", seeds: Sequence[int] = (0, 1, 2), dataset: str = "cgmnist",
                     ablation_seeds: Sequence[int] = (0,)) -> list[RunConfig]:
    """Chapter 6's records: each schedule for ``seeds``, UDI's ablations for ``ablation_seeds``; on
    CG-MNIST (the default) or the audio-visual digits."""
    runs = [(p, seed) for p in SCHEDULES for seed in seeds]
    if dataset == "cgmnist":
        runs += [(p, seed) for p in UDI_ABLATIONS for seed in ablation_seeds]
    settings = {**RUN_SETTINGS.get(dataset, {}), "dataset_options": plan_protocol_options(dataset)}
    return [RunConfig.from_profile(dataset=dataset, method=p.method, method_options=p.method_options, seed=seed,
                                   profile=profile, **settings) for p, seed in runs]


def schedule_table(records: Sequence[Mapping[str, Any]], dataset: str = "cgmnist",
                   profile: str = "full") -> pd.DataFrame:
    """Chapter 6's recorded runs (:func:`schedule_configs`) as :func:`reproduction_table` shows a plan: per
    schedule and ablation, our mean ± std over the recorded seeds, or *missing*; a record with other settings
    (another profile, protocol or option) is not one of them. No published column: the papers' figures for
    these methods come from other protocols (chapter 7 lists them apart)."""
    return _planned_table(records, schedule_configs(profile, dataset=dataset), dataset)


#: the field's other methods, each explained in the chapter where its idea belongs (MILES and MSLR in chapter 2,
#: uncertainty weighting in chapter 4, CGGM and MMCosine in chapter 3, UME and UMT in chapter 6), recorded per seed
#: in the full profile (``sweep --study field``), each with its default options (MSLR: the dynamic strategy from the
#: base rate, since keep's rates would need a unimodal search per seed); MMPareto's Table 3 has none of them
FIELD_METHODS: list[Planned] = [Planned("uncertainty"), Planned("cggm"), Planned("mmcosine"), Planned("ume"),
                                Planned("umt"), Planned("sample_valuation"), Planned("inforeg"),
                                Planned("cml"), Planned("amco"),
                                Planned("mbsd"), Planned("lfm"), Planned("miles"), Planned("mslr")]


def field_configs(profile: str = "full", seeds: Sequence[int] = (0, 1, 2), dataset: str = "cgmnist") -> list[RunConfig]:
    """The full-profile records of :data:`FIELD_METHODS`, under the dataset's current protocol."""
    settings = {**RUN_SETTINGS.get(dataset, {}), "dataset_options": plan_protocol_options(dataset)}
    return [RunConfig.from_profile(dataset=dataset, method=p.method, method_options=p.method_options, seed=seed,
                                   profile=profile, **settings) for p in FIELD_METHODS for seed in seeds]


def field_table(records: Sequence[Mapping[str, Any]], dataset: str = "cgmnist", profile: str = "full") -> pd.DataFrame:
    """:data:`FIELD_METHODS`' recorded runs as :func:`schedule_table` shows chapter 6's: recorded or *missing*, no
    published column (none of their papers reports CG-MNIST)."""
    return _planned_table(records, field_configs(profile, dataset=dataset), dataset)


def _planned_table(records: Sequence[Mapping[str, Any]], configs: Sequence[RunConfig], dataset: str) -> pd.DataFrame:
    keys = {c.key for c in configs}
    labels = list(dict.fromkeys(c.label for c in configs))
    return reproduction_table([r for r in records if r.get("key") in keys], dataset, labels=labels,
                              beside_published=False, planned=labels)


def _mean_std(mean: float, std: float | None) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.2f} ± {std:.2f}" if std is not None and pd.notna(std) else f"{mean:.2f}"


def short_device(description: str) -> str:
    """``"cuda (NVIDIA H100 80GB HBM3)"`` -> ``"H100 80GB HBM3"``, ``"cpu"`` -> ``"CPU"``: the device
    column of the reproduction table (a full-profile run may come from a CPU; the table says so)."""
    text = str(description)
    if text.startswith("cuda (") and text.endswith(")"):
        return text[len("cuda ("):-1].replace("NVIDIA ", "")
    return text.upper() if text in ("cpu", "mps") else text


def _check_one_run_per_seed(records: Sequence[Mapping[str, Any]]) -> None:
    """A table row averages one run per seed of one data protocol: two records of a label and seed (a calibration
    run beside the plan's, in the same folder), or records of two protocols, would be averaged as if they were
    seeds of one run."""
    from .results import record_protocol

    protocols = {record_protocol(r) for r in records} - {None}
    if len(protocols) > 1:
        raise ValueError(f"the records were made under {len(protocols)} data protocols ({', '.join(sorted(protocols))}); "
                         "a table shows one: pass one protocol's runs (mmlab.reproduction.plan_records)")
    seen: dict[tuple[str, int], str] = {}
    for r in records:
        at = (r["label"], r["config"]["seed"])
        if at in seen:
            raise ValueError(f"two records of {at[0]}, seed {at[1]} ({seen[at]} and {r.get('key')}): a table row "
                             "averages one run per seed; pass the plan's runs (mmlab.reproduction.plan_records)")
        seen[at] = r.get("key")


def reproduction_table(records: Sequence[Mapping[str, Any]], dataset: str,
                       labels: Sequence[str] | None = None, beside_published: bool | None = None,
                       planned: Iterable[str] | None = None, protocol: str | None = None) -> pd.DataFrame:
    """One row per planned run and per published method of ``dataset``: our mean ± std over seeds
    (accuracy, macro-F1, each modality; the std is the sample std, over seeds), the device(s) it was
    trained on, the published figure, the difference, and a status.

    ``records`` are the recorded runs to show (e.g. ``ResultsStore().records(profile="full",
    dataset=...)``); runs of other datasets are ignored. The published figures and the difference are
    shown only beside ``full``-profile records (``beside_published=None``: when every record is one), so a
    quick or smoke run is never set against a paper's number as if it reproduced it. ``planned``: the labels
    whose absence reads *missing* (default: the dataset's plan); any other reads *not implemented*. ``protocol``:
    the data protocol the records were made under, for the table's note (``attrs["protocol"]``; default the
    records' own, or the current one where there are none); pass one protocol's records (:func:`plan_records`), since runs of two protocols would be
    averaged as seeds of one row.
    """
    records = [r for r in records if r["config"]["dataset"] == dataset]
    _check_one_run_per_seed(records)
    if beside_published is None:
        beside_published = all(r["config"].get("profile") == "full" for r in records)
    ours = final_table(records) if records else pd.DataFrame()
    pub = published(dataset)
    rows = []
    order = list(labels) if labels is not None else [p.label for p in PLANS.get(dataset, [])]
    order += [m for m in pub.index if m not in order] if beside_published else []
    implemented = set(planned) if planned is not None else {p.label for p in PLANS.get(dataset, [])}
    from .data.registry import get_dataset

    modality_columns = [m for m in get_dataset(dataset).modalities if f"acc/{m} (%)" in ours.columns]
    devices: dict[str, set[str]] = {}
    for r in records:
        if r.get("provenance", {}).get("device"):
            devices.setdefault(r["label"], set()).add(short_device(r["provenance"]["device"]))
    for label in order:
        row: dict[str, Any] = {"method": label}
        if label in ours.index:
            r = ours.loc[label]
            row.update(status="recorded", seeds=str(int(r["seeds"])), epochs=str(int(r["epochs"])),
                       profile=r["profile"],
                       **{"acc (%)": _mean_std(r["acc (%)"], r.get("acc std")),
                          "macro-F1 (%)": _mean_std(r["f1 (%)"], r.get("f1 std"))},
                       **{f"{m} (%)": _mean_std(r.get(f"acc/{m} (%)"), r.get(f"acc/{m} std"))
                          for m in modality_columns})
            if devices:
                row["device"] = " + ".join(sorted(devices.get(label, ())))
            ours_acc = float(r["acc (%)"])
        else:
            row["status"] = "missing" if label in implemented else "not implemented"
            ours_acc = float("nan")
        if beside_published and label in pub.index and "published acc (%)" in pub.columns:
            published_acc = pub.loc[label, "published acc (%)"]
            for column in pub.columns:
                value = pub.loc[label, column]
                row[column] = "" if value is None or pd.isna(value) else f"{value:.2f}"
            if published_acc is not None and pd.notna(published_acc) and pd.notna(ours_acc):
                row["difference (points)"] = f"{ours_acc - float(published_acc):+.2f}"
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("method").fillna("")
    frame.attrs["source"] = pub.attrs.get("source", "")
    if protocol is None and records and dataset in PLAN_PROTOCOLS:
        from .results import record_protocol

        protocol = record_protocol(records[0])  # the records' own (one protocol: checked above)
    frame.attrs["protocol"] = protocol_note(dataset, protocol if protocol in PROTOCOL_NOTES.get(dataset, {}) else None)
    return frame


def epoch_selection_table(records: Sequence[Mapping[str, Any]], dataset: str) -> pd.DataFrame:
    """Per recorded method of ``dataset``: the test accuracy (%, mean over seeds) at the **last** epoch (what
    the book reports), at the epoch of best **validation** accuracy, and at the epoch of best **test** accuracy,
    which is what the original scripts report; then the published figure and what is left of the difference
    once our runs are selected the original scripts' way.

    Selecting on the test set can only raise a run's figure (``optimism (points)`` >= 0): the table says how
    much of a gap to a published number the protocol of selection explains, from our own recorded histories.
    A run without a per-epoch test accuracy or a ``best_val`` is left out; a method without a record has no row.
    """
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for r in records:
        if r["config"]["dataset"] != dataset:
            continue
        history = [h for h in r.get("history", ()) if h.get("test/acc") is not None]
        if not history or "best_val" not in r:
            continue
        rows.setdefault(r["label"], []).append(  # best_val: the epoch of best validation accuracy (make_record)
            (history[-1]["test/acc"], r["best_val"]["test/acc"], max(h["test/acc"] for h in history)))
    pub = published(dataset)
    order = [p.label for p in PLANS.get(dataset, []) if p.label in rows] + sorted(set(rows) - {
        p.label for p in PLANS.get(dataset, [])})
    # means over seeds computed as analysis.final_table computes the tables' (100 * each, then a pandas mean):
    # the same runs must print the same last-epoch figure here and there, to the last digit
    runs = pd.DataFrame([(label, 100 * last, 100 * val, 100 * test) for label in order
                         for last, val, test in rows[label]], columns=["method", "last", "val", "test"])
    means = runs.groupby("method", sort=False)[["last", "val", "test"]].mean()
    table = []
    for label in order:
        last, val, test = means.loc[label]
        row: dict[str, Any] = {"method": label, "seeds": len(rows[label]), "last epoch (%)": last,
                               "best-validation epoch (%)": val, "best-test epoch (%)": test,
                               "optimism (points)": test - last}
        if label in pub.index and pd.notna(pub.loc[label].get("published acc (%)")):
            row["published acc (%)"] = float(pub.loc[label, "published acc (%)"])
            row["left after test selection (points)"] = test - row["published acc (%)"]
        table.append(row)
    columns = ["method", "seeds", "last epoch (%)", "best-validation epoch (%)", "best-test epoch (%)",
               "optimism (points)", "published acc (%)", "left after test selection (points)"]
    return pd.DataFrame(table, columns=columns).set_index("method")


def order_agreement(records: Sequence[Mapping[str, Any]], dataset: str) -> pd.DataFrame:
    """Every pair of methods of ``dataset`` with both recorded runs and a published accuracy: which of
    the two is ahead in our runs (mean test accuracy over seeds) and in the paper, and whether the two
    orders agree.

    Our levels differ from the paper's for reasons of protocol (the reproduction chapter); what a method paper claims
    is an order -- this method above those baselines. One row per pair, with our gap and the paper's in
    points and ``agrees`` (None where either gap is exactly 0: a tie orders nothing). The frame's
    ``attrs`` hold the counts ``agree`` and ``disagree`` and Kendall's tau over the ordered pairs,
    ``(agree - disagree) / (agree + disagree)`` (1: the same order, -1: reversed; None without pairs). A
    tied pair is left out, which makes this Goodman and Kruskal's gamma; without ties (accuracies to many
    decimals rarely tie) it is Kendall's tau.
    Unimodal runs are left out: the paper's table has no accuracy of theirs to order.
    """
    pub = published(dataset)
    records = [r for r in records if r["config"]["dataset"] == dataset]
    ours = final_table(records) if records else pd.DataFrame()
    ours_acc = ours["acc (%)"] if "acc (%)" in ours.columns else pd.Series(dtype=float)
    pub_acc = pub["published acc (%)"].dropna() if "published acc (%)" in pub.columns else pd.Series(dtype=float)
    order = [p.label for p in PLANS.get(dataset, [])]
    methods = [m for m in order + sorted(set(ours_acc.index) - set(order))
               if m in ours_acc.index and m in pub_acc.index]
    rows = []
    for i, first in enumerate(methods):
        for second in methods[i + 1:]:
            our_gap = float(ours_acc[first] - ours_acc[second])
            published_gap = float(pub_acc[first] - pub_acc[second])
            agrees = None if our_gap == 0 or published_gap == 0 else (our_gap > 0) == (published_gap > 0)
            rows.append({"first": first, "second": second, "our gap (points)": our_gap,
                         "published gap (points)": published_gap, "agrees": agrees})
    frame = pd.DataFrame(rows, columns=["first", "second", "our gap (points)", "published gap (points)", "agrees"])
    frame["agrees"] = frame["agrees"].astype(object)  # True, False or None (Python's), not numpy booleans
    agree = int((frame["agrees"] == True).sum())  # noqa: E712 -- None (a tie) counts as neither
    disagree = int((frame["agrees"] == False).sum())  # noqa: E712
    frame.attrs.update(agree=agree, disagree=disagree, methods=methods,
                       kendall_tau=(agree - disagree) / (agree + disagree) if agree + disagree else None)
    return frame


#: How close our mean must come to a published accuracy, in points, for its level to count as reproduced.
LEVEL_TOLERANCE = 2.0


def reproduction_summary(records: Sequence[Mapping[str, Any]], dataset: str,
                         tolerance: float = LEVEL_TOLERANCE) -> dict[str, Any]:
    """What the ``full``-profile ``records`` of ``dataset`` reproduce, for the reproduction chapter's account.

    * ``complete`` / ``partial`` / ``missing``: the planned runs with all of the full profile's seeds
      recorded, with some (``partial`` maps each to its number of seeds), with none;
    * ``compared``: the recorded methods with a published accuracy, ``differences`` ours minus published
      (points, mean over seeds), ``within`` those within ``tolerance`` points: the **level**;
    * ``agree``, ``disagree``, ``kendall_tau``: the pairs of methods in the paper's **order**
      (:func:`order_agreement`);
    * ``level`` and ``order``: ``"reproduced"``, ``"partly reproduced"``, ``"not reproduced"`` or ``None`` (nothing to
      compare). The level is reproduced when every compared method is within the tolerance; the order
      when no pair is reversed, not when tau <= 0.
    """
    records = [r for r in records if r["config"]["dataset"] == dataset and r["config"].get("profile") == "full"]
    planned_seeds = len(resolve_profile("full").seeds)
    seeds: dict[str, set[int]] = {}
    for r in records:
        seeds.setdefault(r["label"], set()).add(int(r["config"]["seed"]))
    planned = [p.label for p in PLANS.get(dataset, [])]
    out: dict[str, Any] = {
        "complete": [m for m in planned if len(seeds.get(m, ())) >= planned_seeds],
        "partial": {m: len(seeds[m]) for m in planned if 0 < len(seeds.get(m, ())) < planned_seeds},
        "missing": [m for m in planned if m not in seeds],
        "planned_seeds": planned_seeds,
    }
    pub = published(dataset)
    pub_acc = pub["published acc (%)"].dropna() if "published acc (%)" in pub.columns else pd.Series(dtype=float)
    ours = final_table(records)["acc (%)"] if records else pd.Series(dtype=float)
    compared = [m for m in pub_acc.index if m in ours.index]
    differences = {m: float(ours[m] - pub_acc[m]) for m in compared}
    within = [m for m in compared if abs(differences[m]) <= tolerance]
    out.update(compared=compared, differences=differences, within=within, tolerance=tolerance)
    out["level"] = (None if not compared else "reproduced" if len(within) == len(compared)
                    else "not reproduced" if not within else "partly reproduced")
    pairs = order_agreement(records, dataset).attrs if records else {"agree": 0, "disagree": 0, "kendall_tau": None}
    out.update(agree=pairs["agree"], disagree=pairs["disagree"], kendall_tau=pairs["kendall_tau"])
    tau = pairs["kendall_tau"]
    out["order"] = (None if tau is None else "reproduced" if pairs["disagree"] == 0
                    else "not reproduced" if tau <= 0 else "partly reproduced")
    return out


#: what a small profile must show on CG-MNIST for the chapters' demonstration to land (issue 34, point 4): each a
#: criterion, the two runs it compares (``None``: every multimodal run), and the margin in points
PROFILE_EFFECTS: tuple[tuple[str, str | None, str | None, float], ...] = (
    ("the joint loss clearly below the uniform baseline", "uniform", "joint", 10.0),
    ("MMPareto at or above the uniform baseline", "mmpareto", "uniform", 0.0),
    ("gray alone far above colour alone", "unimodal-gray", "unimodal-color", 20.0),
    ("every multimodal method well above chance (twice chance or more)", None, None, 10.0),
)


def profile_effects(test_accuracy: Mapping[str, float], chance: float = 0.1) -> pd.DataFrame:
    """Whether one profile's CG-MNIST runs show the chapters' effects (:data:`PROFILE_EFFECTS`).

    ``test_accuracy`` maps a run's label (``joint``, ``unimodal-gray``) to its test accuracy (a fraction, the mean
    over seeds); a run it lacks makes its criterion *missing*, never passed. Each row: the criterion, the measured
    margin in points (``a - b``; for chance, the lowest multimodal accuracy minus chance), the margin asked for, and
    whether it holds.
    """
    rows = []
    for criterion, above, below, margin in PROFILE_EFFECTS:
        if above is None:
            multimodal = {label: acc for label, acc in test_accuracy.items() if not label.startswith("unimodal")}
            measured = 100 * (min(multimodal.values()) - chance) if multimodal else None
            compared = f"lowest multimodal run ({min(multimodal, key=multimodal.get)}) − chance" if multimodal else ""
        else:
            have = above in test_accuracy and below in test_accuracy
            measured = 100 * (test_accuracy[above] - test_accuracy[below]) if have else None
            compared = f"{above} − {below}"
        holds = "missing" if measured is None else ("yes" if measured >= margin else "no")
        rows.append({"criterion": criterion, "compared": compared, "measured (points)": measured,
                     "asked (points)": margin, "holds": holds})
    return pd.DataFrame(rows).set_index("criterion")
