"""The page "Every method in this book" (mmlab.catalog): it covers the registry, links what exists, and reports the
records that are in the store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmlab import catalog
from mmlab.catalog import CATALOG, check_catalog, methods_page, recorded_runs
from mmlab.methods import METHODS
from mmlab.results import ResultsStore, record_protocol
from mmlab.training import load_or_run

ROOT = Path(__file__).resolve().parent.parent


def test_every_registry_method_has_one_entry_and_the_check_catches_a_missing_one(monkeypatch):
    check_catalog()
    assert {e.method for e in CATALOG if e.method} == set(METHODS)
    monkeypatch.setattr(catalog, "METHODS", {**METHODS, "brand_new": object})
    with pytest.raises(ValueError, match="missing \\['brand_new'\\]"):
        check_catalog()


def test_every_chapter_and_citation_the_page_names_exists(tmp_path):
    page = methods_page(tmp_path)
    chapters = set(re.findall(r"<\.\./notebooks/([^>]+)>", page))
    assert chapters and all((ROOT / "notebooks" / f"{c}.ipynb").exists() for c in chapters)
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"\{cite\}`([^`]+)`", page))
    assert keys and all(f"{{{k}," in bib for k in keys), sorted(k for k in keys if f"{{{k}," not in bib)
    toc = (ROOT / "_toc.yml").read_text()
    assert "book/methods" in toc
    # an empty store: nothing is recorded, and the page says so rather than inventing a row
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`" in line.split("|")[1]]
    assert len(rows) == len(METHODS) and all("| — |" in row for row in rows)


def test_the_page_reports_the_records_in_the_store(tiny_config, results_dir):
    record = load_or_run(tiny_config("mmcosine", epochs=1), progress=False)
    runs = recorded_runs(ResultsStore(results_dir), profile="smoke")
    assert runs == {"mmcosine": {"cgmnist": {record_protocol(record): 1}}}
    page = methods_page(results_dir, profile="smoke")
    row = next(line for line in page.splitlines() if "(`mmcosine`)" in line)
    assert f"CG-MNIST ({record_protocol(record)}: 1 seed)" in row
    other = next(line for line in page.splitlines() if "(`joint`)" in line)
    assert "CG-MNIST" not in other
