"""mmlab.calibration: a run's accuracy at any test agreement, off the line through its two end points, and the
fit of the agreement on one published row; the line itself is checked against simulation and real probe splits."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.calibration import accuracy_at_agreement, agreement_curve, fit_test_agreement
from mmlab.data.cgmnist import _colour_classes


def record(low, high, label="joint", seed=0, probes=(1.0,), mid=None, **options):
    final = {"test/acc": low, "test@agreement=1/acc": high, "test/acc/gray": 0.1, "test@agreement=1/acc/gray": 0.1}
    if mid is not None:
        final["test@agreement=0.5/acc"] = mid
    return {"label": label, "key": f"k{seed}{label}", "final": final,
            "config": {"seed": seed, "dataset_options": {"probe_agreements": list(probes), **options}}}


@given(low=st.floats(0, 1), high=st.floats(0, 1), a=st.floats(0.1, 1))
def test_the_line_passes_through_both_end_points_and_is_linear(low, high, a):
    r = record(low, high)
    assert math.isclose(accuracy_at_agreement(r, 0.1), low, abs_tol=1e-12)
    assert math.isclose(accuracy_at_agreement(r, 1.0), high, abs_tol=1e-12)
    between = low + (a - 0.1) / 0.9 * (high - low)
    assert math.isclose(accuracy_at_agreement(r, a), between, abs_tol=1e-12)


def test_the_line_is_what_a_model_scores_in_expectation_under_the_coupled_draws():
    """Simulation: a model that is right with probability 0.99 when a digit wears its own colour and 0.3 when it
    wears a random class's (independent of the coupling's draws) scores on average on the line at every agreement."""
    g = torch.Generator().manual_seed(0)
    n = 200_000
    labels = torch.randint(0, 10, (n,), generator=g)
    chance = torch.randint(0, 10, (n,), generator=g)
    coin = torch.rand(n, generator=g)
    other = (labels + 1 + torch.randint(0, 9, (n,), generator=g)) % 10
    right_own, right_other = torch.rand(n, generator=g) < 0.99, torch.rand(n, generator=g) < 0.3
    # the model reads the colour: right on a digit in its own colour w.p. 0.99, else w.p. 0.3 (0.3 also for chance
    # colours that happen to be the label's, which the line's A(0.1) counts the same way)
    def score(a):
        classes = _colour_classes(labels, a, chance, coin, other)
        return torch.where(classes == labels, right_own, right_other).double().mean().item()

    low, high = score(0.1), score(1.0)
    for a in (0.2, 0.467, 0.8):
        line = low + (a - 0.1) / 0.9 * (high - low)
        assert abs(score(a) - line) < 0.005  # a few standard errors of a mean over 200,000 digits


def test_below_independence_or_on_another_test_colouring_the_line_is_refused():
    with pytest.raises(ValueError, match=r"must lie in \[0.1, 1\]"):
        accuracy_at_agreement(record(0.3, 0.9), 0.05)
    with pytest.raises(ValueError, match="not coloured independently"):
        accuracy_at_agreement(record(0.3, 0.9, test_agreement=0.4), 0.5)
    with pytest.raises(KeyError, match="test@agreement=1/acc"):
        accuracy_at_agreement({**record(0.3, 0.9), "final": {"test/acc": 0.3}}, 0.5)


def test_the_fit_solves_the_mean_line_for_the_published_figure():
    runs = [record(0.30, 0.98, seed=0), record(0.38, 1.00, seed=1), record(0.5, 0.5, label="uniform")]
    fit = fit_test_agreement(runs, 60.5)
    low, high = 34.0, 99.0  # the two joint runs' means, in %
    assert math.isclose(fit.independent, low) and math.isclose(fit.own_colours, high)
    assert math.isclose(fit.value, 0.1 + 0.9 * (60.5 - low) / (high - low))
    assert fit.seeds == (0, 1) and fit.method == "joint"
    mean_at_fit = sum(accuracy_at_agreement(r, fit.value) for r in runs[:2]) / 2
    assert math.isclose(100 * mean_at_fit, 60.5, abs_tol=1e-9)  # the fitted value reproduces the row it was fitted on
    with pytest.raises(ValueError, match="cannot bring them to 99.50%"):
        fit_test_agreement(runs, 99.5)
    with pytest.raises(ValueError, match="no calibration record of method 'mgda'"):
        fit_test_agreement(runs, 60.5, method="mgda")


def test_the_curve_sets_measured_probes_beside_the_line():
    curve = agreement_curve([record(0.3, 0.9, probes=(0.5, 1.0), mid=0.62)], agreements=[0.1, 0.5, 1.0])
    fused = curve[curve.modality == "fused"].set_index("agreement")
    assert math.isclose(fused.at[0.5, "line (%)"], 100 * (0.3 + 0.4 / 0.9 * 0.6))
    assert math.isclose(fused.at[0.5, "measured (%)"], 62.0)
    assert set(curve.modality) == {"fused", "gray"}


def test_the_heldout_table_shows_the_fitted_row_by_construction_and_never_fills_a_missing_row():
    from mmlab.calibration import heldout_table

    calibration = [record(0.30, 0.98, seed=0), record(0.38, 1.00, seed=1)]
    fit = fit_test_agreement(calibration, 60.5)
    heldout = [{"label": "uniform", "final": {"test/acc": a}} for a in (0.70, 0.74)]
    table = heldout_table(calibration, heldout, fit.value, {"joint": (60.5, 0), "uniform": (75.68, 0),
                                                            "mmpareto": (81.88, 0)})
    assert table.loc["joint", "row"] == "fitted" and table.loc["joint", "ours (%)"] == "60.50 ± 3.93"  # 57.72 and 63.28
    assert table.loc["joint", "difference (points)"] == "+0.00"
    assert table.loc["uniform", "ours (%)"] == "72.00 ± 2.83" and table.loc["uniform", "difference (points)"] == "-3.68"
    assert table.loc["mmpareto", "ours (%)"] == "missing" and table.loc["mmpareto", "difference (points)"] == ""
    assert table.loc["mmpareto", "row"] == "held out"


def test_the_heldout_summary_measures_the_rows_against_the_aim():
    import pandas as pd

    from mmlab.calibration import heldout_summary

    table = pd.DataFrame({"row": ["fitted", "held out", "held out", "held out"],
                          "ours (%)": ["60.50 ± 1.00", "72.00", "85.00", "missing"],
                          "published acc (%)": [60.5, 75.68, 79.35, 81.88],
                          "difference (points)": ["+0.00", "-3.68", "+5.65", ""]},
                         index=["joint", "uniform", "pcgrad", "mmpareto"])
    text = heldout_summary(table)
    assert text.startswith("2 of 3 held-out rows recorded: their mean absolute difference from the published figure "
                           "is 4.67 points")
    assert "the largest 5.65" in text and "Kendall's tau against the published order is 1.00" in text
    none = table.assign(**{"ours (%)": ["60.50", "missing", "missing", "missing"]})
    assert heldout_summary(none).startswith("No held-out row is recorded")


def test_the_frozen_protocol_is_the_fit_of_the_committed_calibration_runs_it_names():
    """mmlab-2's test agreement is what fit_test_agreement gives on the calibration records it names (rounded to
    three decimals), the joint loss's 60.50 the only row fitted; every other knob is mmlab-1's."""
    from pathlib import Path

    from mmlab.calibration import calibration_configs
    from mmlab.data.cgmnist import get_protocol
    from mmlab.reference import CGMNIST_PUBLISHED
    from mmlab.results import ResultsStore

    frozen = get_protocol("mmlab-2")
    store = ResultsStore(Path(__file__).resolve().parent.parent / "results")
    records = [r for r in (store.load(c) for c in calibration_configs()) if r is not None and r["key"] in frozen.fitted_on]
    assert {r["key"] for r in records} == set(frozen.fitted_on) and records
    fit = fit_test_agreement(records, CGMNIST_PUBLISHED["joint"][0])
    assert frozen.settings == {"test_agreement": round(fit.value, 3)}
    first = get_protocol("mmlab-1").values()
    assert {k: v for k, v in frozen.values().items() if v != first[k]} == {"test_agreement": round(fit.value, 3)}


def test_the_heldout_runs_are_the_six_other_rows_under_the_frozen_protocol():
    from mmlab.calibration import HELDOUT_METHODS, heldout_configs
    from mmlab.reference import CGMNIST_PUBLISHED
    from mmlab.results import data_protocol

    configs = heldout_configs()
    assert {c.method for c in configs} == set(CGMNIST_PUBLISHED) - {"joint"} == set(HELDOUT_METHODS)
    assert len(configs) == 18 and {c.seed for c in configs} == {0, 1, 2} and {c.profile for c in configs} == {"full"}
    assert {data_protocol(c.to_dict()) for c in configs} == {"mmlab-2"}


def test_the_protocol_story_is_told_in_chapter_1s_order_and_counted_from_the_records_alone():
    """The Build status page's story (issue 34, point 6): its steps in chapter 1's order, every count from the
    records given -- a field method's run under the frozen protocol is no held-out run, and a fit over other
    calibration runs than the frozen protocol's leaves the frozen value as it was, and says so."""
    from mmlab.calibration import protocol_story
    from mmlab.sensitivity import study_configs

    def full(rec, dataset_protocol=None):
        rec["config"].update(dataset="cgmnist", profile="full")
        if dataset_protocol:
            rec["data_protocol"] = dataset_protocol
        return rec

    calibration = [full(record(0.30, 0.98, seed=0, probes=(0.3, 0.5, 1.0), mid=0.6)),
                   full(record(0.38, 1.00, seed=1, probes=(0.3, 0.5, 1.0), mid=0.7))]
    from mmlab.calibration import heldout_configs

    keys = {c.seed: c.key for c in heldout_configs() if c.method == "uniform"}
    heldout = [full({"label": "uniform", "key": keys[s], "final": {"test/acc": a},
                     "config": {"seed": s, "dataset_options": {}}}, "mmlab-2") for s, a in ((0, 0.70), (1, 0.74))]
    field = [full({"label": "cggm", "key": "c0", "final": {"test/acc": 0.5},
                   "config": {"seed": 0, "dataset_options": {}}}, "mmlab-2")]
    study = [{"label": "joint", "key": study_configs()[0].key, "final": {},
              "config": {"dataset": "cgmnist", "profile": "sensitivity", "seed": 0, "dataset_options": {}}}]
    steps = protocol_story(calibration + heldout + field + study)
    assert [title for title, _ in steps] == ["The unknown generator", "The knobs", "What each knob does",
                                             "One knob, fitted on one row", "The held-out rows"]
    told = dict(steps)
    assert told["What each knob does"].startswith(f"1 of the sensitivity study's {len(study_configs())} runs recorded")
    fitted = fit_test_agreement(calibration, 60.5).value
    assert f"{fitted:.3f} over 2 of 3 calibration runs (seeds 0, 1)" in told["One knob, fitted on one row"]
    assert "Frozen as `mmlab-2` at 0.449, from the run recorded then (64ab0064575e)" in told["One knob, fitted on one row"]
    assert told["The held-out rows"].startswith("2 of 18 held-out runs recorded under `mmlab-2`. 1 of 6 held-out rows "
                                                "recorded")
    bare = dict(protocol_story(heldout))
    assert bare["One knob, fitted on one row"].startswith("no calibration run")
    assert bare["The held-out rows"] == "they wait for a frozen protocol."
