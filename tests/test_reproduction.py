"""The reproduction plan and table (mmlab.reproduction): missing runs stay missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.config import RunConfig
from mmlab.errors import UnknownNameError
from mmlab.profiles import PROFILES
from mmlab.reproduction import PLANS, epoch_selection_table, reproduction_configs, reproduction_table
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
    planned = {c.key for protocol in ("mmlab-2", "mmlab-1")
               for c in reproduction_configs("cgmnist", "full", protocol=protocol)}
    first = {c.key for c in reproduction_configs("cgmnist", "full", protocol="mmlab-1")}
    # chapter 1's two-stage baseline is not in the CG-MNIST plan (MMPareto lists it for CREMA-D only)
    chapter_1 = {RunConfig.from_profile(method="pretrain_finetune", dataset="cgmnist", seed=seed, profile="full",
                                        dataset_options=protocol).key
                 for seed in PROFILES["full"].seeds for protocol in ({"protocol": "mmlab-1", "probe_agreements": []}, {})}
    from mmlab.calibration import calibration_configs

    calibration = {c.key for c in calibration_configs()}  # chapter 1's calibration of the test agreement
    assert recorded and recorded <= planned | chapter_1 | calibration  # every committed run belongs to a chapter
    assert first <= recorded  # and the whole CG-MNIST reproduction of the first protocol is recorded


def test_the_plan_is_made_under_the_current_protocol_and_the_first_is_still_named():
    from mmlab.calibration import HELDOUT_PROBES, heldout_configs
    from mmlab.data.cgmnist import CURRENT_PROTOCOL
    from mmlab.reproduction import plan_records

    current = reproduction_configs("cgmnist", "full")
    assert CURRENT_PROTOCOL == "mmlab-2"
    assert {c.dataset_options["protocol"] for c in current} == {"mmlab-2"}
    # a full-profile run also evaluates the first protocol's test set and the own colours: the held-out runs
    # of the calibration are the plan's runs of those methods, not a second set
    assert all(c.dataset_options["probe_agreements"] == list(HELDOUT_PROBES) for c in current)
    assert {c.key for c in heldout_configs()} <= {c.key for c in current}
    # the quick profile evaluates no probe; a dataset without protocols gets no option
    assert reproduction_configs("cgmnist", "quick", seeds=[0])[0].dataset_options == {"protocol": "mmlab-2"}
    assert reproduction_configs("avdigits", "full", seeds=[0])[0].dataset_options == {}
    # the first protocol, named, and through --data-option protocol=mmlab-1 (sweep --plan)
    first = reproduction_configs("cgmnist", "full", protocol="mmlab-1")
    assert [c.key for c in first] == [c.key for c in reproduction_configs(
        "cgmnist", "full", dataset_options={"protocol": "mmlab-1"})]
    assert not {c.key for c in first} & {c.key for c in current}
    with pytest.raises(UnknownNameError, match="mmlab-3"):
        reproduction_configs("cgmnist", "full", protocol="mmlab-3")
    with pytest.raises(ValueError, match="no data protocols"):
        reproduction_configs("avdigits", "full", protocol="mmlab-1")
    # plan_records keeps a protocol's plan: not the calibration runs, nor another protocol's, in the same folder
    records = ResultsStore(RESULTS).records(profile="full", dataset="cgmnist")
    kept = plan_records(records, "cgmnist", protocol="mmlab-1")
    assert len(kept) == 36 and {r["key"] for r in kept} == {c.key for c in first}
    assert any(r["label"] == "joint" and r not in kept for r in records)  # the calibration run is left out
    assert not {r["key"] for r in plan_records(records, "cgmnist")} & {r["key"] for r in kept}


def test_a_chapter_s_table_of_full_runs_counts_each_seed_once():
    """The calibration run in the joint loss's folder is not a fourth seed of the plan's joint loss."""
    from mmlab.reproduction import plan_records

    records = ResultsStore(RESULTS).records(profile="full", dataset="cgmnist")
    table = reproduction_table(plan_records(records, "cgmnist", protocol="mmlab-1"), "cgmnist")
    assert table.loc["joint", "seeds"] == "3"
    assert set(table.loc[[p.label for p in PLANS["cgmnist"]], "seeds"]) == {"3"}
    assert table.attrs["protocol"].startswith("Data protocol mmlab-1")
    # every first-protocol record of the folder at once: the calibration run would be a fourth seed, so the
    # table refuses it
    from mmlab.results import record_protocol

    with pytest.raises(ValueError, match="two records of joint, seed 0"):
        reproduction_table([r for r in records if record_protocol(r) == "mmlab-1"], "cgmnist")
    made = {"protocol": "mmlab-2", "probe_agreements": [0.1, 1.0]}
    other = [{**r, "key": r["key"] + "x", "data_protocol": "mmlab-2", "config": {**r["config"], "seed": 7,
                                                                               "dataset_options": made}}
             for r in plan_records(records, "cgmnist", protocol="mmlab-1")[:1]]
    with pytest.raises(ValueError, match="2 data protocols"):
        reproduction_table(plan_records(records, "cgmnist", protocol="mmlab-1") + other, "cgmnist")


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


def _with_history(label, seed, test_accs, val_accs, dataset="cgmnist"):
    record = _record(label, seed, test_accs[-1], dataset=dataset)
    record["history"] = [{"epoch": e + 1, "test/acc": t, "val/acc": v}
                         for e, (t, v) in enumerate(zip(test_accs, val_accs))]
    best = max(record["history"], key=lambda h: h["val/acc"])
    record["best_val"] = {"epoch": best["epoch"], "val/acc": best["val/acc"], "test/acc": best["test/acc"]}
    return record


def test_epoch_selection_table_sets_last_validation_and_test_selected_epochs_apart():
    records = [
        # seed 0: the best test epoch (2) is not the best validation epoch (3), and neither is the last
        _with_history("uniform", 0, [0.50, 0.80, 0.70, 0.60], [0.5, 0.6, 0.9, 0.4]),
        _with_history("uniform", 1, [0.60, 0.70], [0.2, 0.3]),
        _with_history("joint", 0, [0.40, 0.40], [0.1, 0.1]),
        _with_history("joint", 0, [0.99], [0.99], dataset="avdigits"),  # another dataset: ignored
    ]
    table = epoch_selection_table(records, "cgmnist")
    assert list(table.index) == ["joint", "uniform"]  # the plan's order; methods without a record have no row
    uniform = table.loc["uniform"]
    assert uniform["seeds"] == 2
    assert uniform["last epoch (%)"] == pytest.approx(65.0)  # (60 + 70) / 2
    assert uniform["best-validation epoch (%)"] == pytest.approx(70.0)  # (70 + 70) / 2
    assert uniform["best-test epoch (%)"] == pytest.approx(75.0)  # (80 + 70) / 2
    assert uniform["optimism (points)"] == pytest.approx(10.0)
    assert uniform["published acc (%)"] == pytest.approx(75.68)
    assert uniform["left after test selection (points)"] == pytest.approx(75.0 - 75.68)
    assert table.loc["joint", "optimism (points)"] == pytest.approx(0.0)


def test_epoch_selection_of_the_committed_records_never_lowers_a_run():
    records = ResultsStore(RESULTS).records(profile="full", dataset="cgmnist")
    table = epoch_selection_table(records, "cgmnist")
    assert len(table) == len({r["label"] for r in records}) > 0
    assert (table["best-test epoch (%)"] >= table["last epoch (%)"] - 1e-9).all()
    assert (table["best-test epoch (%)"] >= table["best-validation epoch (%)"] - 1e-9).all()


def test_the_last_epoch_column_prints_as_the_tables_print_the_same_runs():
    # 60.6 and 66.41 average to 63.505 exactly: two ways of averaging round it to 63.50 and 63.51, and a
    # reader sees one run set with two figures. The selection table must print what the reproduction table does.
    records = [_with_history("mmpareto", 0, [0.5, 0.606], [0.1, 0.2]),
               _with_history("mmpareto", 1, [0.5, 0.6641], [0.1, 0.2])]
    shown = reproduction_table(records, "cgmnist").loc["mmpareto", "acc (%)"].split(" ± ")[0]
    assert f"{epoch_selection_table(records, 'cgmnist').loc['mmpareto', 'last epoch (%)']:.2f}" == shown
    for r in ResultsStore(RESULTS).records(profile="full", dataset="cgmnist"):
        assert r["final"]["test/acc"] == r["history"][-1]["test/acc"]  # the two tables read the same figure


def test_epoch_selection_table_without_records_is_empty_but_has_its_columns():
    table = epoch_selection_table([], "cremad")
    assert table.empty and "best-test epoch (%)" in table.columns


def test_order_agreement_counts_the_pairs_in_the_papers_order():
    from mmlab.reproduction import order_agreement

    # published (Table 3): mmpareto 81.88 > pcgrad 79.35 > uniform 75.68 > joint 60.50
    records = [_record("mmpareto", 0, 0.60), _record("mmpareto", 1, 0.62), _record("pcgrad", 0, 0.55),
               _record("uniform", 0, 0.58), _record("joint", 0, 0.30), _record("unimodal-gray", 0, 0.99),
               _record("mmpareto", 0, 0.10, dataset="avdigits")]
    frame = order_agreement(records, "cgmnist")
    assert frame.attrs["methods"] == ["joint", "uniform", "pcgrad", "mmpareto"]  # the plan's order; no unimodal
    assert len(frame) == 6
    pair = frame[(frame["first"] == "uniform") & (frame["second"] == "pcgrad")].iloc[0]
    assert pair["agrees"] is False  # ours: uniform 58 > pcgrad 55; published: 75.68 < 79.35
    assert pair["our gap (points)"] == pytest.approx(3.0) and pair["published gap (points)"] == pytest.approx(-3.67)
    mmpareto_uniform = frame[(frame["first"] == "uniform") & (frame["second"] == "mmpareto")].iloc[0]
    assert mmpareto_uniform["our gap (points)"] == pytest.approx(58 - 61)  # the mean over mmpareto's two seeds
    assert frame.attrs["agree"] == 5 and frame.attrs["disagree"] == 1
    assert frame.attrs["kendall_tau"] == pytest.approx(4 / 6)


def test_order_agreement_without_pairs_is_empty():
    from mmlab.reproduction import order_agreement

    for records in ([], [_record("mmpareto", 0, 0.6)], [_record("uniform", 0, 0.6, dataset="avdigits"),
                                                          _record("joint", 0, 0.3, dataset="avdigits")]):
        dataset = records[0]["config"]["dataset"] if records else "cgmnist"
        frame = order_agreement(records, dataset)
        assert frame.empty and frame.attrs["kendall_tau"] is None and list(frame.columns)[-1] == "agrees"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=7, max_size=7, unique=True))
def test_order_agreement_is_one_for_the_papers_order_and_minus_one_reversed(noise):
    """Kendall's tau: +1 when ours rank like the published figures, -1 when exactly reversed, and
    agree + disagree = the number of pairs (no ties among distinct values)."""
    from mmlab.reference import published
    from mmlab.reproduction import order_agreement

    pub = published("cgmnist")["published acc (%)"]
    ranks = pub.rank().astype(int)  # 1..7 over the seven published methods
    for sign in (1, -1):
        # a monotone map of the published rank plus a sub-rank perturbation keeps the order
        records = [_record(m, 0, 0.5 + sign * (ranks[m] + 0.5 * noise[i]) / 100) for i, m in enumerate(pub.index)]
        frame = order_agreement(records, "cgmnist")
        assert frame.attrs["kendall_tau"] == pytest.approx(sign)
        assert frame.attrs["agree"] + frame.attrs["disagree"] == len(frame) == 21


def test_quick_runs_are_never_set_beside_the_published_figures():
    quick = [{**r, "config": {**r["config"], "profile": "quick"}} for r in (_record("uniform", 0, 0.7),)]
    table = reproduction_table(quick, "cgmnist")
    assert table.loc["uniform", "status"] == "recorded"
    assert "published acc (%)" not in table.columns and "difference (points)" not in table.columns
    assert "mmpareto" in table.index  # planned rows stay, as missing
    assert "published acc (%)" in reproduction_table(quick, "cgmnist", beside_published=True).columns


def test_summary_says_whether_level_and_order_are_reproduced():
    from mmlab.reproduction import reproduction_summary

    # published (Table 3): joint 60.50 < uniform 75.68 < mmpareto 81.88
    close = [_record("joint", s, 0.61) for s in (0, 1, 2)] + [_record("uniform", 0, 0.75)]
    summary = reproduction_summary(close + [_record("mmpareto", 0, 0.815)], "cgmnist")
    assert summary["level"] == "reproduced" and summary["order"] == "reproduced"
    assert summary["complete"] == ["joint"] and summary["partial"] == {"uniform": 1, "mmpareto": 1}
    assert "pcgrad" in summary["missing"] and summary["agree"] == 3 and summary["disagree"] == 0
    low = reproduction_summary(close + [_record("mmpareto", 0, 0.30)], "cgmnist")  # far below, and out of order
    assert low["level"] == "partly reproduced" and low["within"] == ["joint", "uniform"]
    assert low["differences"]["mmpareto"] == pytest.approx(30.0 - 81.88)
    assert low["order"] == "not reproduced" and (low["agree"], low["disagree"]) == (1, 2)  # tau -1/3
    mid = reproduction_summary(close + [_record("mmpareto", 0, 0.70)], "cgmnist")  # below uniform only
    assert mid["order"] == "partly reproduced" and (mid["agree"], mid["disagree"]) == (2, 1)
    far = reproduction_summary([_record("joint", 0, 0.9), _record("uniform", 0, 0.2)], "cgmnist")
    assert far["level"] == "not reproduced" and far["order"] == "not reproduced" and far["kendall_tau"] == -1
    quick = [{**r, "config": {**r["config"], "profile": "quick"}} for r in close]
    empty = reproduction_summary(quick, "cgmnist")  # only full-profile records count
    assert empty["level"] is None and empty["order"] is None and len(empty["missing"]) == len(PLANS["cgmnist"])


def test_chapter_6_s_table_shows_recorded_schedules_and_leaves_the_others_missing():
    from mmlab.reproduction import schedule_configs, schedule_table

    configs = {(c.label, c.seed): c for c in schedule_configs("full")}

    def record(label, seed, acc, other_settings=False):
        c = configs[(label, seed)]
        r = _record(label, seed, acc)
        r["config"] = {**r["config"], "method": c.method, "method_options": dict(c.method_options)}
        r["key"] = "other" if other_settings else c.key
        return r

    table = schedule_table([record("udi", 0, 0.6), record("udi", 1, 0.8), record("mla", 0, 0.5, other_settings=True),
                            record("udi-no_consistency", 0, 0.4)])
    assert list(table.index) == ["udi", "mla", "reconboost", "relearning", "udi-color", "udi-static",
                                 "udi-no_complementarity", "udi-no_consistency"]
    assert table.loc["udi", "status"] == "recorded" and table.loc["udi", "acc (%)"] == "70.00 ± 14.14"
    assert table.loc["mla", "status"] == "missing"  # a record with other settings is not one of the planned runs
    assert set(table.loc[["reconboost", "relearning", "udi-color"], "status"]) == {"missing"}
    assert table.loc["udi-no_consistency", "acc (%)"] == "40.00"
    assert "published acc (%)" not in table.columns  # the papers' figures are another protocol's


def test_the_field_s_other_methods_are_a_table_of_their_own_recorded_or_missing(capsys, tmp_path):
    from mmlab.cli import main
    from mmlab.reproduction import FIELD_METHODS, field_configs, field_table

    configs = field_configs("full")
    assert len(configs) == 3 * len(FIELD_METHODS)
    assert {c.dataset_options.get("protocol") for c in configs} == {"mmlab-2"}  # the book's current protocol
    cggm = next(c for c in configs if c.label == "cggm" and c.seed == 0)
    record = _record("cggm", 0, 0.55)
    record["config"] = {**record["config"], "method": "cggm", "method_options": {}}
    record["key"] = cggm.key
    table = field_table([record])
    assert list(table.index) == ["uncertainty", "cggm", "mmcosine", "ume", "umt", "sample_valuation", "inforeg",
                                 "cml", "amco", "mbsd", "lfm", "miles", "mslr"]
    assert table.loc["cggm", "status"] == "recorded" and table.loc["cggm", "acc (%)"] == "55.00"
    assert set(table.loc[["uncertainty", "mmcosine", "ume", "umt"], "status"]) == {"missing"}
    assert main(["sweep", "--study", "field", "--dry-run", "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("39 runs: 0 recorded, 39 to train")
