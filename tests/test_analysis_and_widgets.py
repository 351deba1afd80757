"""Records -> tidy tables, and the kernel-free widget."""

import math

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mmlab.analysis import final_table, history_frame  # noqa: E402
from mmlab.reference import published_cgmnist  # noqa: E402
from mmlab.widgets import figures_to_views, view_switcher  # noqa: E402


def record(label, seed, acc, gray):
    history = [{"epoch": 1, "test/acc": acc / 2, "test/acc/gray": gray, "train/loss": 2.0,
                "train/loss/unimodal/gray": 0.5, "time/train_s": 3.0},
               {"epoch": 2, "test/acc": acc, "test/acc/gray": gray, "test/loss": 1.0, "train/loss": 1.0}]
    final = {"epoch": 2, "test/acc": acc, "test/acc/gray": gray, "test/f1": acc, "test/loss": 1.0,
             "test/share_acc/gray": 0.1, "test/loss/unimodal/gray": 0.7}
    return {"label": label, "config": {"seed": seed, "profile": "smoke"}, "history": history, "final": final}


def test_history_frame_splits_metric_names():
    frame = history_frame([record("uniform", 0, 0.6, 0.9)])
    row = frame[(frame.metric == "acc") & (frame.modality == "gray") & (frame.epoch == 2)]
    assert len(row) == 1 and row.value.item() == 0.9 and row.split.item() == "test"
    assert set(frame[frame.metric == "acc"].modality) == {"fused", "gray"}
    term = frame[frame.metric == "loss:unimodal/gray"]
    assert len(term) == 1 and term.value.item() == 0.5
    assert set(frame.method) == {"uniform"}


def test_final_table_averages_seeds_in_percent():
    table = final_table([record("joint", 0, 0.5, 0.2), record("joint", 1, 0.7, 0.4), record("uniform", 0, 0.9, 0.8)])
    assert table.loc["joint", "seeds"] == 2
    assert math.isclose(table.loc["joint", "acc (%)"], 60.0)
    assert math.isclose(table.loc["joint", "acc std"], (2 * 10**2) ** 0.5)  # sample std of 50, 70
    assert "share_acc/gray (%)" not in table.columns and "loss (%)" not in table.columns
    assert not [c for c in table.columns if c.startswith("loss")]  # a head's loss is not a percentage
    assert math.isnan(table.loc["uniform", "acc std"])


def test_published_numbers_are_exactly_those_of_the_paper():
    published = published_cgmnist()
    assert published.loc["mmpareto", "published acc (%)"] == 81.88
    assert published.loc["joint", "published macro-F1 (%)"] == 59.89
    assert "Table 3" in published.attrs["source"]


def _figure():
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    return fig


def test_view_switcher_links_selectors_in_the_browser():
    views = figures_to_views({m: {q: _figure() for q in ["a", "b", "c"]} for m in ["x", "y"]}, dpi=20)
    assert all(v.startswith(b"\x89PNG") for inner in views.values() for v in inner.values())
    box = view_switcher(views, outer_label="method", inner_label="quantity")
    outer, inner, top = box.children
    assert isinstance(top, widgets.Stack) and len(top.children) == 2
    assert all(len(stack.children) == 3 for stack in top.children)
    assert outer.style.description_width == inner.style.description_width == "initial"  # labels shown whole
    targets = {(link.source[0].model_id, link.source[1], link.target[0].model_id, link.target[1])
               for link in box.links}
    assert (outer.model_id, "index", top.model_id, "selected_index") in targets
    assert all((inner.model_id, "index", stack.model_id, "selected_index") in targets for stack in top.children)


def test_view_switcher_refuses_uneven_views():
    with pytest.raises(ValueError, match="offers"):
        view_switcher({"x": {"a": b"1"}, "y": {"b": b"2"}}, outer_label="m", inner_label="q")


def test_slider_grid_links_two_sliders_and_starts_at_the_chosen_values():
    from mmlab.widgets import slider_grid

    views = figures_to_views({a: {b: _figure() for b in [0.2, 0.4, 0.6]} for a in [0.5, 1.0]}, dpi=20)
    box = slider_grid(views, outer_label="s_a", inner_label="s_v", outer_value=1.0, inner_value=0.4)
    outer, inner, top = box.children
    assert isinstance(outer, widgets.SelectionSlider) and isinstance(inner, widgets.SelectionSlider)
    assert top.selected_index == 1 and all(stack.selected_index == 1 for stack in top.children)
    targets = {(link.source[0].model_id, link.source[1], link.target[0].model_id, link.target[1])
               for link in box.links}
    assert (outer.model_id, "index", top.model_id, "selected_index") in targets
    assert all((inner.model_id, "index", stack.model_id, "selected_index") in targets for stack in top.children)
    # labels longer than the default label width are shown whole, not cut to "s, modalit..."
    assert outer.style.description_width == inner.style.description_width == "initial"


@pytest.mark.parametrize("epochs, expected", [([2], [2]), ([1, 2], [1, 2]), (list(range(1, 31)), None)])
def test_epoch_axes_tick_whole_numbers_only(epochs, expected):
    from mmlab.plots import integer_epochs

    fig, ax = plt.subplots()
    ax.plot(epochs, [1.0] * len(epochs), marker="o")
    integer_epochs(ax)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    plt.close(fig)
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert low <= min(epochs) and max(epochs) <= high  # every point stays on the axis
    if expected is not None:  # one point: its own epoch only; two: left as they are
        assert ticks == expected


def test_curve_panels_are_titled_as_the_tables_name_the_methods():
    from mmlab.plots import plot_curves

    frame = history_frame([record("ogm_ge", 0, 0.6, 0.9), record("unimodal-gray", 0, 0.5, 0.5),
                           record("mystery", 0, 0.4, 0.4)])
    grid = plot_curves(frame, "acc", methods=["unimodal-gray", "ogm_ge", "mystery"])
    titles = [ax.get_title() for ax in grid.axes.flat]
    plt.close(grid.figure)
    assert titles == ["Gray alone", "OGM-GE", "mystery"]  # in the order asked for; an unknown label as it is
