"""The chapters' helpers of mmlab.book behave in a notebook cell as the book needs."""

from __future__ import annotations

import pytest


def test_a_cell_that_ends_with_glue_shows_no_stray_value():
    """A chapter cell whose last line is a glue used to print the value under it (a lone "0")."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        result = shell.run_cell("from mmlab.book import glue\nglue('missing_runs', 0)", store_history=False)
        assert result.success, result.error_in_exec
        assert result.result is None  # nothing for the notebook to display
        numpy_result = shell.run_cell("import numpy as np\nglue('share', np.float64(0.25))", store_history=False)
        assert numpy_result.success and numpy_result.result is None
    finally:
        InteractiveShell.clear_instance()


def test_glue_hands_myst_nb_plain_python_numbers(monkeypatch):
    pytest.importorskip("myst_nb")
    import myst_nb

    import numpy as np
    import torch

    from mmlab.book import glue

    seen = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=False: seen.__setitem__(name, value))
    glue("a", np.float32(0.5))
    glue("b", torch.tensor(3))
    glue("c", "text")
    assert seen == {"a": 0.5, "b": 3, "c": "text"}
    assert type(seen["a"]) is float and type(seen["b"]) is int


def test_tables_name_rows_as_the_prose_does_and_keep_the_ids_for_code():
    import pandas as pd

    from mmlab.book import titled
    from mmlab.methods import METHOD_TITLES, row_title

    assert row_title("uniform") == "Uniform baseline" and row_title("unimodal-gray") == "Gray alone"
    assert row_title("ogm_ge") == "OGM-GE" and row_title("mgda") == "Conventional Pareto (MGDA)"
    assert row_title("not-a-method") == "not-a-method" and row_title("no_such_method") == "no_such_method"
    assert len({row_title(m) for m in METHOD_TITLES}) == len(METHOD_TITLES)  # no two rows under one name

    table = pd.DataFrame({"acc (%)": [1.0, 2.0]}, index=pd.Index(["uniform", "mgda"], name="method"))
    shown = titled(table)
    assert list(shown.index) == ["Uniform baseline", "Conventional Pareto (MGDA)"] and shown.index.name == "method"
    assert list(table.index) == ["uniform", "mgda"]  # the original is untouched
    by_device = pd.DataFrame({"x": [1, 2]}, index=pd.MultiIndex.from_tuples(
        [("cpu", "uniform"), ("cpu", "ogm_ge")], names=["device", "method"]))
    assert list(titled(by_device).index) == [("cpu", "Uniform baseline"), ("cpu", "OGM-GE")]  # devices as they were


def test_captions_say_one_seed_or_a_mean_over_seeds():
    from mmlab.book import over_seeds

    assert [over_seeds(n) for n in (1, 2, 3)] == ["one seed", "mean over 2 seeds", "mean over 3 seeds"]


def test_every_dataset_has_a_title_for_the_captions_and_an_untitled_one_is_called_by_its_id():
    from mmlab.data.registry import DATASETS, DatasetSpec, get_dataset

    assert get_dataset("cgmnist").title == "Colored-and-gray MNIST"
    assert all(spec.title and spec.title != name for name, spec in DATASETS.items())
    assert DatasetSpec(name="mine", description="test", modalities={"a": 1}, num_classes=2).title == "mine"
