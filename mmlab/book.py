"""Small helpers for the chapter notebooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: what ``results/benchmarks/`` holds, told apart by the file name's prefix: throughput records
#: (``<device>.json``, rows per case, from benchmarks/bench_training.py), whole-table timings
#: (``table-<profile>-<device>.json``, from benchmarks/bench_table.py), the CUDA-graph probe
#: (``cuda-graph-<device>.json``, from benchmarks/bench_cuda_graph.py), the check of the loop's
#: captured step (``check-cuda-graph-<device>.json``, from scripts/check_cuda_graph.py) and runs side by side
#: (``parallel-<device>-<case>.json``, from benchmarks/bench_parallel.py)
BENCHMARK_KINDS = {"throughput": "", "table": "table-", "graph": "cuda-graph-", "parallel": "parallel-",
                   "check": "check-cuda-graph-"}


def _benchmark_kind(name: str) -> str:
    return next((kind for kind, prefix in BENCHMARK_KINDS.items() if prefix and name.startswith(prefix)),
                "throughput")


#: a throughput record's fields under the titles the Benchmarks page and chapter 4 give them
THROUGHPUT_COLUMNS = {"loop_samples_per_s": "loop (samples/s)", "bare_samples_per_s": "bare (samples/s)",
                      "ratio": "ratio", "vs_plain_method": "plain method", "throughput_vs_plain": "vs the plain method"}


def benchmark_records(folder: str | Path, kind: str) -> list[tuple[Path, dict]]:
    """``(path, record)`` of every benchmark record of ``kind`` in ``folder``, sorted by name."""
    if kind not in BENCHMARK_KINDS:
        raise ValueError(f"kind must be one of {tuple(BENCHMARK_KINDS)}, got {kind!r}")
    folder = Path(folder)
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [(p, json.loads(p.read_text())) for p in paths if _benchmark_kind(p.name) == kind]


def latest_case_rows(folder: str | Path, case: str) -> dict[str, tuple[dict, dict]]:
    """``{device: (record, row)}``: the row of ``case`` in the latest throughput record of each device that
    measured it (by ``finished_at``), as chapters 3 and 4 cite a method's cost."""
    latest: dict[str, tuple[dict, dict]] = {}
    for _, rec in benchmark_records(folder, "throughput"):
        for row in rec["rows"]:
            if row["case"] == case and (rec["device"] not in latest
                                        or rec["finished_at"] > latest[rec["device"]][0]["finished_at"]):
                latest[rec["device"]] = (rec, row)
    return latest


def write_benchmark_record(path: str | Path, device, rows: list[dict], *, complete: bool,
                           code_version: tuple[str | None, bool | None], **fields: Any) -> None:
    """Write a per-case benchmark record (``fields``, then the machine, the code, ``complete`` and
    ``rows``) atomically: the benchmarks call it after every case, so one cut short keeps its cases.
    ``code_version`` is :func:`mmlab.provenance.git_commit` taken when the benchmark started."""
    import time

    import torch

    from .io import atomic_write_bytes
    from .training.device import describe_device

    commit, dirty = code_version
    record = {**fields, "device": describe_device(device), "torch_version": torch.__version__,
              "threads": torch.get_num_threads(), "git_commit": commit, "git_dirty": dirty,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "complete": complete, "rows": rows}
    atomic_write_bytes(Path(path), (json.dumps(record, indent=1) + "\n").encode())


def device_slug(device) -> str:
    """The device part of a benchmark record's file name: ``cpu``, or ``cuda-<GPU name>``."""
    if device.type != "cuda":
        return device.type
    import torch

    return "cuda-" + torch.cuda.get_device_name(device).replace(" ", "-")


def titled(table):
    """A copy of ``table`` for display, its rows named by :func:`mmlab.methods.row_title` instead of the ids (``ogm_ge``,
    ``unimodal-gray``) that the chapters' code indexes by; with a multi-level index, only the ``method`` level."""
    from .methods import row_title

    if table.index.nlevels > 1:
        return table.rename(index=row_title, level="method")
    return table.rename(index=row_title)


def over_seeds(count: int) -> str:
    """What a caption's number is, from ``count`` seeds: ``one seed``, ``mean over 3 seeds``."""
    from .errors import plural

    return "one seed" if count == 1 else f"mean over {plural('seed', count)}"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Make ``value`` citable in the prose as ``{glue:text}`name``` (myst-nb).

    Returns nothing, as myst-nb's ``glue`` does: a cell that ends with a glue shows no stray
    value under it. Outside a book build (in Colab, say) myst-nb may be absent; then nothing
    is glued and the notebook runs the same.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars: glue formats plain Python numbers
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - depends on the environment
        return
    _glue(name, value, display=display)
