"""Command line: ``python -m mmlab train ...``, ``python -m mmlab sweep ...`` (see
:mod:`mmlab.sweep`), ``python -m mmlab preprocess-cremad ...`` (see :mod:`mmlab.data.cremad`)
and ``python -m mmlab list``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import NonFiniteLossError, ResultsFileError, UnknownNameError


def _catalogue() -> str:
    from .data.registry import DATASETS
    from .methods import METHODS
    from .profiles import PROFILES

    width = max(map(len, [*DATASETS, *METHODS, *PROFILES]))
    lines = ["datasets:"]
    lines += [f"  {n:{width}s} {d.description} (modalities: {', '.join(d.modalities)})" for n, d in DATASETS.items()]
    lines.append("methods:")
    for n, factory in METHODS.items():
        # the docstring's first sentence, however many lines it spans
        summary = " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split())
        lines.append(f"  {n:{width}s} {summary}")
    lines.append("profiles:")
    lines += [f"  {n:{width}s} {p.description}" for n, p in PROFILES.items()]
    return "\n".join(lines)


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"options look like key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmlab", description="Balanced multimodal learning, executable.",
        epilog=_catalogue(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run (or load its stored record)", epilog=_catalogue(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--dataset", default="cgmnist", help="a dataset of the catalogue below (default: cgmnist)")
    t.add_argument("--method", default="uniform", help="a method of the catalogue below (default: uniform)")
    t.add_argument("--modality", help="the modality, for --method unimodal")
    t.add_argument("--option", "-o", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="a method option (repeatable)")
    t.add_argument("--data-option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="a dataset option, e.g. jitter_variance=0.1 (repeatable)")
    t.add_argument("--seed", type=int, default=0, help="the run's seed (default: 0)")
    t.add_argument("--profile", default=None, help="smoke, quick or full (default: $MMLAB_PROFILE or quick)")
    t.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    t.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default: auto, the best available)")
    t.add_argument("--results", default=None,
                   help="results folder (default: $MMLAB_RESULTS, else the results/ folder of the book's "
                        "checkout the command runs in, else ./mmlab-results)")
    t.add_argument("--data", default=None, help="data folder (default: $MMLAB_DATA, then a download)")
    t.add_argument("--overwrite", action="store_true", help="train again and replace a stored record")
    t.add_argument("--measure-imbalance", action="store_true",
                   help="record learning speeds per step and utilization rates per epoch (chapter 2)")
    t.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="forward-pass arithmetic: fp32, or bf16 autocast (for CREMA-D's ResNets on a GPU)")
    t.add_argument("--cuda-graph", action="store_true",
                   help="replay each full-batch step from a CUDA graph captured once (a GPU; see sweep --help)")
    t.add_argument("--no-progress", action="store_true")
    _add_sweep_parser(sub)
    _add_preprocess_parser(sub)
    sub.add_parser("list", help="list datasets, methods and profiles")
    return parser


def _add_sweep_parser(sub) -> None:
    s = sub.add_parser(
        "sweep", help="record many runs: datasets x methods x seeds x profiles, in parallel or on SLURM",
        description="Record every run of datasets x methods x seeds x profiles that is not recorded yet;\n"
        "unfinished runs resume from their checkpoints. A method (or dataset) is NAME or\n"
        "NAME:KEY=VALUE[,KEY=VALUE...], e.g. unimodal:modality=gray or ogm_ge:alpha=0.8,window_end=30.\n"
        "Exit status: 0 all recorded, 1 a run failed, 2 a bad name or an unreadable results file,\n"
        "3 the time limit paused runs (run again to resume), 130 interrupted.",
        epilog=_catalogue(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--method", "-m", nargs="+", action="extend", metavar="METHOD",
                   help="method specs (repeatable); required unless --plan")
    s.add_argument("--plan", action="store_true",
                   help="every run of each dataset's reproduction table (the reproduction chapter; mmlab.reproduction)")
    s.add_argument("--study", choices=["sensitivity", "calibration", "heldout", "schedules", "field"],
                   help="chapter 1's runs of CG-MNIST's unknown generator: 'sensitivity', the study of its knobs "
                        "(mmlab.sensitivity; profile sensitivity); 'calibration', the joint loss evaluated at several "
                        "test agreements; 'heldout', the six other rows of Table 3 under the frozen protocol mmlab-2 "
                        "(mmlab.calibration; profile full). 'schedules': chapter 6's records, UDI, MLA, ReconBoost "
                        "and Diagnosing & Re-learning per seed and UDI's four ablations for seed 0 on CG-MNIST "
                        "(mmlab.reproduction.schedule_configs; profile full; --dataset avdigits for the digits). "
                        "'field': the field's other methods (uncertainty weighting, CGGM, MMCosine, UME, UMT) per seed, the "
                        "same way (mmlab.reproduction.field_configs). "
                        "--profile and --seed choose others")
    s.add_argument("--dataset", nargs="+", action="extend", metavar="DATASET",
                   help="dataset specs (default: cgmnist)")
    s.add_argument("--seed", nargs="+", action="extend", type=int, metavar="SEED",
                   help="seeds (default: each profile's seeds)")
    s.add_argument("--profile", nargs="+", action="extend", metavar="PROFILE",
                   help="profiles (default: $MMLAB_PROFILE or quick)")
    s.add_argument("--data-option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="a dataset option for every dataset (repeatable)")
    s.add_argument("--epochs", type=int, help="override the profiles' number of epochs")
    s.add_argument("--measure-imbalance", action="store_true", help="as for train (chapter 2)")
    s.add_argument("--set", action="append", type=_parse_option, default=[], metavar="FIELD=VALUE",
                   dest="overrides", help="override a RunConfig field, e.g. train_size=1000 (repeatable)")
    s.add_argument("--jobs", "-j", type=int, default=None,
                   help="runs at once: local worker processes (default 1: in this process); "
                   "slurm: array tasks running at once")
    s.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default: auto, the best available); "
                   "with cuda, the --jobs runs share the GPU")
    s.add_argument("--results", default=None,
                   help="results folder (default: $MMLAB_RESULTS, else the results/ folder of the book's "
                        "checkout the command runs in, else ./mmlab-results)")
    s.add_argument("--data", default=None, help="data folder (default: $MMLAB_DATA, then a download)")
    s.add_argument("--overwrite", action="store_true",
                   help="train every run again and replace its record (unreadable ones too)")
    s.add_argument("--stack", type=int, default=None, metavar="K",
                   help="train up to K seeds of each run together in one worker, their encoders as one "
                   "batched computation (for a GPU, where a small model's step is bound by kernel launches)")
    s.add_argument("--cuda-graph", action="store_true",
                   help="replay each full-batch training step from a CUDA graph captured once (a GPU; methods "
                   "that are not capturable train eagerly). CG-MNIST's small models are launch-bound on a GPU: "
                   "the Benchmarks page shows what capture gains (check it first: scripts/check_cuda_graph.py)")
    s.add_argument("--time-limit", type=_parse_duration, default=None, metavar="DURATION",
                   help="stop in time, e.g. 50m, 2h or 900 (seconds): no run starts an epoch it would not "
                   "finish by then; paused runs keep their checkpoints and resume when run again")
    s.add_argument("--dry-run", action="store_true", help="show what is recorded and what would train; train nothing")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (per-run lines are still printed)")
    s.add_argument("--backend", default="local", choices=["local", "slurm"],
                   help="local (default) or slurm (in the clone: pip install -e '.[slurm]')")
    g = s.add_argument_group("slurm backend (submitit)")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-gpus-per-task", type=int)
    g.add_argument("--slurm-cpus-per-task", type=int, help="also the torch threads of each run")
    g.add_argument("--slurm-time", help="time limit per run: minutes or [D-]HH:MM:SS")
    g.add_argument("--slurm-mem-gb", type=float)
    g.add_argument("--slurm-account")
    g.add_argument("--slurm-folder", help="submitit's logs (default: <results>/.submitit)")
    g.add_argument("--slurm-param", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="any other slurm_KEY parameter of submitit, e.g. qos=high (repeatable)")
    g.add_argument("--no-wait", action="store_true", help="submit the jobs and return")


def _parse_duration(text: str) -> float:
    """``"900"``, ``"900s"``, ``"50m"``, ``"2h"``, ``"1.5h"`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(number) * units[unit.lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write e.g. 900, 50m or 2h") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"the time limit must be positive, got {text!r}")
    return seconds


def _reproduction_plan(args, overrides):
    from .reproduction import reproduction_configs

    if args.method:
        raise ValueError("--plan trains the reproduction table's runs: leave out --method (or drop --plan)")
    if args.data_option:
        overrides = {**overrides, "dataset_options": dict(args.data_option)}
    configs = []
    for profile in args.profile or [None]:
        for dataset in args.dataset or ["cgmnist"]:
            configs += reproduction_configs(dataset, profile, seeds=args.seed, **overrides)
    return configs


def _knob_study(args, overrides):
    from .calibration import calibration_configs, heldout_configs
    from .sensitivity import STUDY_PROFILE, study_configs

    if args.study in ("schedules", "field"):
        from .reproduction import field_configs, schedule_configs

        if args.method or args.plan or args.data_option or overrides:
            raise ValueError("--study trains the study's own runs: leave out --method, --plan, "
                             "--data-option, --epochs and --set")
        make = schedule_configs if args.study == "schedules" else field_configs
        return [config for dataset in args.dataset or ["cgmnist"] for profile in args.profile or ["full"]
                for config in make(profile, seeds=args.seed or (0, 1, 2), dataset=dataset)]
    if args.method or args.plan or args.data_option or args.dataset or overrides:
        raise ValueError("--study trains the study's own runs: leave out --method, --plan, --dataset, "
                         "--data-option, --epochs and --set")
    if args.study == "sensitivity":
        return [config for profile in args.profile or [STUDY_PROFILE]
                for seed in args.seed or [0] for config in study_configs(profile, seed)]
    make = calibration_configs if args.study == "calibration" else heldout_configs
    return [config for profile in args.profile or ["full"]
            for config in make(seeds=args.seed or (0, 1, 2), profile=profile)]


def _add_preprocess_parser(sub) -> None:
    p = sub.add_parser(
        "preprocess-cremad", help="turn the raw CREMA-D release into the cache the training reads (chapter 5)",
        description="Decode CREMA-D's AudioWAV/*.wav and VideoFlash/*.flv once into memory-mapped arrays\n"
        "(frames at 1 fps, log-spectrograms). Resumable: run it again after an interruption.\n"
        "How to get CREMA-D: book/cremad.md.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw_root", help="the folder that holds AudioWAV/ and VideoFlash/")
    p.add_argument("--cache-dir", default=None, help="where the cache goes (default: $MMLAB_CACHE/cremad "
                   "or ~/.cache/mmlab/cremad)")
    p.add_argument("--split-dir", default=None, help="folder with OGM-GE's train.csv and test.csv "
                   "(default: $MMLAB_DATA/cremad, then the raw folder)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU count)")
    p.add_argument("--frames-per-clip", type=int, default=3)
    p.add_argument("--frame-size", type=int, default=224)
    p.add_argument("--overwrite", action="store_true", help="rebuild a cache made with other settings")
    p.add_argument("--skip-unreadable", action="store_true", help="leave out clips whose files cannot be decoded")
    p.add_argument("--no-progress", action="store_true")


def _preprocess(args) -> int:
    from .data.cremad import preprocess_cremad
    from .data.errors import DataIntegrityError, DataNotFoundError

    try:
        path = preprocess_cremad(args.raw_root, args.cache_dir, split_dir=args.split_dir, workers=args.workers,
                                 frames_per_clip=args.frames_per_clip, frame_size=args.frame_size,
                                 overwrite=args.overwrite, skip_unreadable=args.skip_unreadable,
                                 progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: the clips written so far are kept; run the same command again to go on.",
              file=sys.stderr)
        return 130
    except (DataNotFoundError, DataIntegrityError, ValueError, RuntimeError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"CREMA-D cache ready: {path}")
    return 0


def _table(frame) -> str:
    """A sweep's DataFrame as text: accuracies to 4 decimals, seconds to 1, blanks for missing values."""
    formats = {"test_acc": "{:.4f}".format, "wall_s": "{:.1f}".format}
    shown = frame.astype(object).where(frame.notna(), None)
    for column, fmt in formats.items():
        if column in shown:
            shown[column] = [("" if v is None else fmt(v)) for v in shown[column]]
    if "error" in shown:  # the whole message is on the run's line above
        shown["error"] = [("" if e is None else e if len(e) <= 60 else e[:57] + "...") for e in shown["error"]]
    return shown.fillna("").to_string(index=False)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops a sweep as Ctrl-C does: unfinished runs keep their checkpoints


def _sweep(args) -> int:
    import signal

    from .data.errors import DataIntegrityError, DataNotFoundError
    from .results import ResultsStore
    from .sweep import SlurmOptions, describe_status, plan_sweep, run_sweep, sweep_status

    try:
        overrides = dict(args.overrides)
        if args.epochs is not None:  # 0 too: the config refuses it by name rather than falling back
            overrides["epochs"] = args.epochs
        if args.measure_imbalance:
            overrides["measure_imbalance"] = True
        if args.study:
            configs = _knob_study(args, overrides)
        elif args.plan:
            configs = _reproduction_plan(args, overrides)
        elif not args.method:
            raise ValueError("name the runs: --method METHOD [...], or --plan for the reproduction table's runs")
        else:
            configs = plan_sweep(args.dataset or ["cgmnist"], args.method, seeds=args.seed, profile=args.profile,
                                 dataset_options=dict(args.data_option), **overrides)
        store = ResultsStore(args.results)
        slurm = SlurmOptions(partition=args.slurm_partition, gpus_per_task=args.slurm_gpus_per_task,
                             cpus_per_task=args.slurm_cpus_per_task, time=args.slurm_time,
                             mem_gb=args.slurm_mem_gb, account=args.slurm_account, folder=args.slurm_folder,
                             extra=dict(args.slurm_param), wait=not args.no_wait)
        slurm.parameters()  # a bad --slurm-time fails here
        if args.stack is not None and args.stack < 1:  # here, so that a dry run says it too
            raise ValueError(f"stack must be a whole number >= 1, got {args.stack}")
        if args.jobs is not None and args.jobs < 1:  # as run_sweep says it, a dry run too
            raise ValueError(f"jobs must be at least 1, got {args.jobs}")
        if args.dry_run:
            status = sweep_status(configs, store, overwrite=args.overwrite)
            print(describe_status(status))
            hidden = ["key", "path"] + ([] if (status["code"] == "other").any() else ["code"])
            print(_table(status.drop(columns=hidden)))
            if args.device and args.backend == "local":  # a plan only; but say now what the sweep would stop on
                from .training.device import pick_device

                try:
                    pick_device(args.device)
                except (ValueError, RuntimeError) as exc:
                    print(f"note: the sweep itself would stop here: {exc}", file=sys.stderr)
            return 0
        previous = signal.signal(signal.SIGTERM, _interrupt)
        # Ctrl-C or `kill -INT` stops it even where it was started with SIGINT ignored (`cmd &` in a script)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            summary = run_sweep(configs, store=store, jobs=args.jobs, device=args.device, backend=args.backend,
                                overwrite=args.overwrite, data_root=args.data, progress=not args.no_progress,
                                slurm=slurm, time_limit=args.time_limit, stack=args.stack,
                                cuda_graph=args.cuda_graph)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    except KeyboardInterrupt:
        return 130
    except (UnknownNameError, TypeError, ValueError, DataNotFoundError, DataIntegrityError, ResultsFileError,
            ImportError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_table(summary.drop(columns=["key", "host", "pid", "threads"])))
    if summary["status"].isin(["failed", "interrupted"]).any():
        return 1
    return 3 if (summary["status"] == "paused").any() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        print(_catalogue())
        return 0
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "preprocess-cremad":
        return _preprocess(args)
    from .config import RunConfig
    from .data.errors import DataIntegrityError, DataNotFoundError
    from .results import ResultsStore
    from .training import load_or_run, pick_device

    try:
        options = dict(args.option)
        if args.modality is not None:
            options["modality"] = args.modality
        overrides = {"epochs": args.epochs} if args.epochs is not None else {}
        if args.measure_imbalance:
            overrides["measure_imbalance"] = True
        if args.precision != "fp32":
            overrides["precision"] = args.precision
        config = RunConfig.from_profile(
            dataset=args.dataset, method=args.method, seed=args.seed, profile=args.profile,
            method_options=options, dataset_options=dict(args.data_option), **overrides,
        )
        pick_device(args.device)  # a bad --device fails even when the record exists and nothing trains
        store = ResultsStore(args.results)
        record = load_or_run(config, store=store, overwrite=args.overwrite, device=args.device,
                             progress=not args.no_progress, data_root=args.data, cuda_graph=args.cuda_graph)
    except (UnknownNameError, TypeError, ValueError, DataNotFoundError, DataIntegrityError,
            NonFiniteLossError, ResultsFileError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    final = record["final"]
    print(f"{config.label} seed {config.seed} ({config.profile}): test acc {final['test/acc']:.4f}, "
          f"macro-F1 {final['test/f1']:.4f} after {final['epoch']} epochs")
    for key in sorted(k for k in final if k.startswith("test/acc/")):
        print(f"  {key}: {final[key]:.4f}")
    print(f"record: {store.path_for(config)}")
    return 0
