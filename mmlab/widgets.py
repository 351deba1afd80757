"""Widgets that work in Colab *and* in the static book.

A widget whose callbacks run Python needs a live kernel; the rendered book has
none. These explorers pre-render every view and switch between them with
``jslink`` (a link the browser keeps), so the same widget is interactive in
the HTML page, where myst-nb embeds the widget state.
"""

from __future__ import annotations

from typing import Mapping

import ipywidgets as widgets

from .plots import figure_png


def _image(png: bytes) -> widgets.Image:
    return widgets.Image(value=png, format="png", layout=widgets.Layout(max_width="100%"))


# a selector's label shown whole: the default width cuts "s, modality 1" to "s, modalit..."
_WHOLE_LABEL = {"description_width": "initial"}


def view_switcher(views: Mapping[str, Mapping[str, bytes]], *, outer_label: str, inner_label: str):
    """Two selectors over pre-rendered PNGs: ``views[outer][inner]``.

    Every outer entry must offer the same inner keys. The outer choice is a row
    of toggle buttons, the inner one a dropdown; both are linked in the browser
    to the ``selected_index`` of nested :class:`ipywidgets.Stack` containers.
    """
    outer_keys, inner_keys = _keys(views)
    outer = widgets.ToggleButtons(options=outer_keys, description=outer_label, style=_WHOLE_LABEL)
    inner = widgets.Dropdown(options=inner_keys, description=inner_label, style=_WHOLE_LABEL)
    return _linked_stacks(views, outer, inner)


def slider_grid(views: Mapping[object, Mapping[object, bytes]], *, outer_label: str, inner_label: str,
                outer_value=None, inner_value=None):
    """Two sliders over pre-rendered PNGs ``views[outer][inner]`` (a grid of two parameters,
    e.g. the signal strengths of two modalities), linked in the browser like :func:`view_switcher`."""
    outer_keys, inner_keys = _keys(views)
    outer = widgets.SelectionSlider(options=outer_keys, description=outer_label, style=_WHOLE_LABEL,
                                    value=outer_keys[0] if outer_value is None else outer_value)
    inner = widgets.SelectionSlider(options=inner_keys, description=inner_label, style=_WHOLE_LABEL,
                                    value=inner_keys[0] if inner_value is None else inner_value)
    return _linked_stacks(views, outer, inner)


def _keys(views) -> tuple[list, list]:
    outer_keys = list(views)
    inner_keys = list(next(iter(views.values())))
    for key, inner in views.items():
        if list(inner) != inner_keys:
            raise ValueError(f"view {key!r} offers {list(inner)}, expected {inner_keys}")
    return outer_keys, inner_keys


def _linked_stacks(views, outer, inner):
    """Nested stacks of the images, their ``selected_index`` linked to the selectors' ``index``."""
    stacks, links = [], []
    for key in views:
        stack = widgets.Stack([_image(png) for png in views[key].values()], selected_index=inner.index)
        links.append(widgets.jslink((inner, "index"), (stack, "selected_index")))
        stacks.append(stack)
    top = widgets.Stack(stacks, selected_index=outer.index)
    links.append(widgets.jslink((outer, "index"), (top, "selected_index")))
    box = widgets.VBox([outer, inner, top])
    box.links = links  # the browser-side links, kept with the widget they drive
    return box


def figures_to_views(figures: Mapping[str, Mapping[str, object]], dpi: int = 80) -> dict[str, dict[str, bytes]]:
    """Render nested figures to PNG bytes (closing each figure)."""
    return {o: {i: figure_png(fig, dpi=dpi) for i, fig in inner.items()} for o, inner in figures.items()}
