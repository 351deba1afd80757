"""The reproduction plan and table (mmlab.reproduction): missing runs stay missing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mmlab.errors import UnknownNameError
from mmlab.reproduction import PLANS, reproduction_configs, reproduction_table
from mmlab.results import ResultsStore

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_configs_cover_plan_times_seeds_with_the_profiles_settings():
    configs = reproduction_configs("cgmnist", "full")
    assert len(configs) == len(PLANS["cgmnist"]) * 3
    assert {c.label for c in configs} == {p.label for p in PLANS["cgmnist"]}
    assert all(c.epochs == 100 and c.train_size is None for c in configs)
    assert len({c.key for c in configs}) == len(configs)
    only = reproduction_configs("cgmnist", "smoke", seeds=[4], methods=["mmpareto", "unimodal-gray"])
    assert [(c.label, c.seed) for c in only] == [("unimodal-gray", 4), ("mmpareto", 4)]
    with pytest.raises(UnknownNameError, match="mmpareto"):
        reproduction_configs("cgmnist", "smoke", methods=["mmparetto"])


def test_the_committed_full_records_are_found_by_the_plan():
    records = ResultsStore(RESULTS).records(profile="full", dataset="cgmnist")
    recorded = {r["key"] for r in records}
    planned = {c.key for c in reproduction_configs("cgmnist", "full")}
    assert recorded and recorded <= planned  # every committed run belongs to the reproduction


def _record(label, seed, acc, dataset="cgmnist", device="cuda (NVIDIA H100 80GB HBM3)"):
    method, _, option = label.partition("-")
    return {"label": label, "key": f"{label}{seed}", "provenance": {"device": device},
            "config": {"dataset": dataset, "seed": seed, "profile": "full",
                       "method": method, "method_options": {"modality": option} if option else {}},
            "final": {"epoch": 100, "test/acc": acc, "test/f1": acc - 0.01, "test/acc/gray": acc / 2,
                      "test/acc/color": acc / 3, "test/loss": 1.0, "test/share_acc/gray": 0.1}}


def test_table_shows_mean_std_difference_and_never_fills_a_missing_run():
    records = [_record("uniform", 0, 0.70), _record("uniform", 1, 0.80, device="cpu"), _record("joint", 0, 0.5),
               _record("joint", 0, 0.9, dataset="avdigits")]
    table = reproduction_table(records, "cgmnist")
    uniform = table.loc["uniform"]
    assert uniform["status"] == "recorded" and uniform["seeds"] == "2"
    assert uniform["device"] == "CPU + H100 80GB HBM3" and table.loc["joint", "device"] == "H100 80GB HBM3"
    assert uniform["acc (%)"] == "75.00 ± 7.07"
    assert uniform["published acc (%)"] == "75.68"
    assert uniform["difference (points)"] == "-0.68"
    assert table.loc["joint", "acc (%)"] == "50.00"  # one seed: no spread, and the avdigits run is ignored
    mmpareto = table.loc["mmpareto"]
    assert mmpareto["status"] == "missing" and mmpareto["acc (%)"] == "" and mmpareto["difference (points)"] == ""
    assert mmpareto["published acc (%)"] == "81.88"
    assert list(table.index[:2]) == ["unimodal-gray", "unimodal-color"]
    assert "Table 3" in table.attrs["source"] and "100 epochs" in table.attrs["protocol"]


def test_a_table_without_any_record_renders():
    table = reproduction_table([], "cgmnist")
    assert set(table["status"]) == {"missing"}
    assert "acc (%)" not in table.columns or set(table["acc (%)"]) == {""}
