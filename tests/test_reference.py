"""The published numbers in mmlab.reference are the ones in ../shared/reference/PUBLISHED.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmlab.reference import CGMNIST_PUBLISHED, CREMAD_PUBLISHED, published

PUBLISHED_MD = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "PUBLISHED.md"
CGMNIST_ROWS = {"One joint loss": "joint", "Uniform baseline (L_mm + sum of L_u)": "uniform",
                "Conventional Pareto (MGDA, Sener & Koltun 2018)": "mgda", "GradNorm": "gradnorm",
                "PCGrad": "pcgrad", "MetaBalance": "metabalance", "MMPareto": "mmpareto"}
CREMAD_ROWS = {"Audio-only": "unimodal-audio", "Video-only": "unimodal-visual",
               "Unimodal pre-trained & fine-tune": "pretrain_finetune", "One joint loss": "joint",
               "Uniform baseline": "uniform", "G-Blending": "gblending", "OGM(-GE)": "ogm_ge",
               "Greedy": "greedy", "PMR": "pmr", "AGM": "agm", "MMPareto": "mmpareto"}


def _table_after(heading: str) -> dict[str, list[float | None]]:
    text = PUBLISHED_MD.read_text()
    section = text[text.index(heading):]
    rows = {}
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[1]) <= set("- ") or cells[0] == "method":
            continue
        rows[cells[0]] = [None if c in ("–", "-") else float(c) for c in cells[1:]
                          if re.fullmatch(r"[\d.]+|–|-", c)]
    return rows


@pytest.mark.skipif(not PUBLISHED_MD.exists(), reason="../shared/reference not at hand")
def test_published_tables_match_the_reference_document():
    cg = _table_after("## Colored-and-gray MNIST")
    assert {CGMNIST_ROWS[k]: tuple(v) for k, v in cg.items()} == CGMNIST_PUBLISHED
    cremad = _table_after("## CREMA-D (MMPareto paper, Table 1")
    assert {CREMAD_ROWS[k]: tuple(v) for k, v in cremad.items()} == CREMAD_PUBLISHED


def test_published_frames_carry_their_source():
    for dataset in ("cgmnist", "cremad"):
        assert "Wei & Hu" in published(dataset).attrs["source"]
    assert published("avdigits").empty


@pytest.mark.skipif(not PUBLISHED_MD.exists(), reason="../shared/reference not at hand")
def test_the_balancebenchmark_figures_are_the_ones_in_the_reference_document():
    from mmlab.reference import CREMAD_OTHER_PROTOCOLS

    line = next(text for text in PUBLISHED_MD.read_text().splitlines() if text.startswith("- BalanceBenchmark"))
    quoted = {name.strip(): float(v) for name, v in re.findall(r"([A-Za-z-]+(?: [a-z]+)?) (\d+\.\d+)", line)}
    names = {"joint": "baseline", "ogm_ge": "OGM", "greedy": "Greedy", "mmpareto": "MMPareto", "opm": "OPM",
             "pmr": "PMR", "gblending": "G-Blending", "agm": "AGM"}
    ours = {m: v for source, m, v in CREMAD_OTHER_PROTOCOLS if source.startswith("BalanceBenchmark")}
    assert set(ours) == set(names)
    assert all(quoted[names[m]] == v for m, v in ours.items())


REFERENCE = PUBLISHED_MD.parent


@pytest.mark.skipif(not PUBLISHED_MD.exists(), reason="../shared/reference not at hand")
def test_other_protocols_figures_are_the_reference_documents():
    from mmlab.reference import CGMNIST_OTHER_PROTOCOLS, other_protocols_cremad

    text = PUBLISHED_MD.read_text()
    udi_cg = float(re.search(r'UDI \(seed 002\) reports ([\d.]+) on "CGMNIST"', text).group(1))
    assert [v for _, m, v in CGMNIST_OTHER_PROTOCOLS if m == "udi"] == [udi_cg]
    other = other_protocols_cremad()
    udi_cremad = float(re.search(r"- UDI \(seed 002\): (\d+\.\d+)", text).group(1))
    assert other.loc[other.method == "udi", "published acc (%)"].tolist() == [udi_cremad]
    line = next(l for l in text.splitlines() if l.startswith("- BalanceBenchmark"))
    names = {"baseline": "joint", "OGM": "ogm_ge", "AGM": "agm", "PMR": "pmr", "Greedy": "greedy",
             "G-Blending": "gblending", "MMPareto": "mmpareto", "OPM": "opm"}
    quoted = {names[n]: float(v) for n, v in re.findall(r"([A-Za-z-]+) ([\d.]+)", line) if n in names}
    ours = other[other["source and protocol"].str.startswith("BalanceBenchmark")]
    assert dict(zip(ours.method, ours["published acc (%)"])) == quoted


@pytest.mark.skipif(not (REFERENCE / "METHODS.md").exists(), reason="../shared/reference not at hand")
def test_the_original_style_speed_is_the_reference_notes():
    from mmlab.reference import ORIGINAL_STYLE_MMPARETO_THROUGHPUT

    text = (REFERENCE / "METHODS.md").read_text()
    assert float(re.search(r"MMPareto ([\d.]+)x \(three retain_graph", text).group(1)) == \
        ORIGINAL_STYLE_MMPARETO_THROUGHPUT
