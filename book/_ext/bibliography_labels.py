"""Bibliography labels that read as the book's citations do: [Wu et al. 2022], not [WJCG22].

The chapters cite author-year (``{cite:t}`` prints "Wu et al. (2022)"), but sphinxcontrib-bibtex's
default pybtex style labels the bibliography's entries the "alpha" way, which also mangles LaTeX
accents ("Jastrzkebski" for Jastrzębski) and corporate authors. This Sphinx extension registers the
pybtex formatting style ``author_year`` (``bibtex_default_style`` in ``_config.yml``): entries
formatted as pybtex's ``unsrt`` style formats them, sorted by their labels, and labelled
with the first author's last name ("and" the second's for two, "et al." for more) and the year;
entries that would share a label get a, b, ... in their sorted order.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting import BaseSortingStyle


def _last_name(person) -> str:
    """A person's last name as a reader writes it: LaTeX accents decoded, protective braces dropped."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year_label(entry) -> str:
    """``"Wei 2024"``, ``"Wei and Hu 2024"``, ``"Wu et al. 2022"``: an entry's label before a, b, ..."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    cut = names[-1:] == ["others"]  # BibTeX's "and others": the list is cut, so "et al." whatever its length
    if cut:
        names = names[:-1]
    if not names:
        who = entry.fields.get("key") or entry.key
    elif len(names) == 1 and not cut:
        who = names[0]
    elif len(names) == 2 and not cut:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    """Labels of :func:`author_year_label`, with a, b, ... where two entries would share one."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        shared = Counter(labels)
        seen: Counter = Counter()
        for label in labels:
            if shared[label] > 1:
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label]]
                seen[label] += 1
            else:
                yield label


class AuthorYearSorting(BaseSortingStyle):
    """Alphabetical by the label as printed (a corporate author sorts by its name, not after "Z")."""

    def sorting_key(self, entry):
        return author_year_label(entry).casefold(), entry.fields.get("title", "").casefold()


class AuthorYearStyle(UnsrtStyle):
    """pybtex's ``unsrt`` formatting with :class:`AuthorYearLabels`, in :class:`AuthorYearSorting`'s order."""

    default_label_style = "author_year_labels"
    default_sorting_style = "author_year_printed"


def setup(app):
    register_plugin("pybtex.style.labels", "author_year_labels", AuthorYearLabels)
    register_plugin("pybtex.style.sorting", "author_year_printed", AuthorYearSorting)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
