#!/usr/bin/env python
"""Execute the book's notebook chapters with papermill, then build the HTML with Jupyter Book.

    python scripts/build_book.py                   # profile from $MMLAB_PROFILE, else "quick"
    python scripts/build_book.py --profile smoke   # what CI does
    python scripts/build_book.py --only 01_modality_imbalance   # execute one chapter only
    python scripts/build_book.py --no-execute      # reuse the executed copies of a previous run

Steps
1. Every `notebooks/*.ipynb` chapter listed in `_toc.yml` is executed by papermill (kernel
   `python3`, parameter `profile`, working directory `notebooks/`) into
   `_build/executed/notebooks/<name>.ipynb`. The committed notebooks are never modified.
2. A staging source tree `_build/src/` mirrors the repository: links to `_config.yml`,
   `_toc.yml`, `book/*`, `mmlab/`, `results/`, `benchmarks/`, and a `notebooks/` folder holding
   the executed copies (plus links to anything else in `notebooks/`, e.g. images). Paths such as
   `../mmlab/...` in a chapter resolve the same in the repository and in the staging tree.
   `book/status.md` is generated there (profile, execution times, versions, commit), and so are
   `book/benchmarks.md` (from the benchmark records) and `book/methods.md` (`mmlab.catalog`).
3. `jupyter-book build _build/src --path-output . --warningiserror --keep-going --all` writes
   the HTML to `_build/html`; any Sphinx warning fails the build.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed" / "notebooks"
TIMINGS = BUILD / "executed" / "timings.json"
STAGING = BUILD / "src"
PROFILES = ("smoke", "quick", "full")
# What the staging tree mirrors from the repository (besides notebooks/ and book/, built below).
MIRRORED = ("_config.yml", "_toc.yml", "mmlab", "results", "benchmarks")


class BuildError(RuntimeError):
    """A failure with a message meant for the reader of the build log."""


# --------------------------------------------------------------------------------------- toc
def toc_files(toc: dict) -> list[str]:
    """Every `file:` entry of a jb-book toc, root first, in reading order."""
    found = [toc["root"]] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return found


def notebook_chapters(root: Path = ROOT) -> list[Path]:
    """The notebooks/*.ipynb chapters listed in _toc.yml, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    chapters = []
    for entry in toc_files(toc):
        path = Path(entry)
        if path.parts[:1] != ("notebooks",):
            continue
        nb = root / path.with_suffix(".ipynb")
        if not nb.exists():
            raise BuildError(f"_toc.yml lists {entry}, but {nb.relative_to(root)} does not exist")
        chapters.append(nb)
    return chapters


# --------------------------------------------------------------------------------- execution
def kernel_environment() -> None:
    """Environment inherited by the kernels that papermill starts.

    The Makefile exports MPLBACKEND=Agg (right for scripts and tests), but ipykernel only
    installs its inline backend when MPLBACKEND is unset: under Agg, figures never reach the
    executed notebook. The kernels get the inline backend instead.

    The kernels' progress bars are off (tqdm reads ``TQDM_DISABLE``): in a notebook they are widgets,
    whose state papermill stores in the executed copy although the cells that show them have their
    output removed -- a page with no other widget would load the widget scripts (3.6 MB) for nothing.
    papermill's own bar, in this process, is kept on explicitly (:func:`execute`).
    """
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["TQDM_DISABLE"] = "1"


def execute(nb: Path, profile: str) -> float:
    """Execute one chapter into _build/executed/notebooks; returns seconds.

    papermill writes into _build/executed/running/ and the copy moves into place only on
    success; a failed run is kept in _build/executed/failed/ for its traceback, so that a later
    --no-execute never renders a half-executed chapter.
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out = EXECUTED / nb.name
    running = EXECUTED.parent / "running" / nb.name
    failed = EXECUTED.parent / "failed" / nb.name
    for path in (out, running, failed):
        path.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n== executing {nb.relative_to(ROOT)} (profile {profile}) -> {out.relative_to(ROOT)}",
          flush=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb),
            str(running),
            parameters={"profile": profile},
            kernel_name="python3",
            cwd=str(nb.parent),
            progress_bar={"disable": False},  # the build's own bar: TQDM_DISABLE is meant for the kernels
            log_output=False,
        )
    except PapermillExecutionError as err:
        shutil.move(running, failed)
        out.unlink(missing_ok=True)
        cells = nbformat.read(nb, as_version=4).cells
        where = next((f"cell {i + 1} of {len(cells)}" for i, cell in enumerate(cells)
                      if cell.cell_type == "code" and cell.source == err.source), "a cell")
        source = "\n".join("    " + line for line in str(err.source).splitlines())
        raise BuildError(
            f"notebook {nb.relative_to(ROOT)} failed in {where} (In [{err.exec_count}]):\n"
            f"{source}\n{err.ename}: {err.evalue}\n"
            f"The executed copy with the full traceback is {failed.relative_to(ROOT)}"
        ) from None
    except Exception as err:  # noqa: BLE001 - kernel died, timeout, unreadable notebook, ...
        if running.exists():
            shutil.move(running, failed)
        out.unlink(missing_ok=True)
        raise BuildError(f"notebook {nb.relative_to(ROOT)} could not be executed: "
                         f"{type(err).__name__}: {err}") from None
    seconds = time.perf_counter() - start
    shutil.move(running, out)
    failed.unlink(missing_ok=True)
    return seconds


def load_timings() -> dict:
    if TIMINGS.exists():
        return json.loads(TIMINGS.read_text())
    return {}


# ------------------------------------------------------------------------------------ status
def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit_description() -> str:
    sha = git("rev-parse", "HEAD")
    if not sha:
        return "no commit (not a git checkout, or no commit yet)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"`{sha}`" + (" with uncommitted changes" if dirty else "")


def device_description() -> str:
    try:
        import torch
    except Exception:  # noqa: BLE001 - torch missing or broken: say so, don't fail the build
        return "unknown (torch not importable)"
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return "CPU"


def status_page(chapters: list[Path], timings: dict, profile: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    total = 0.0
    for nb in chapters:
        rec = timings.get(nb.stem, {})
        seconds = rec.get("seconds")
        total += seconds or 0.0
        rows.append(
            f"| {{doc}}`/notebooks/{nb.stem}` (`{nb.name}`) | {rec.get('profile', '?')} | "
            f"{'%.1f' % seconds if seconds is not None else '?'} | {rec.get('executed_at', '?')} |"
        )
    executed = sorted({timings.get(nb.stem, {}).get("profile", "?") for nb in chapters})
    if executed == [profile]:
        profile_line = f"`{profile}`"
    elif len(executed) == 1:
        profile_line = (f"`{executed[0]}` (the chapters' executed copies, reused by this build, which was started "
                        f"with `{profile}`)")
    else:
        profile_line = (f"mixed: the chapters were executed with {', '.join(f'`{p}`' for p in executed)} (this build "
                        f"was started with `{profile}` and reused the other chapters' executed copies; see the table)")
    versions = [
        ("Python", platform.python_version()),
        ("torch", version("torch")),
        ("mmlab", version("mmlab")),
        ("jupyter-book", version("jupyter-book")),
        ("myst-nb", version("myst-nb")),
        ("Sphinx", version("sphinx")),
        ("papermill", version("papermill")),
    ]
    lines = [
        "# Build status",
        "",
        "This page is generated by `scripts/build_book.py` each time the book is built.",
        "",
        f"- **Profile:** {profile_line}",
        f"- **Built:** {now}",
        f"- **Commit:** {commit_description()}",
        f"- **Device of the build machine:** {device_description()}",
        f"- **Platform:** {platform.platform()}",
        "",
        "## Execution of the chapters",
        "",
        "| chapter | profile | seconds | executed at |",
        "| --- | --- | ---: | --- |",
        *rows,
        "",
        f"Total execution time: {total:.1f} s.",
        "",
        *protocol_lines(),
        "## Versions",
        "",
        "| package | version |",
        "| --- | --- |",
        *[f"| {name} | {ver} |" for name, ver in versions],
        "",
    ]
    return "\n".join(lines)


def protocol_lines() -> list[str]:
    """The CG-MNIST protocols (chapter 1) and how many committed records each made: the story of the
    unknown generator in one table (its knobs, the sensitivity study, the calibration, the held-out rows)."""
    from collections import Counter

    from mmlab.calibration import protocol_story
    from mmlab.data.cgmnist import PROTOCOLS
    from mmlab.profiles import COMMITTED_PROFILES
    from mmlab.results import ResultsStore, record_protocol

    store = ResultsStore(ROOT / "results")
    records = [r for profile in COMMITTED_PROFILES for r in store.records(profile=profile, dataset="cgmnist")]
    counts = Counter((r["config"]["profile"], record_protocol(r)) for r in records)
    lines = ["## CG-MNIST: the protocols of the recorded runs", "",
             "The papers' CG-MNIST generator was never released; its unknowns are knobs of `CGMNISTConfig`, and a",
             "protocol names a value for each. Where that story stands, step by step as chapter",
             "{doc}`/notebooks/01_modality_imbalance` tells it, read from the committed records of this build:", ""]
    lines += [f"{i}. **{step}.** {text}" for i, (step, text) in enumerate(protocol_story(records), 1)]
    lines += ["", "Committed records, by profile and protocol (a record that names none was made under `mmlab-1`; a",
              "knob set apart from its protocol is named after it):", "",
              "| profile | protocol | records |", "| --- | --- | ---: |"]
    lines += [f"| {profile} | {protocol} | {n} |" for (profile, protocol), n in sorted(counts.items())]
    lines += ["", "| protocol | what it is |", "| --- | --- |"]
    lines += [f"| `{name}` | {p.description} |" for name, p in PROTOCOLS.items()]
    return lines + [""]


# -------------------------------------------------------------------------------- benchmarks
BENCHMARKS = ROOT / "results" / "benchmarks"


def benchmarks_page() -> str:
    """The benchmark records of results/benchmarks/, as tables: nothing typed by hand."""
    lines = [
        "# Benchmarks",
        "",
        "Training throughput of `mmlab`'s one loop on CG-MNIST (and, on a GPU, on a CREMA-D-shaped epoch:",
        "ResNet-18 encoders on random content in CREMA-D's shapes, in float32 and with bf16 autocast),",
        "beside a bare PyTorch loop that trains",
        "the same model on the same device-resident tensors with the same optimiser and losses, and nothing",
        "else (no hooks, no per-epoch logging, no gradient probe, no checkpoint), measured in the same run by",
        "`python benchmarks/bench_training.py`. *ratio* = loop / bare: 1.0 means the loop costs nothing extra.",
        "For a method that integrates two gradients per encoder (MGDA, PCGrad, MetaBalance, MMPareto) the bare",
        "loop computes the same two gradients (one vector-Jacobian product per loss and encoder) and simply adds",
        "them: the arithmetic floor of any method that needs them separately, so *ratio* is what the method's",
        "rule and the loop add on top of that floor. For the other methods (OGM-GE, OPM, PMR, AGM, ...) the bare",
        "loop trains the same model's plain losses (the fused cross-entropy, plus the unimodal heads' where the",
        "model has them) with one backward pass, so there *ratio* includes the method's own extra work.",
        "The method's whole extra cost is the column",
        "*vs the plain method*: its loop throughput over that of the method it modifies (one joint loss, or the",
        "uniform baseline), both measured in the loop. Each repeat times the plain method in the same repeat",
        "as the case, and the column is the median of these paired ratios: it can differ from the ratio of two",
        "rows' *loop* columns, which are medians taken separately at other moments of the machine, by a few",
        "percent on a CPU and by up to a fifth on a GPU, where short timings drift more.",
        "For one run trained eagerly, a *ratio* a little above 1 is the noise of such timings (the loop does all",
        "the bare loop's work); for the stacked rows and the CUDA-graph rows the bare loop is one eager model,",
        "so there *ratio* is a speed-up.",
        "The uniform baseline's gradient probe (cos(g_m, g_u) measured every few steps) costs extra backward",
        "passes; the row without it shows the loop itself. Peak memory is the CUDA allocator's peak on a GPU",
        "and the process's maximum resident set on a CPU. This page is generated from the records in",
        "`results/benchmarks/` each time the book is built.",
        "",
    ]
    from mmlab.book import THROUGHPUT_COLUMNS, benchmark_records
    from mmlab.errors import plural

    records = benchmark_records(BENCHMARKS, "throughput")
    headings = [_throughput_heading(rec) for _, rec in records]
    if not records:
        lines.append("No benchmark records are in `results/benchmarks/` yet.")
    for path, rec in records:
        heading = _throughput_heading(rec)
        if headings.count(heading) > 1:  # several records of the same device and data: name each by its file
            heading += f" ({path.stem})"
        lines += [
            f"## {heading}",
            "",
            f"torch {rec['torch_version']}, "
            + (plural("CPU thread", rec["threads"]) if isinstance(rec.get("threads"), int) else "CPU threads not recorded")
            + f", commit `{_commit_cell(rec)}`"
            + f", measured {rec['finished_at']}; record `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`.",
            "",
        ]
        if rec.get("note"):
            lines += [f"Noted with the measurement: {rec['note']}", ""]
        if rec.get("complete") is False:
            lines += ["This record was cut short (the benchmark stopped at its time limit): the cases it lacks were",
                      "not measured in this run.", ""]
        lines += _markdown_table(
            ["case", ("samples / epoch", "r"), ("batch", "r"), (THROUGHPUT_COLUMNS["loop_samples_per_s"], "r"),
             (THROUGHPUT_COLUMNS["bare_samples_per_s"], "r"), (THROUGHPUT_COLUMNS["ratio"], "r"),
             THROUGHPUT_COLUMNS["throughput_vs_plain"] + " in the loop", ("peak memory (MB)", "r")],
            [[row["case"], row["samples_per_epoch"], row["batch_size"], f"{row['loop_samples_per_s']:.0f}",
              f"{row['bare_samples_per_s']:.0f}", f"{row['ratio']:.3f}",
              (f"{row['throughput_vs_plain']:.3f} of {row['vs_plain_method']}" if "throughput_vs_plain" in row else ""),
              f"{row['peak_memory_mb']:.0f}"] for row in rec["rows"]])
        repeats = {row.get("repeats", 1) for row in rec["rows"]}
        lines.append("Each figure is one measurement." if repeats == {1} else
                     f"Each figure is the median of {' or '.join(map(str, sorted(repeats)))} alternating measurements.")
        lines.append("")
    lines += table_section(benchmark_records(BENCHMARKS, "table"))
    lines += parallel_section(benchmark_records(BENCHMARKS, "parallel"))
    lines += graph_section(benchmark_records(BENCHMARKS, "graph"),
                           loop_captured=any(row.get("cuda_graph") for _, rec in records for row in rec["rows"]))
    lines += check_section(benchmark_records(BENCHMARKS, "check"))
    return "\n".join(lines)


#: how the throughput sections name the datasets of their cases
DATASET_TITLES = {"cgmnist": "CG-MNIST", "cremad_shaped": "CREMA-D-shaped", "avdigits": "audio-visual digits"}


def _throughput_heading(rec: dict) -> str:
    """A throughput record's section title: its device and the data of its cases."""
    datasets = sorted({row.get("dataset", "cgmnist") for row in rec["rows"]})
    return f"{rec['device']}: {', '.join(DATASET_TITLES.get(d, d) for d in datasets)}"


def _markdown_table(columns: list, rows: list[list]) -> list[str]:
    """A Markdown table's lines: ``columns`` are titles, or (title, "r") for a right-aligned column."""
    titles = [c[0] if isinstance(c, tuple) else c for c in columns]
    rules = ["---:" if isinstance(c, tuple) and c[1] == "r" else "---" for c in columns]
    return (["| " + " | ".join(titles) + " |", "| " + " | ".join(rules) + " |"]
            + ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [""])


def _commit_cell(rec: dict) -> str:
    """A benchmark record's commit, as a table shows it: 10 digits, and whether the tree was dirty."""
    return (rec.get("git_commit") or "unknown")[:10] + (" (dirty)" if rec.get("git_dirty") else "")


def parallel_section(records: list[tuple[Path, dict]]) -> list[str]:
    """The records of `benchmarks/bench_parallel.py`: what training runs side by side gains."""
    lines = ["## Runs side by side", "",
             "`python benchmarks/bench_parallel.py` trains N runs of one case at once in worker processes, as",
             "`sweep --jobs N` does (cores / N threads each; on a GPU they share the card), and gives their summed",
             "throughput over that of one run alone with every core, measured in the same repeat (records",
             "`results/benchmarks/parallel-*.json`). Above 1, a sweep of many runs is done sooner with `--jobs N`,",
             "although each run takes longer.", ""]
    if not records:
        return lines + ["No record of it is in `results/benchmarks/` yet.", ""]
    return lines + _markdown_table(
        ["device", "case", ("samples / epoch", "r"), ("runs at once", "r"), ("threads each", "r"),
         ("samples/s in all", "r"), ("vs one run", "r"), "commit"],
        [[rec["device"], rec["case"], rec["samples_per_epoch"], row["jobs"], row["threads_per_job"],
          f"{row['total_samples_per_s']:.0f}", f"{row['vs_one_run']:.2f}", f"`{_commit_cell(rec)}`"]
         for _, rec in records for row in rec["rows"]])


def graph_section(records: list[tuple[Path, dict]], loop_captured: bool = False) -> list[str]:
    """The records of `benchmarks/bench_cuda_graph.py`: what a captured step would gain on a GPU.
    ``loop_captured``: whether a throughput record above measures the loop's own captured step."""
    lines = ["## A step captured in a CUDA graph", "",
             "On a GPU a CG-MNIST step at batch 64 is bound by kernel launches. `python benchmarks/bench_cuda_graph.py`",
             "times the bare uniform and MMPareto steps run eagerly and replayed from one CUDA graph (records",
             "`results/benchmarks/cuda-graph-*.json`): the ceiling of what capturing the loop can gain. The loop",
             "captures its own step with `cuda_graph=True` (`sweep --cuda-graph`, `mmlab.training.graph`); the",
             "throughput cases named \"..., CUDA graph\" measure it beside the same method trained eagerly"
             + ("." if loop_captured else " (no record above has them yet: they need a GPU)."), ""]
    if not records:
        return lines + ["No record of it is in `results/benchmarks/` yet (it needs a GPU).", ""]
    return lines + _markdown_table(
        ["device", "case", ("samples / epoch", "r"), ("eager (samples/s)", "r"), ("graph (samples/s)", "r"),
         ("graph / eager", "r"), "commit"],
        [[rec["device"], row["case"], row["samples_per_epoch"], f"{row['eager_samples_per_s']:.0f}",
          f"{row['graph_samples_per_s']:.0f}", f"{row['graph_vs_eager']:.2f}", f"`{_commit_cell(rec)}`"]
         for _, rec in records for row in rec["rows"]])


def check_section(records: list[tuple[Path, dict]]) -> list[str]:
    """The records of `scripts/check_cuda_graph.py`: did the captured loop train as the eager one, on a GPU?"""
    lines = ["## Does the captured loop train as the eager one?", "",
             "`python scripts/check_cuda_graph.py` trains a few small CG-MNIST runs twice on a GPU, eagerly and with",
             "the loop's steps replayed from a CUDA graph, and compares them (records",
             "`results/benchmarks/check-cuda-graph-*.json`). On a GPU the two are not bit-identical (autotuned",
             "kernels), so it checks that steps were replayed and no capture failed, that a method with phases",
             "(OGM-GE, OPM) captured both, that the losses stay finite, and that every epoch's training loss and",
             "the final test accuracies (fused and of each modality) agree within the tolerances that each check",
             "names. On a CPU the tests check the captured path exactly, with the graph emulated.", ""]
    if not records:
        return lines + ["No record of it is in `results/benchmarks/` yet (it needs a GPU).", ""]
    rows = []
    for _, rec in records:
        for result in rec["methods"]:
            failed = [name for name, ok in result["checks"].items() if not ok]
            rows.append([rec["device"] + (" (emulated)" if rec.get("emulated") else ""), result["method"],
                         result["epochs"], result["train_size"], result["replayed_steps"],
                         f"{result['final_test_acc']['test/acc']['eager']:.4f}",
                         f"{result['final_test_acc']['test/acc']['graph']:.4f}",
                         f"{result['train_s']['eager']:.1f}", f"{result['train_s']['graph']:.1f}",
                         "passed" if not failed else "failed: " + "; ".join(failed), f"`{_commit_cell(rec)}`"])
    return lines + _markdown_table(
        ["device", "method", ("epochs", "r"), ("samples / epoch", "r"), ("steps replayed", "r"),
         ("test acc, eager", "r"), ("test acc, graph", "r"), ("train s, eager", "r"), ("train s, graph", "r"),
         "checks", "commit"], rows)


def table_section(records: list[tuple[Path, dict]]) -> list[str]:
    """The records of `benchmarks/bench_table.py`: the whole reproduction table, timed end to end."""
    lines = ["## The whole reproduction table", "",
             "Every planned run of the reproduction table, trained from scratch by the sweep and timed end to",
             "end by `python benchmarks/bench_table.py` (records `results/benchmarks/table-*.json`).", ""]
    if not records:
        return lines + ["No record of the whole table is in `results/benchmarks/` yet.", ""]
    return lines + _markdown_table(
        ["profile", "datasets", ("runs", "r"), "device", ("cores", "r"), ("jobs", "r"), ("wall time (min)", "r"),
         "all finished", "commit"],
        [[rec["profile"], ", ".join(rec["datasets"]), rec["runs"], rec["device"], rec["cores"], rec["jobs"],
          f"{rec['total_wall_min']:.1f}", "yes" if rec["all_done"] else "no", f"`{_commit_cell(rec)}`"]
         for _, rec in records])


GENERATED_PAGES = ("status.md", "benchmarks.md", "methods.md")


# ----------------------------------------------------------------------------------- staging
def link(src: Path, dst: Path) -> None:
    """Symlink dst -> src; copy where symlinks are not available (e.g. Windows without rights)."""
    try:
        dst.symlink_to(src, target_is_directory=src.is_dir())
    except OSError:
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def stage(chapters: list[Path], status_md: str) -> None:
    if STAGING.exists():
        shutil.rmtree(STAGING)
    STAGING.mkdir(parents=True)
    for name in MIRRORED:
        if (ROOT / name).exists():
            link(ROOT / name, STAGING / name)
    # book/: per-entry links, so that the generated pages can replace the committed stubs.
    (STAGING / "book").mkdir()
    for entry in sorted((ROOT / "book").iterdir()):
        if entry.name not in GENERATED_PAGES:
            link(entry, STAGING / "book" / entry.name)
    (STAGING / "book" / "status.md").write_text(status_md)
    (STAGING / "book" / "benchmarks.md").write_text(benchmarks_page())
    from mmlab.catalog import methods_page

    (STAGING / "book" / "methods.md").write_text(methods_page(ROOT / "results"))
    # notebooks/: the executed copies (copied, so Sphinx reads them at the staging path),
    # and links to everything else that lives there (images, data files, helper modules).
    (STAGING / "notebooks").mkdir()
    executed = {nb.name for nb in chapters}
    for nb in chapters:
        shutil.copy2(EXECUTED / nb.name, STAGING / "notebooks" / nb.name)
    for entry in sorted((ROOT / "notebooks").iterdir()):
        if entry.name in executed or entry.name == ".ipynb_checkpoints":
            continue
        link(entry, STAGING / "notebooks" / entry.name)


# ------------------------------------------------------------------------------------- build
def jupyter_book(strict: bool = True) -> None:
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(STAGING.relative_to(ROOT)),
           "--path-output", ".", "--all"]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    print("\n== " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        raise BuildError(
            f"jupyter-book build failed (exit {result.returncode}); every Sphinx warning is an "
            "error: see the WARNING lines above. Paths in them are in the staging tree "
            "_build/src, which mirrors the repository (notebooks/ holds the executed copies)."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=os.environ.get("MMLAB_PROFILE") or "quick",
                        choices=PROFILES,
                        help="profile passed to every chapter (default: $MMLAB_PROFILE or quick)")
    parser.add_argument("--only", metavar="NAME",
                        help="execute only this chapter (e.g. 01_modality_imbalance); the other "
                             "chapters reuse their executed copies from a previous build")
    parser.add_argument("--no-execute", action="store_true",
                        help="execute nothing; reuse the executed copies of a previous build")
    parser.add_argument("--no-strict", action="store_true",
                        help="do not turn Sphinx warnings into errors (local drafting only)")
    args = parser.parse_args(argv)
    if args.profile not in PROFILES:  # a default from $MMLAB_PROFILE, which argparse does not check
        parser.error(f"the environment variable MMLAB_PROFILE is {args.profile!r}; "
                     f"choose one of {', '.join(PROFILES)}")

    try:
        chapters = notebook_chapters()
        if args.only:
            wanted = Path(args.only).stem
            names = [nb.stem for nb in chapters]
            if wanted not in names:
                raise BuildError(f"--only {args.only}: not a notebook chapter of _toc.yml "
                                 f"(chapters: {', '.join(names) or 'none'})")
            to_run = [nb for nb in chapters if nb.stem == wanted]
        else:
            to_run = [] if args.no_execute else chapters

        kernel_environment()
        timings = load_timings()
        for nb in to_run:
            seconds = execute(nb, args.profile)
            timings[nb.stem] = {
                "seconds": round(seconds, 2),
                "profile": args.profile,
                "executed_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            }
            TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")
            print(f"   {nb.name}: {seconds:.1f} s", flush=True)

        missing = [nb.name for nb in chapters if not (EXECUTED / nb.name).exists()]
        if missing:
            raise BuildError("no executed copy of " + ", ".join(missing) + " in "
                             f"{EXECUTED.relative_to(ROOT)}: build once without --only/--no-execute")
        stale = [nb.stem for nb in chapters if timings.get(nb.stem, {}).get("profile") != args.profile]
        if stale:
            print(f"note: executed copies of {', '.join(stale)} were made with another profile "
                  "than --profile; the status page shows each chapter's own profile", flush=True)

        stage(chapters, status_page(chapters, timings, args.profile))
        jupyter_book(strict=not args.no_strict)
    except BuildError as err:
        print(f"\nBOOK BUILD FAILED: {err}", file=sys.stderr, flush=True)
        return 1

    index = BUILD / "html" / "index.html"
    print(f"\nThe book is at {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
