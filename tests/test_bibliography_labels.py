"""The bibliography's labels (book/_ext/bibliography_labels.py): as the chapters cite, accents decoded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pybtex")  # installed with the book's extras (sphinxcontrib-bibtex), not the tests'

from pybtex.database import parse_string  # noqa: E402
from pybtex.plugin import find_plugin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bibliography_labels", ROOT / "book" / "_ext" / "bibliography_labels.py")
labels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(labels)
labels.setup(None)

BIB = r"""
@misc{b, author = {Kim, A. and Kim, B. and Kim, C.}, title = {Second}, year = {2019}}
@misc{a, author = {Kim, D. and Lee, E. and Park, F.}, title = {First}, year = {2019}}
@misc{c, author = {Jastrz{\k{e}}bski, Stanis{\l}aw and Kenton, Z.}, title = {Three}, year = {2017}}
@misc{d, author = {{GeWu Lab}}, title = {Tutorial}, year = {2025}}
@misc{e, author = {Wei, Yake}, title = {Alone}, year = {2024}}
@misc{f, author = {Chen, Z. and others}, title = {Truncated}, year = {2018}}
"""


def _formatted():
    style = find_plugin("pybtex.style.formatting", "author_year")()
    return {e.key: e.label for e in style.format_entries(parse_string(BIB, "bibtex").entries.values())}


def test_labels_name_the_authors_and_year_as_a_reader_writes_them():
    got = _formatted()
    assert got["c"] == "Jastrzębski and Kenton 2017"  # the accent decoded, not "Jastrzkebski"
    assert got["d"] == "GeWu Lab 2025"  # a corporate author without its protective braces
    assert got["e"] == "Wei 2024"
    assert got["f"] == "Chen et al. 2018"  # BibTeX's "and others", not "Chen and others"


def test_entries_that_would_share_a_label_get_a_and_b_in_sorted_order():
    got = _formatted()
    assert {got["a"], got["b"]} == {"Kim et al. 2019a", "Kim et al. 2019b"}
    assert got["a"] == "Kim et al. 2019a"  # "First" sorts before "Second"


def test_the_book_configures_the_style():
    config = (ROOT / "_config.yml").read_text()
    assert "bibtex_default_style: author_year" in config and "bibliography_labels: book/_ext" in config
