"""The committed chapters are clean, Colab-ready and listed in the book.

Executed copies belong to the build (_build/executed); what is committed in notebooks/ has no
outputs. Every chapter: kernel `python3`, a Colab setup cell first, one `parameters` cell that
assigns `profile`, an "Audience & objectives" admonition near the top, an "Exercises" section, and
an entry in _toc.yml.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TOP_CELLS = 4  # the admonition must be in one of the first markdown cells


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)

    walk(toc)
    return [str(Path(f).with_suffix("")) for f in found]


def repository_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config["repository"]["url"].rstrip("/")


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request):
    path = request.param
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return path, nb


def test_no_outputs_and_no_execution_counts(notebook):
    path, nb = notebook
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; clear them "
                       "(jupyter nbconvert --clear-output --inplace) - the build executes the book")


def test_no_widget_state_committed(notebook):
    path, nb = notebook
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata; clear it"


def test_kernel_is_python3(notebook):
    path, nb = notebook
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name


def test_one_parameters_cell_that_assigns_profile(notebook):
    path, nb = notebook
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', want exactly 1"
    cell = tagged[0]
    assert cell.cell_type == "code"
    assigned = {t.id for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert "profile" in assigned, f"{path.name}: the parameters cell does not assign `profile`"


def test_first_code_cell_is_the_colab_setup(notebook):
    path, nb = notebook
    cells = code_cells(nb)
    assert cells, f"{path.name}: no code cells"
    source = cells[0].source
    assert re.search(r"""["']google\.colab["']\s+in\s+sys\.modules""", source), (
        f"{path.name}: the first code cell must test `'google.colab' in sys.modules`")
    assert f"git clone -q --depth 1 {repository_url()} " in source, (
        f"{path.name}: the Colab cell must clone the repository of _config.yml ({repository_url()}): the "
        "chapters read its recorded results from ../results")
    clone = source.split(f"{repository_url()} ")[1].split()[0]
    assert re.search(rf'pip install -q "{re.escape(clone)}(\[\w+\])?"', source), (
        f"{path.name}: the Colab cell must pip-install mmlab from that clone ({clone})")
    assert f"%cd {clone}/notebooks" in source, (
        f"{path.name}: the Colab cell must work in the clone's notebooks/ folder, so that ../results is the clone's")
    assert "MMLAB_GIT_COMMIT" in source and f'"git", "-C", "{clone}"' in source, (
        f"{path.name}: the Colab cell must give mmlab the clone's commit (MMLAB_GIT_COMMIT): an installed copy has no "
        ".git, and records made on Colab would name no commit")


def test_listed_in_toc(notebook):
    path, _ = notebook
    assert f"notebooks/{path.stem}" in toc_files(), f"{path.name} is not listed in _toc.yml"


def test_audience_and_objectives_near_the_top(notebook):
    path, nb = notebook
    top = [c.source for c in nb.cells[:TOP_CELLS] if c.cell_type == "markdown"]
    pattern = re.compile(r"^(:::+|```+)\s*\{admonition\}\s*Audience\s*&\s*objectives", re.M)
    assert any(pattern.search(s) for s in top), (
        f"{path.name}: no 'Audience & objectives' admonition in the first {TOP_CELLS} cells")


def test_has_an_exercises_section(notebook):
    path, nb = notebook
    heading = re.compile(r"^#{1,6}\s+Exercises\b", re.M)
    assert any(heading.search(c.source) for c in nb.cells if c.cell_type == "markdown"), (
        f"{path.name}: no 'Exercises' section")


def test_every_toc_entry_exists():
    missing = [f for f in toc_files()
               if not any((ROOT / f).with_suffix(ext).exists() for ext in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists missing pages: {missing}"
