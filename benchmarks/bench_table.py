"""How long the whole reproduction table takes: every planned run of the chosen datasets, trained
from scratch by ``python -m mmlab sweep --plan``, timed end to end.

    python benchmarks/bench_table.py --profile quick --jobs 2          # this machine, CPU
    python benchmarks/bench_table.py --profile full --device cuda --jobs 4 --dataset cgmnist

The runs go to a temporary results root (nothing is skipped because it was recorded before),
unless ``--results DIR`` keeps them. The record -- total wall time, each run's wall time and
test accuracy, the jobs and threads, the machine, torch and the commit -- is written atomically
to ``results/benchmarks/table-<profile>-<device>.json``; the reproduction chapter and the benchmark page
read it. Issue 6 asks that the quick profile of the whole table finish within 30 minutes on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmlab.book import device_slug  # noqa: E402
from mmlab.io import atomic_write_bytes  # noqa: E402
from mmlab.provenance import git_commit  # noqa: E402
from mmlab.reproduction import PLAN_PROTOCOLS, reproduction_configs  # noqa: E402
from mmlab.sweep import available_cores, run_sweep  # noqa: E402

DEFAULT_DATASETS = ("cgmnist", "avdigits")


def config_protocol(config) -> str | None:
    """The data protocol a run is trained under (CG-MNIST's ``mmlab-1`` where it names none); ``None`` for a
    dataset recorded under one protocol only."""
    if config.dataset not in PLAN_PROTOCOLS:
        return None
    from mmlab.data.cgmnist import LEGACY_PROTOCOL

    return config.dataset_options.get("protocol", LEGACY_PROTOCOL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--method", nargs="+", default=None,
                        help="only these runs of the plan (labels, e.g. uniform unimodal-gray): a partial timing")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--results", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from mmlab.training.device import describe_device, pick_device

    device = pick_device(args.device)
    configs = [c for d in args.dataset for c in reproduction_configs(d, args.profile, methods=args.method)]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.results) if args.results else Path(scratch)
        os.environ["MMLAB_CHECKPOINTS"] = str(root / ".checkpoints")  # never resume an older run
        start = time.perf_counter()
        summary = run_sweep(configs, store=root, jobs=args.jobs, device=str(device), progress=False)
        total = time.perf_counter() - start
    failed = summary[summary["status"] != "done"]
    protocols = {c.key: config_protocol(c) for c in configs}
    runs = [{"dataset": r.dataset, "method": r.method, "seed": int(r.seed), "status": r.status,
             "wall_s": r.wall_s, "test_acc": r.test_acc, "key": r.key, "data_protocol": protocols.get(r.key)}
            for r in summary.itertuples(index=False)]
    commit, dirty = git_commit()
    record = {
        "what": (f"the {'whole ' if args.method is None else 'partial '}reproduction table "
                 f"({', '.join(args.dataset)}), profile {args.profile}, from scratch"),
        "profile": args.profile, "datasets": args.dataset, "methods": args.method or "all planned",
        "whole_table": args.method is None, "runs": len(configs), "jobs": args.jobs,
        "cores": available_cores(), "device": describe_device(device), "torch_version": torch.__version__,
        "total_wall_s": round(total, 1), "total_wall_min": round(total / 60, 2),
        "all_done": failed.empty, "git_commit": commit, "git_dirty": dirty,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "per_run": runs,
    }
    slug = device_slug(device)
    out = Path(args.out) if args.out else REPO / "results" / "benchmarks" / f"table-{args.profile}-{slug}.json"
    atomic_write_bytes(out, (json.dumps(record, indent=1) + "\n").encode())
    print(f"{len(configs)} runs in {total / 60:.1f} min with {args.jobs} jobs on {record['cores']} cores; "
          f"written: {out}")
    if not failed.empty:
        print(f"{len(failed)} run(s) did not finish:\n{failed[['dataset', 'method', 'seed', 'status', 'error']]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
