"""Sweeps: many runs (datasets x methods x seeds x profiles), each recorded once.

A sweep is a list of :class:`~mmlab.config.RunConfig` s. Every run goes through
:func:`mmlab.training.load_or_run`, so a sweep inherits what one run already
guarantees: records are written atomically, a recorded run is never trained
again (unless ``overwrite``), and an unfinished run resumes from the checkpoint
of its last finished epoch. An interrupted sweep, started again, therefore does
only what is missing.

Command line::

    python -m mmlab sweep --profile full --method joint uniform unimodal:modality=gray \\
        unimodal:modality=color --jobs 4 --device cuda
    python -m mmlab sweep --method ogm_ge:alpha=0.8,window_end=30 --seed 0 1 2 --dry-run

A *method spec* is ``name`` or ``name:key=value[,key=value...]``; each value is
read as JSON when it parses (``0.8``, ``true``, ``null``, ``[1, 2]``), else as a
string. Datasets take the same syntax (``cgmnist:jitter_variance=0.1``), and
``--data-option key=value`` adds an option to every dataset. Seeds default to
each profile's seeds; ``--epochs``, ``--measure-imbalance`` and
``--set FIELD=VALUE`` override :class:`~mmlab.config.RunConfig` fields as in
``train``. Every name is checked before anything starts, and a results file
that cannot be parsed stops the sweep before any training, naming the file
(``--overwrite`` trains every run of the sweep again and replaces its record,
unreadable ones included, as ``train --overwrite`` does; an overwriting sweep
that was interrupted is not resumable as such: started again with
``--overwrite`` it redoes the runs it had replaced, without it it keeps the old
records of the runs it had not reached). ``--time-limit 50m`` (``time_limit`` seconds) stops the
sweep in time: no run starts an epoch that, by its last epoch's duration, would end after the limit,
so a run stops at an epoch's end with its checkpoint kept (``paused``), and the same command, run
again, resumes it -- for a GPU lent by the hour or a Colab session. Exit status: 0 when every run
is recorded, 1 when a run failed (the others still ran), 2 for a bad name or an unreadable results
file, 3 when the time limit paused runs, 130 when interrupted.

Python (a notebook)::

    from mmlab.sweep import plan_sweep, sweep_status, run_sweep
    configs = plan_sweep(methods=["joint", "unimodal:modality=gray"], profile="smoke")
    sweep_status(configs)               # DataFrame: recorded / train / resume, test acc
    run_sweep(configs, jobs=2)          # DataFrame: done / failed / skipped per run

Backends. ``local`` (default): ``jobs=1`` trains in this process, one run after
the other; ``jobs=N`` starts N worker processes (``spawn``), each with
``max(1, cores // N)`` torch threads. Runs on ``--device cuda`` share the GPU,
so ``--device cuda --jobs 4`` trains four runs on it at once (one GPU: use
``CUDA_VISIBLE_DEVICES`` to choose it).

``--stack K`` (``stack=K``) trains up to ``K`` seeds of a run together in one worker
(:func:`mmlab.training.train_stacked`): their encoders as one batched computation, everything else
per run, each recorded as its own run (its provenance says ``stacked_runs``). On a GPU, where a
small model's step is bound by kernel launches, this multiplies what one worker trains; on a CPU
it is slower than one seed at a time (the sweep says so). Greedy (MMTM: connected encoders) is
trained one seed after the other.

``slurm`` (in the clone, ``pip install -e '.[slurm]'``) submits the runs as one SLURM job
array through `submitit <https://github.com/facebookincubator/submitit>`_; each
array task calls :func:`run_one`, the function the local backend calls, and
writes into the same results root, which must therefore be on a file system
the compute nodes share::

    python -m mmlab sweep --profile full --method joint uniform --backend slurm \\
        --slurm-partition gpu --slurm-gpus-per-task 1 --slurm-cpus-per-task 4 \\
        --slurm-time 4:00:00 --jobs 8      # --jobs: array tasks running at once

The submitting process waits for the jobs and reports them like the local
backend (``--no-wait`` submits and returns). Interrupting the wait leaves the
jobs running. A task that reaches its time limit is requeued by submitit and
resumes from its checkpoint. submitit's logs go to ``<results>/.submitit``
(``--slurm-folder``); ``--slurm-param key=value`` passes any other
``slurm_<key>`` parameter of submitit (``qos``, ``constraint``, ``setup``, ...).
Tests inject submitit's ``DebugExecutor`` or ``LocalExecutor`` through
``executor_factory``.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import RunConfig
from .errors import NonFiniteLossError, ResultsFileError, TimeLimitReached, UnknownNameError, plural

BACKENDS = ("local", "slurm")
STATUS_COLUMNS = ["profile", "dataset", "method", "seed", "epochs", "done", "status", "test_acc", "code", "key",
                  "path"]
SUMMARY_COLUMNS = ["profile", "dataset", "method", "seed", "status", "test_acc", "epochs", "wall_s",
                   "resumed", "error", "key", "host", "pid", "threads"]


# -- the plan ---------------------------------------------------------------------------
def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (so ``w=[1,2],b=3`` is two parts)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{(") - (char in "]})")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def parse_spec(spec: str | tuple[str, Mapping[str, Any]], kind: str = "method") -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> ``(name, {key: value})``; a ``(name, options)``
    pair passes through. Values are JSON where they parse (``0.8``, ``false``,
    ``[1,2]``: commas inside brackets belong to the value), else strings."""
    if not isinstance(spec, str):
        name, options = spec
        return str(name), dict(options)
    name, colon, rest = spec.partition(":")
    if not name.strip():
        raise ValueError(f"{kind} spec {spec!r} has no name; write name or name:key=value,key=value")
    options: dict[str, Any] = {}
    for part in _split_top_level(rest) if colon else []:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{kind} spec {spec!r}: options look like key=value, got {part!r} "
                             f"(e.g. unimodal:modality=gray or ogm_ge:alpha=0.8,window_end=30)")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return name.strip(), options


def plan_sweep(
    datasets: Iterable[str | tuple[str, Mapping[str, Any]]] = ("cgmnist",),
    methods: Iterable[str | tuple[str, Mapping[str, Any]]] = ("uniform",),
    seeds: Iterable[int] | None = None,
    profile: str | Sequence[str] | None = None,
    *,
    dataset_options: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> list[RunConfig]:
    """Every run of ``profile(s) x seeds x datasets x methods``, validated, in that order
    (all methods of the first seed come first), duplicates dropped.

    ``methods`` and ``datasets`` are specs (see :func:`parse_spec`); ``seeds``
    defaults to each profile's seeds; ``dataset_options`` are added to every
    dataset's own; ``overrides`` set :class:`RunConfig` fields. A bad name
    raises (:class:`~mmlab.errors.UnknownNameError`, ``TypeError``,
    ``ValueError``) before anything is trained.
    """
    from .profiles import resolve_profile

    profiles = [profile] if profile is None or isinstance(profile, str) else list(profile)
    dataset_specs = [parse_spec(d, "dataset") for d in datasets]
    method_specs = [parse_spec(m, "method") for m in methods]
    if not dataset_specs or not method_specs:
        raise ValueError("a sweep needs at least one dataset and one method")
    explicit_seeds = None if seeds is None else [int(s) for s in seeds]
    configs: dict[str, RunConfig] = {}
    for prof in (resolve_profile(p) for p in profiles):
        for seed, (dataset, d_opts), (method, m_opts) in itertools.product(
                explicit_seeds if explicit_seeds is not None else prof.seeds, dataset_specs, method_specs):
            config = RunConfig.from_profile(
                dataset=dataset, method=method, seed=seed, profile=prof.name, method_options=m_opts,
                dataset_options={**d_opts, **(dataset_options or {})}, **overrides)
            configs.setdefault(config.key, config)
    return list(configs.values())


# -- what is recorded already -----------------------------------------------------------
def _as_store(store):
    from .results import ResultsStore

    return store if isinstance(store, ResultsStore) else ResultsStore(store)


def _checkpoint_path(store, config: RunConfig) -> Path:
    return store.checkpoint_dir / f"{config.key}.pt"  # where load_or_run's train writes it


def _epochs_done(path: Path) -> int | None:
    """How many epochs the checkpoint at ``path`` holds; None if it cannot be read (the run
    itself then says why, naming the file)."""
    import torch

    try:  # mmap: only the few bytes of the counter are read, not the weights
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epochs_done"])
    except Exception:
        return None


def sweep_status(configs: Sequence[RunConfig], store=None, *, overwrite: bool = False):
    """A DataFrame, one row per run: ``status`` is ``recorded`` (with its test
    accuracy), ``resume`` (a checkpoint of an unfinished run exists), ``train``,
    or with ``overwrite`` ``retrain`` for a recorded one. ``done`` is how many of its ``epochs``
    a run has trained: all of them when recorded, the checkpoint's count when it resumes (empty
    if the checkpoint cannot be read), 0 otherwise -- a paused sweep's progress. ``code`` is ``"other"`` for a
    recorded smoke or quick run made by other code than this
    (:func:`mmlab.results.other_code_digest`: the library was edited since); the sweep skips
    it like any record, ``overwrite`` trains it again.

    Raises :class:`~mmlab.errors.ResultsFileError` naming every results file
    that cannot be read (unless ``overwrite``, which replaces them unread).
    """
    import pandas as pd

    from .results import other_code_digest

    store = _as_store(store)
    rows, unreadable = [], []
    for config in configs:
        path = store.path_for(config)
        row = {"profile": config.profile, "dataset": config.dataset, "method": config.label,
               "seed": config.seed, "epochs": config.epochs, "done": 0, "test_acc": None, "code": "",
               "key": config.key, "path": str(path)}
        if path.exists() and overwrite:
            row["status"] = "retrain"
        elif path.exists():
            try:
                record = store.load(config)
            except ResultsFileError as exc:
                unreadable.append(str(exc))
                continue
            row["status"], row["test_acc"] = "recorded", record["final"].get("test/acc")
            row["done"] = config.epochs
            row["code"] = "other" if other_code_digest(record) else ""
        else:
            checkpoint = _checkpoint_path(store, config)
            if checkpoint.exists():
                row["status"], row["done"] = "resume", _epochs_done(checkpoint)
            else:
                row["status"] = "train"
        rows.append(row)
    if unreadable:
        raise ResultsFileError(
            f"{plural('results file', len(unreadable))} cannot be read, so the sweep stops before training "
            "anything. Delete or repair them, or pass --overwrite (overwrite=True) to train those runs "
            "again and replace them:\n  " + "\n  ".join(unreadable))
    frame = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    frame["done"] = frame["done"].astype("Int64")  # an unreadable checkpoint's count stays empty, not 0.0
    return frame


def describe_status(status) -> str:
    """``"N runs: K recorded, M to train (R resume from a checkpoint)"``, how many of the
    records other code made, and when some runs resume, how many of all the epochs are done."""
    counts = status["status"].value_counts()
    recorded = int(counts.get("recorded", 0))
    todo = len(status) - recorded
    other = int(((status["status"] == "recorded") & (status["code"] == "other")).sum())
    by_other = f" ({other} by other code than this: edited since, --overwrite trains them again)" if other else ""
    text = f"{plural('run', len(status))}: {recorded} recorded{by_other}, {todo} to train"
    extra = [f"{int(counts[s])} {what}" for s, what in (("resume", "resume from a checkpoint"),
                                                      ("retrain", "replace a record")) if counts.get(s)]
    text += f" ({', '.join(extra)})" if extra else ""
    if counts.get("resume"):  # a paused sweep: how far it got
        text += f"; {int(status['done'].fillna(0).sum())} of {int(status['epochs'].sum())} epochs done"
    return text


# -- one run: the function every backend calls ------------------------------------------
def _expected_errors() -> tuple[type[BaseException], ...]:
    """The library's own errors, whose message says it all (no traceback needed)."""
    from .data.errors import DataIntegrityError, DataNotFoundError

    return (NonFiniteLossError, ResultsFileError, UnknownNameError, DataNotFoundError, DataIntegrityError,
            FileExistsError)


def limit_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in this process (torch and the BLAS libraries)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _identity(config: RunConfig) -> dict[str, Any]:
    return {"profile": config.profile, "dataset": config.dataset, "method": config.label,
            "seed": config.seed, "key": config.key}


def run_one(config: RunConfig | Mapping[str, Any], results_root: str | os.PathLike,
            **kwargs: Any) -> dict[str, Any]:
    """Record one run of a sweep: :func:`run_unit` with one config."""
    return run_unit([config], results_root, **kwargs)[0]


def run_unit(configs: Sequence[RunConfig | Mapping[str, Any]], results_root: str | os.PathLike, *,
             device: str | None = None, data_root: str | None = None, overwrite: bool = False,
             threads: int | None = None, progress: bool = False,
             deadline: float | None = None, cuda_graph: bool = False) -> list[dict[str, Any]]:
    """What one worker does: record one run, or several seeds of one run trained together
    (:func:`mmlab.training.load_or_run_stacked` into ``results_root``), and say how each went.

    Returns one dict per config: the run's identity, ``status`` (``done``, ``skipped`` when it
    was recorded already, ``failed``), ``test_acc``, ``epochs``, ``resumed``,
    ``wall_s`` (the unit's), ``error`` (one line), ``traceback`` (for unexpected errors), ``detail``
    (the whole message of one of the library's own errors, where it has more than one line), and
    where it ran (``host``, ``pid``, ``threads``). ``deadline`` (a :func:`time.time` value) may stop
    the runs at an epoch's end: status ``paused``, their checkpoints kept; ``cuda_graph`` replays their
    steps from a CUDA graph (:mod:`mmlab.training.graph`). A failing run is
    reported, not raised, so a sweep goes on; ``KeyboardInterrupt`` still stops it, and
    the runs' checkpoints are kept for the next sweep to resume from.
    """
    import socket

    from . import training
    from .results import ResultsStore

    if threads:
        limit_threads(threads)
    import torch

    configs = [c if isinstance(c, RunConfig) else RunConfig.from_dict(c) for c in configs]
    store = ResultsStore(results_root)
    where = {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}
    outcomes = [{**_identity(c), "status": "failed", "test_acc": None, "epochs": None, "resumed": None,
                 "wall_s": None, "error": None, "traceback": None, "detail": None, **where} for c in configs]

    def note(outcome: dict[str, Any], record: dict[str, Any], status: str) -> None:
        outcome.update(status=status, test_acc=record["final"].get("test/acc"), epochs=record["final"].get("epoch"))
        if status == "done":
            outcome["resumed"] = bool(record["provenance"].get("resumed"))

    start = time.perf_counter()
    pending = []
    try:
        for config, outcome in zip(configs, outcomes):
            recorded = None if overwrite else store.load(config)
            if recorded is not None:
                note(outcome, recorded, "skipped")
            else:
                pending.append((config, outcome))
        records = training.load_or_run_stacked([c for c, _ in pending], store=store, overwrite=overwrite,
                                               device=device, progress=progress, data_root=data_root,
                                               deadline=deadline, cuda_graph=cuda_graph)
        for (_, outcome), record in zip(pending, records):
            note(outcome, record, "done")
    except TimeLimitReached as exc:
        for _, outcome in pending:
            outcome.update(status="paused", error=str(exc), epochs=exc.epochs_done)
    except Exception as exc:  # reported in the sweep's summary; the other runs go on
        message = f"{type(exc).__name__}: {exc}"
        for _, outcome in pending:
            outcome["error"] = message.splitlines()[0]
            if not isinstance(exc, _expected_errors()):
                outcome["traceback"] = traceback.format_exc()
            elif "\n" in message.strip():  # e.g. the folders searched and how to fix it: shown once
                outcome["detail"] = message.strip()
    wall = round(time.perf_counter() - start, 2)
    return [{**outcome, "wall_s": wall} for outcome in outcomes]


def stack_groups(configs: Sequence[RunConfig], stack: int) -> list[list[RunConfig]]:
    """``configs`` in groups of at most ``stack`` that differ in their seed only (first-seen order)."""
    if stack < 1:
        raise ValueError(f"stack must be at least 1, got {stack}")
    if stack == 1:
        return [[config] for config in configs]  # the plan's own order
    groups: dict[str, list[RunConfig]] = {}
    for config in configs:
        groups.setdefault(config.with_(seed=0).key, []).append(config)
    return [group[i:i + stack] for group in groups.values() for i in range(0, len(group), stack)]


def _failed(config: RunConfig, error: str, status: str = "failed") -> dict[str, Any]:
    return {**_identity(config), "status": status, "error": error}


# -- the local backend ------------------------------------------------------------------
def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    limit_threads(threads)
    # SIGINT (from _stop_workers, or Ctrl-C) stops the run like an interrupted `train`, even where
    # the sweep was started with SIGINT ignored (in the background, say), which workers inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool now: no new runs, and SIGINT to the running ones, so each stops
    like an interrupted ``train`` (its last epoch's checkpoint is on disk)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    for p in processes:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()
            p.join()
    pool.shutdown(wait=True)  # the workers are gone: let the pool release its queues


def expected_cost(config: RunConfig) -> float:
    """A rough relative cost of a run, to start the longest first (the order only: every run is
    trained either way): samples x epochs, times the passes its steps make."""
    from .data.registry import get_dataset
    from .methods import build_method

    samples = config.train_size or 60_000  # None: the whole training set
    try:
        method = build_method(config.method, list(get_dataset(config.dataset).modalities), **config.method_options)
        passes = 1.7 if method.per_loss_gradients else (0.5 if method.name == "unimodal" else 1.0)
    except Exception:  # an unusual method still runs; it is only scheduled as an average one
        passes = 1.0
    return samples * config.epochs * passes


def _run_local(todo: Sequence[RunConfig], report: Callable[[dict], None], *, jobs: int,
               run_kwargs: dict[str, Any], stack: int = 1) -> None:
    units = stack_groups(todo, stack)  # one run each, or up to ``stack`` seeds of a run together
    if jobs == 1:  # in this process: simplest to debug, and a notebook's Ctrl-C stops it cleanly
        for unit in units:
            for outcome in run_unit(unit, **run_kwargs):
                report(outcome)
        return
    threads = max(1, available_cores() // jobs)
    # unfinished runs first (under a time limit, finishing started work is what keeps records), then
    # the longest first, so that the last runs end together
    checkpoints = _as_store(run_kwargs["results_root"]).checkpoint_dir
    units = sorted(units, key=lambda unit: (any((checkpoints / f"{c.key}.pt").exists() for c in unit),
                                            sum(expected_cost(c) for c in unit)), reverse=True)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(units)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(run_unit, [c.to_dict() for c in unit], **run_kwargs): unit for unit in units}
        for future in as_completed(futures):
            unit = futures[future]
            try:
                for outcome in future.result():
                    report(outcome)
            except KeyboardInterrupt:  # that worker alone was interrupted: its checkpoints are kept
                for config in unit:
                    report(_failed(config, "interrupted (its checkpoint is kept)", "interrupted"))
            except BrokenProcessPool as exc:
                for config in unit:
                    report(_failed(config, f"its worker process died ({exc}); run the sweep again to resume"))
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


# -- the SLURM backend (submitit) -------------------------------------------------------
@dataclass
class SlurmOptions:
    """How to submit a sweep's runs to SLURM (the names of ``sbatch``'s options)."""

    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    time: str | int | None = None  # minutes, or SLURM's [D-]HH:MM:SS
    mem_gb: float | None = None
    account: str | None = None
    array_parallelism: int | None = None  # array tasks running at once
    folder: str | os.PathLike | None = None  # submitit's logs and pickles (default <results>/.submitit)
    extra: dict[str, Any] = field(default_factory=dict)  # further slurm_<key> parameters of submitit
    wait: bool = True
    poll_s: float = 30.0

    def parameters(self) -> dict[str, Any]:
        """The ``update_parameters`` of a submitit ``AutoExecutor``."""
        params: dict[str, Any] = {"name": "mmlab-sweep"}
        generic = {"cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb,
                   "timeout_min": None if self.time is None else slurm_minutes(self.time)}
        specific = {"partition": self.partition, "gpus_per_task": self.gpus_per_task,
                    "account": self.account, "array_parallelism": self.array_parallelism, **self.extra}
        params.update({k: v for k, v in generic.items() if v is not None})
        params.update({f"slurm_{k}": v for k, v in specific.items() if v is not None})
        return params


def slurm_minutes(text: str | int) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes."""
    if isinstance(text, (int, float)):
        return int(text)
    try:
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if days:
            parts += [0] * (3 - len(parts))
            h, m, s = parts
        else:
            h, m, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
        seconds = ((int(days or 0) * 24 + h) * 60 + m) * 60 + s
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"--slurm-time {text!r}: use minutes or SLURM's [D-]HH:MM:SS") from None
    return max(1, -(-seconds // 60))


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError("The SLURM backend needs submitit: in the clone, pip install -e '.[slurm]'") from None
    return submitit


def slurm_executor(folder: Path, parameters: Mapping[str, Any]):
    """The default executor: submitit's ``AutoExecutor`` on the SLURM cluster."""
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as exc:
        raise RuntimeError(f"The SLURM backend found no SLURM cluster here ({exc}).") from None
    executor.update_parameters(**parameters)
    return executor


class SlurmRun:
    """The job function: :func:`run_one` with the sweep's settings. submitit calls
    ``checkpoint`` when the job reaches its time limit or is preempted; it requeues
    the same call, which resumes from the run's last checkpoint."""

    def __init__(self, **run_kwargs: Any):
        self.run_kwargs = run_kwargs

    def __call__(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return run_one(config, **self.run_kwargs)

    def checkpoint(self, config: Mapping[str, Any]):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, config)


def _run_slurm(todo: Sequence[RunConfig], report: Callable[[dict], None], *, run_kwargs: dict[str, Any],
               slurm: SlurmOptions, executor_factory, log: Callable[[str], None]) -> None:
    submitit = _submitit()
    folder = Path(slurm.folder) if slurm.folder else Path(run_kwargs["results_root"]) / ".submitit"
    executor = executor_factory(folder, slurm.parameters())
    jobs = executor.map_array(SlurmRun(**run_kwargs), [config.to_dict() for config in todo])
    ids = ", ".join(job.job_id for job in jobs[:3]) + (", ..." if len(jobs) > 3 else "")
    log(f"submitted {plural('job', len(jobs))} ({ids}); logs in {folder}")
    if not slurm.wait:
        for job, config in zip(jobs, todo):
            report(_failed(config, None, "submitted") | {"job_id": job.job_id})
        return
    config_of = {id(job): config for job, config in zip(jobs, todo)}
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=slurm.poll_s):
            try:
                report({**job.result(), "job_id": job.job_id})
            except Exception as exc:  # the job itself died: time limit, memory, node failure
                last_line = (str(exc).strip().splitlines() or [repr(exc)])[-1]
                report(_failed(config_of[id(job)], f"job {job.job_id} failed: {last_line}"))
    except KeyboardInterrupt:
        log(f"Stopped waiting; the unfinished of the {len(jobs)} submitted job(s) keep running (scancel "
            "stops them). A later sweep skips the runs they record.")
        raise


# -- the sweep --------------------------------------------------------------------------
def _line(outcome: dict[str, Any], done: int, total: int) -> str:
    what = f"{outcome['dataset']} {outcome['method']} seed {outcome['seed']} ({outcome['profile']})"
    status = outcome["status"]
    if status in ("done", "skipped"):
        acc = outcome.get("test_acc")
        detail = (f"test acc {acc:.4f}" if acc is not None else "") + f", {outcome.get('wall_s') or 0:.1f} s"
        detail += ", resumed" if outcome.get("resumed") else ""
    else:
        detail = outcome.get("error") or ""
    return f"[{done}/{total}] {status:8s} {what}: {detail}"


def summarize(outcomes: Sequence[Mapping[str, Any]]):
    """The summary DataFrame of a sweep's outcomes (:data:`SUMMARY_COLUMNS`, and
    ``job_id`` for SLURM runs)."""
    import pandas as pd

    columns = SUMMARY_COLUMNS + (["job_id"] if any("job_id" in o for o in outcomes) else [])
    return pd.DataFrame([{c: o.get(c) for c in columns} for o in outcomes], columns=columns)


def describe_outcomes(summary) -> str:
    counts = summary["status"].value_counts()
    order = ["done", "failed", "interrupted", "paused", "submitted", "skipped"]
    parts = [f"{int(counts[s])} {s}" for s in order if counts.get(s)]
    return f"{plural('run', len(summary))}: " + ", ".join(parts)


def run_sweep(
    configs: Sequence[RunConfig],
    *,
    store=None,
    jobs: int | None = None,
    device: str | None = None,
    backend: str = "local",
    overwrite: bool = False,
    data_root: str | None = None,
    progress: bool = True,
    slurm: SlurmOptions | None = None,
    executor_factory: Callable[[Path, Mapping[str, Any]], Any] | None = None,
    log: Callable[[str], None] | None = None,
    time_limit: float | None = None,
    stack: int | None = None,
    cuda_graph: bool = False,
):
    """Record every run of ``configs`` that is not recorded yet; return the summary
    DataFrame (one row per run, in order: ``done``, ``failed``, ``skipped``, ...).

    ``store``: a :class:`~mmlab.results.ResultsStore` or its root (default: the
    usual results root). ``jobs``: parallel runs (local: worker processes,
    default 1; slurm: array tasks at once, default no limit). ``backend``:
    ``"local"`` or ``"slurm"`` (see the module docstring); ``executor_factory(folder,
    parameters)`` replaces submitit's SLURM executor (tests use ``DebugExecutor``).
    Before anything trains, an unreadable results file raises
    :class:`~mmlab.errors.ResultsFileError`; a failing run is reported in the
    summary and the others go on. ``log`` receives the progress lines (default:
    printed above the progress bar). ``time_limit`` (seconds from now, local backend): runs stop
    at an epoch's end rather than run past it, as ``paused`` with their checkpoints kept (runs not
    yet started when it is reached are ``paused`` too); run the sweep again to go on. ``stack``
    (local backend): train up to that many seeds of a run together in one worker
    (:func:`mmlab.training.train_stacked`: on a GPU, several small models per kernel launch).
    ``cuda_graph`` (a CUDA device): replay the full-batch steps of capturable methods from a CUDA graph
    (:mod:`mmlab.training.graph`); the others train eagerly.
    """
    from tqdm.auto import tqdm

    from .progress import progress_bar

    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    if jobs is not None and int(jobs) < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if time_limit is not None and not (time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
    if stack is not None and (int(stack) < 1 or (int(stack) > 1 and backend != "local")):
        raise ValueError(f"stack must be a whole number >= 1 and is for the local backend; got {stack} ({backend})")
    if time_limit is not None and backend != "local":
        raise ValueError("time_limit is for the local backend; on SLURM use --slurm-time (a task that "
                         "reaches it is requeued and resumes)")
    if cuda_graph and backend == "local":  # on SLURM the nodes' devices count, not this machine's
        from .training import pick_device

        if (local_device := pick_device(device)).type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device; this sweep trains on {local_device}")
    store = _as_store(store)
    configs = list({config.key: config for config in configs}.values())  # each run once
    status = sweep_status(configs, store, overwrite=overwrite)  # raises on an unreadable record
    log = log or (lambda text: tqdm.write(text, file=sys.stdout))
    log(describe_status(status))
    if stack is not None and int(stack) > 1:
        from .training import pick_device

        if pick_device(device).type == "cpu":
            log("note: --stack on a CPU trains slower than one seed at a time (the CPU benchmark record, case "
                "'uniform, 3 seeds stacked'); it is meant for a GPU, where a step is bound by kernel launches")
    todo = [c for c, s in zip(configs, status["status"]) if s != "recorded"]
    bar = progress_bar(total=len(todo), progress=progress and bool(todo), unit="run", desc="sweep", file=sys.stderr)
    outcomes: dict[str, dict[str, Any]] = {
        row.key: {**row._asdict(), "status": "skipped", "error": None}
        for row in status.itertuples(index=False) if row.status == "recorded"}
    run_kwargs = dict(results_root=str(store.root.resolve()), device=device, overwrite=overwrite,
                      data_root=None if data_root is None else str(Path(data_root).resolve()))
    if time_limit is not None:
        run_kwargs["deadline"] = time.time() + float(time_limit)
    if cuda_graph:
        run_kwargs["cuda_graph"] = True

    finished: list[dict[str, Any]] = []
    details_shown: set[str] = set()

    def report(outcome: dict[str, Any]) -> None:
        outcomes[outcome["key"]] = outcome
        bar.update(1)
        finished.append(outcome)
        log(_line(outcome, len(finished), len(todo)))
        if outcome.get("traceback"):
            log(outcome["traceback"].rstrip())
        elif outcome.get("detail") and outcome["detail"] not in details_shown:  # the same error: once
            details_shown.add(outcome["detail"])
            log(outcome["detail"])

    try:
        if todo and backend == "local":
            if device is not None:
                from .training.device import pick_device

                pick_device(device)  # an unavailable device fails here, not once per run
            _run_local(todo, report, jobs=int(jobs or 1), run_kwargs=run_kwargs, stack=int(stack or 1))
        elif todo:
            slurm = slurm or SlurmOptions()
            if jobs is not None:
                slurm = replace(slurm, array_parallelism=int(jobs))
            run_kwargs["threads"] = slurm.cpus_per_task
            _run_slurm(todo, report, run_kwargs=run_kwargs, slurm=slurm,
                       executor_factory=executor_factory or slurm_executor, log=log)
    except KeyboardInterrupt:
        bar.close()
        counts = describe_outcomes(summarize(finished)).partition(": ")[2] if finished else "none"
        log(f"Interrupted: {len(finished)} of the {len(todo)} runs to train came back ({counts}). "
            "Run the sweep again to do the rest; unfinished runs resume from their checkpoints.")
        raise
    bar.close()
    summary = summarize([outcomes.get(c.key) or _failed(c, "no result came back") for c in configs])
    log(describe_outcomes(summary))
    if (summary["status"] == "paused").any():
        log("The time limit paused some runs; run the same sweep again to resume them from their checkpoints.")
    return summary
