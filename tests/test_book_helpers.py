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
