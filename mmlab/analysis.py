"""Records -> tidy tables, for the chapters' figures and tables.

Metric names in a record's ``history`` read ``split/metric[/modality]``
(``test/acc/gray``, ``train/grad_norm/color``, ``test/f1``); :func:`history_frame`
splits them into columns so that seaborn can facet by method, modality, split.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

FUSED = "fused"


def _split_metric(name: str) -> tuple[str, str, str] | None:
    parts = name.split("/", 2)  # split/metric/modality; a loss term may hold a slash (unimodal/gray)
    if len(parts) == 2:
        return parts[0], parts[1], FUSED
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def _as_list(records) -> list[dict]:
    if isinstance(records, Mapping) and "history" in records:
        return [records]
    if isinstance(records, Mapping):
        return list(records.values())
    return list(records)


def history_frame(records: Iterable[dict] | Mapping[str, dict]) -> pd.DataFrame:
    """One row per (run, epoch, metric): columns ``method, seed, profile, epoch,
    split, metric, modality, value``."""
    rows = []
    for record in _as_list(records):
        label, config = record["label"], record["config"]
        for entry in record["history"]:
            for name, value in entry.items():
                parsed = _split_metric(name)
                if parsed is None or value is None:
                    continue
                split, metric, modality = parsed
                if metric == "loss" and modality != FUSED:  # train/loss/<term>
                    metric, modality = f"loss:{modality}", FUSED
                rows.append(dict(method=label, seed=config["seed"], profile=config["profile"],
                                 epoch=entry["epoch"], split=split, metric=metric,
                                 modality=modality, value=float(value)))
    return pd.DataFrame(rows)


def final_table(records: Iterable[dict] | Mapping[str, dict], split: str = "test") -> pd.DataFrame:
    """Mean and standard deviation over seeds of each run's final metrics, one
    row per method; accuracy in %."""
    rows = []
    for record in _as_list(records):
        final = record["final"]
        row = {"method": record["label"], "seed": record["config"]["seed"],
               "epochs": final["epoch"], "profile": record["config"]["profile"]}
        for name, value in final.items():
            metric = name[len(split) + 1:]
            if name.startswith(f"{split}/") and metric.split("/")[0] not in ("share_acc", "loss"):  # losses: no %
                row[metric] = 100 * value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    metrics = [c for c in frame.columns if c not in ("method", "seed", "epochs", "profile")]
    grouped = frame.groupby("method", sort=False)
    out = grouped[metrics].mean()
    out.columns = [f"{c} (%)" for c in out.columns]
    out.insert(0, "seeds", grouped.size())
    out.insert(1, "epochs", grouped["epochs"].first())
    out.insert(2, "profile", grouped["profile"].first())
    if (grouped.size() > 1).any():
        std = grouped[metrics].std()
        for c in metrics:
            out[f"{c} std"] = std[c]
    return out
