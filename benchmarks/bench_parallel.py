"""Runs side by side on one machine: what ``sweep --jobs N`` gains over one run at a time.

    python benchmarks/bench_parallel.py --device cpu --case mgda            # N = 1 and the core count
    python benchmarks/bench_parallel.py --device cuda --case uniform --jobs 1 2 4 8

For each N, N worker processes are spawned the way the sweep starts them (``spawn``, each with
``max(1, cores // N)`` torch threads: :func:`mmlab.sweep.limit_threads`). They wait at a barrier,
then each trains the same case of ``bench_training.py`` for two epochs; the second (warm) epoch's
training time gives each worker's samples/s (:func:`bench_training.loop_throughput`). A row gives
their sum, ``total_samples_per_s``, and ``vs_one_run``: that sum over the throughput of one run
alone (N = 1, with every core), measured in the same repeat so that a drift of the machine does
not enter it; the median over the repeats. Above 1, a sweep of many runs finishes sooner with
``--jobs N``, although each run takes longer. On a GPU the N workers share the card (the sweep's
``--device cuda --jobs N``). The record, with provenance, goes to
``results/benchmarks/parallel-<device>-<case>.json`` after every measurement (``"complete": false`` until
the last).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmlab import RunConfig  # noqa: E402
from mmlab.book import device_slug, write_benchmark_record  # noqa: E402
from mmlab.provenance import git_commit  # noqa: E402
from mmlab.sweep import available_cores, limit_threads  # noqa: E402
from mmlab.training import pick_device  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_training import CASES, GPU_ONLY, loop_throughput  # noqa: E402


def _worker(config: dict, device: str, threads: int, barrier) -> float:
    """One of the N side-by-side runs: samples/s of its warm epoch."""
    limit_threads(threads)
    barrier.wait()  # all N start together, so that their timed epochs overlap
    return loop_throughput(RunConfig.from_dict(config), pick_device(device))


def side_by_side(config: RunConfig, device: str, jobs: int, cores: int) -> list[float]:
    """Samples/s of each of ``jobs`` runs of ``config`` trained at once, in worker processes."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, cores // jobs)
    with context.Manager() as manager:
        barrier = manager.Barrier(jobs)
        pool = context.Pool(jobs)
        try:
            results = [pool.apply_async(_worker, (config.to_dict(), device, threads, barrier)) for _ in range(jobs)]
            rates = [r.get() for r in results]
        except BaseException:  # Ctrl-C or a time-out: stop the workers now, the record keeps what was measured
            pool.terminate()
            raise
        pool.close()
        pool.join()
        return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--case", default="uniform", choices=[c for c in CASES if "stacked" not in c])
    parser.add_argument("--jobs", type=int, nargs="+", default=None,
                        help="numbers of runs at once to measure (default: 1 and the core count; 1 is always added)")
    parser.add_argument("--samples", type=int, default=None,
                        help="training samples per epoch of each run (default: 4096 on CPU, 16384 on GPU)")
    parser.add_argument("--repeats", type=int, default=2, help="measure every N this many times; report medians")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.case in GPU_ONLY and device.type != "cuda":
        parser.error(f"case {args.case!r} is for a GPU")
    cores = available_cores()
    jobs_list = sorted({1, *(args.jobs or [cores])})
    if jobs_list[0] < 1:
        parser.error("--jobs must be at least 1")
    samples = args.samples or (16384 if device.type == "cuda" else 4096)
    config = RunConfig.from_profile(profile="quick", epochs=2, train_size=samples, val_size=500, test_size=1000,
                                    **CASES[args.case])
    default_out = REPO / "results" / "benchmarks" / f"parallel-{device_slug(device)}-{args.case}.json"
    out = Path(args.out) if args.out else default_out
    code_version = git_commit()  # the code this benchmark imported
    measured: dict[int, list[list[float]]] = {n: [] for n in jobs_list}
    rows: list[dict] = []

    def write(complete: bool) -> None:
        write_benchmark_record(out, device, rows, complete=complete, code_version=code_version, case=args.case,
                               cores=cores, samples_per_epoch=samples, repeats=args.repeats)

    for repeat in range(args.repeats):  # every N in each repeat, so that a drift hits them all alike
        for jobs in jobs_list:
            try:
                measured[jobs].append(side_by_side(config, str(device), jobs, cores))
            except KeyboardInterrupt:
                print(f"stopped; {out} keeps the {sum(map(len, measured.values()))} measurement(s) made",
                      file=sys.stderr)
                return 130
            alone = [sum(each) for each in measured[1]]
            rows[:] = [{"jobs": n, "threads_per_job": max(1, cores // n), "repeats_done": len(runs),
                        "samples_per_s_each": [round(statistics.median(run), 1) for run in zip(*runs)],
                        "total_samples_per_s": round(statistics.median(sum(each) for each in runs), 1),
                        "vs_one_run": round(statistics.median(sum(each) / a for each, a in zip(runs, alone)), 3)}
                       for n, runs in measured.items() if runs]
            write(complete=repeat == args.repeats - 1 and jobs == jobs_list[-1])  # a cut-short one keeps its rows
    for row in rows:
        print(f"{args.case}: {row['jobs']} at once, {row['threads_per_job']} thread(s) each: "
              f"{row['total_samples_per_s']:9.1f} samples/s in all, {row['vs_one_run']:.3f}x one run alone",
              flush=True)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
