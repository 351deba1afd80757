"""Sweeps: the plan, skipping recorded runs, resuming, refusing unreadable records,
worker processes, the submitit (SLURM) backend, and the command line."""

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mmlab.training as training
from mmlab import NonFiniteLossError, ResultsFileError, RunConfig, UnknownNameError
from mmlab.cli import main
from mmlab.results import ResultsStore, read_record
from mmlab.sweep import (SlurmOptions, SlurmRun, available_cores, describe_status, parse_spec, plan_sweep,
                         run_sweep, slurm_minutes, sweep_status)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny runs are fastest on one thread (conftest)

REPO = Path(__file__).resolve().parent.parent
TINY = dict(train_size=256, val_size=64, test_size=128, epochs=1, batch_size=32, grad_probe_every=0, lr=0.01)
TINY_ARGS = [a for k, v in TINY.items() if k != "epochs" for a in ("--set", f"{k}={v}")] + ["--epochs", "1"]


def tiny_sweep(methods=("joint",), seeds=(0,), **overrides):
    return plan_sweep(methods=methods, seeds=seeds, profile="smoke", **{**TINY, **overrides})


@pytest.fixture
def trainings(monkeypatch):
    """Counts the trainings (``calls``: config keys, in order); a key put in
    ``interrupt`` raises KeyboardInterrupt after its first epoch, one in ``fail``
    raises NonFiniteLossError."""
    real = training.train

    def counting(config, **kwargs):
        counting.calls.append(config.key)
        if config.key in counting.fail:
            raise NonFiniteLossError("Non-finite training loss (test)")
        if config.key in counting.interrupt:
            counting.interrupt.discard(config.key)

            def stop(epoch, metrics):
                if epoch == 0:
                    raise KeyboardInterrupt

            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), stop]
        return real(config, **kwargs)

    counting.calls, counting.interrupt, counting.fail = [], set(), set()
    monkeypatch.setattr(training, "train", counting)
    return counting


def subprocess_env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


# -- the plan ---------------------------------------------------------------------------
def test_method_specs():
    assert parse_spec("joint") == ("joint", {})
    assert parse_spec("unimodal:modality=gray") == ("unimodal", {"modality": "gray"})
    assert parse_spec("ogm_ge:alpha=0.8,window_end=30,noise=false") == (
        "ogm_ge", {"alpha": 0.8, "window_end": 30, "noise": False})
    assert parse_spec("m:w=[1,2],b=3") == ("m", {"w": [1, 2], "b": 3})
    assert parse_spec(("ogm_ge", {"alpha": 1})) == ("ogm_ge", {"alpha": 1})
    for bad in ["unimodal:modality", ":alpha=1", "ogm_ge:=1", "ogm_ge:alpha=1,,", "joint:"]:
        with pytest.raises(ValueError, match="key=value|no name"):
            parse_spec(bad)


def test_plan_is_the_product_in_seed_order_with_trains_keys():
    configs = plan_sweep(methods=["joint", "unimodal:modality=gray", "joint"], profile="full")
    assert [(c.seed, c.label) for c in configs] == [
        (s, m) for s in (0, 1, 2) for m in ("joint", "unimodal-gray")]  # the profile's seeds, no duplicate
    same_as_train = RunConfig.from_profile(method="unimodal", seed=1, profile="full",
                                           method_options={"modality": "gray"})
    assert same_as_train.key in {c.key for c in configs}  # a sweep finds the records `train` made
    configs = plan_sweep(["cgmnist:jitter_variance=0.1"], ["joint"], seeds=[5], profile=["smoke", "quick"],
                         dataset_options={"val_coloring": "train"}, epochs=1)
    assert [(c.profile, c.seed, c.epochs) for c in configs] == [("smoke", 5, 1), ("quick", 5, 1)]
    assert configs[0].dataset_options == {"jitter_variance": 0.1, "protocol": "mmlab-2", "val_coloring": "train"}


def test_slurm_options_are_submitits_parameters():
    assert [slurm_minutes(t) for t in (90, "90", "30:30", "1:30:00", "2-00", "1-02:03:04")] == [
        90, 90, 31, 90, 2880, 1564]
    with pytest.raises(ValueError, match="--slurm-time"):
        slurm_minutes("soon")
    options = SlurmOptions(partition="gpu", gpus_per_task=1, cpus_per_task=4, time="4:00:00", mem_gb=16,
                           account="lab", array_parallelism=8, extra={"qos": "high"})
    assert options.parameters() == {
        "name": "mmlab-sweep", "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 240,
        "slurm_partition": "gpu", "slurm_gpus_per_task": 1, "slurm_account": "lab",
        "slurm_array_parallelism": 8, "slurm_qos": "high"}


# -- checks before anything starts ------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--method", "joint", "magic"], "Unknown method 'magic'. Valid methods: "),
    (["--method", "joint", "ogm_ge:alpah=0.8"], "Unknown ogm_ge option 'alpah'. Valid ogm_ge options: alpha"),
    (["--method", "unimodal:modality=smell"], "Unknown modality 'smell'. Valid modalities: color, gray."),
    (["--method", "ogm_ge:alpha=abc"], "option 'alpha' of method 'ogm_ge' must be a number (its default is 0.8), "
                                       "got 'abc' (str)"),
    (["--method", "metabalance:strategy=3"], "option 'strategy' of method 'metabalance' must be a word"),
    (["--method", "joint", "--set", "lr=abc"], "lr must be a finite number"),
    (["--method", "unimodal:modality"], "key=value"),
    (["--method", "joint", "--dataset", "cgmnist", "imagenet"], "Unknown dataset 'imagenet'"),
    (["--method", "joint", "--data-option", "jitter=0.1"], "Valid cgmnist options: jitter_variance"),
    (["--method", "joint", "--data-option", "jitter_variance=-1"], "jitter_variance must be a finite number >= 0"),
    (["--method", "joint", "--dataset", "avdigits", "--data-option", "image_pca_energy_removed=2"],
     "image_pca_energy_removed must be a number in [0, 1]"),
    (["--method", "joint", "--dataset", "cremad", "--data-option", "frames=0"], "frames must be a whole number"),
    (["--method", "joint", "--profile", "smoke", "huge"], "Unknown profile 'huge'"),
    (["--method", "joint", "--set", "epoch=3"], "Unknown RunConfig field"),
    (["--method", "joint", "--slurm-time", "soon"], "--slurm-time"),
])
def test_bad_names_fail_before_any_training(args, message, trainings, results_dir, capsys):
    assert main(["sweep", "--profile", "smoke", *args]) == 2
    assert message in capsys.readouterr().err
    assert trainings.calls == [] and not results_dir.exists()


def test_bad_backend_jobs_or_device_fail_before_any_training(trainings, results_dir, capsys):
    configs = tiny_sweep()
    with pytest.raises(UnknownNameError, match="Valid backends: local, slurm"):
        run_sweep(configs, backend="pbs")
    with pytest.raises(ValueError, match="jobs"):
        run_sweep(configs, jobs=0)
    with pytest.raises(RuntimeError, match="not available"):
        run_sweep(configs, device="cuda" if not __import__("torch").cuda.is_available() else "mps:7")
    if shutil.which("srun") is None:  # not on a cluster: the SLURM backend says so
        assert main(["sweep", "--profile", "smoke", "--method", "joint", "--backend", "slurm"]) == 2
        assert "no SLURM cluster" in capsys.readouterr().err
    assert trainings.calls == []


# -- skipping, resuming, refusing -------------------------------------------------------
def test_sweep_skips_recorded_runs(trainings, results_dir, capsys):
    configs = tiny_sweep(methods=["joint", "unimodal:modality=gray"], seeds=[0, 1])
    store = ResultsStore()
    training.load_or_run(configs[1], progress=False)
    before = store.path_for(configs[1]).read_bytes()
    assert list(sweep_status(configs)["status"]) == ["train", "recorded", "train", "train"]
    summary = run_sweep(configs, progress=False)
    assert "4 runs: 1 recorded, 3 to train" in capsys.readouterr().out
    assert list(summary["status"]) == ["done", "skipped", "done", "done"]
    assert trainings.calls == [configs[1].key, configs[0].key, configs[2].key, configs[3].key]
    assert store.path_for(configs[1]).read_bytes() == before
    assert summary["test_acc"].notna().all() and (summary["epochs"] == 1).all()

    again = run_sweep(configs, progress=False)
    assert list(again["status"]) == ["skipped"] * 4 and len(trainings.calls) == 4
    assert list(again["test_acc"]) == list(summary["test_acc"])


def test_sweep_names_records_made_by_other_code_and_skips_them(trainings, results_dir, capsys):
    configs = tiny_sweep(seeds=[0, 1])
    store = ResultsStore()
    for config in configs:
        training.load_or_run(config, progress=False)
    record = store.load(configs[1])
    store.save({**record, "provenance": {**record["provenance"], "source_digest": "0123456789abcdef"}},
               overwrite=True)  # as if the library had been edited since it was recorded
    status = sweep_status(configs)
    assert list(status["status"]) == ["recorded", "recorded"] and list(status["code"]) == ["", "other"]
    summary = run_sweep(configs, progress=False)
    assert "2 runs: 2 recorded (1 by other code than this: edited since, --overwrite trains them again)" in (
        capsys.readouterr().out)
    assert list(summary["status"]) == ["skipped", "skipped"] and len(trainings.calls) == 2
    assert main(["sweep", "--method", "joint", "--seed", "0", "1", "--profile", "smoke", *TINY_ARGS,
                 "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "code" in table.splitlines()[1] and table.count("other") == 2  # the summary line and the row
    run_sweep(configs, progress=False, overwrite=True)
    assert len(trainings.calls) == 4 and list(sweep_status(configs)["code"]) == ["", ""]


def test_interrupted_sweep_resumes_only_what_is_missing(trainings, results_dir, capsys):
    configs = tiny_sweep(seeds=[0, 1, 2], epochs=2)
    trainings.interrupt.add(configs[1].key)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(configs, progress=False)
    assert "Interrupted: 1 of the 3 runs to train came back (1 done)" in capsys.readouterr().out
    assert trainings.calls == [configs[0].key, configs[1].key]
    status = sweep_status(configs)
    assert list(status["status"]) == ["recorded", "resume", "train"]
    assert list(status["done"]) == [2, 1, 0]  # the interrupted run's checkpoint holds its first epoch
    assert describe_status(status) == ("3 runs: 1 recorded, 2 to train (1 resume from a checkpoint); "
                                       "3 of 6 epochs done")

    summary = run_sweep(configs, progress=False)
    assert trainings.calls[2:] == [configs[1].key, configs[2].key]
    assert list(summary["status"]) == ["skipped", "done", "done"]
    assert list(summary["resumed"])[1:] == [True, False]
    store = ResultsStore()
    resumed = store.load(configs[1])
    assert resumed["provenance"]["resumed"] is True and len(resumed["history"]) == 2
    assert store.load(configs[2])["provenance"]["resumed"] is False
    assert not list((results_dir / ".checkpoints").glob("*.pt"))  # removed once recorded


def test_unreadable_results_file_stops_the_sweep_before_training(trainings, results_dir, capsys):
    configs = tiny_sweep(seeds=[0, 1])
    path = ResultsStore().path_for(configs[1])
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "key": ')
    with pytest.raises(ResultsFileError, match=f"(?s)before training.*{path}.*cannot be parsed"):
        run_sweep(configs, progress=False)
    argv = ["sweep", "--profile", "smoke", "--method", "joint", "--seed", "0", "1", *TINY_ARGS, "--no-progress"]
    assert main(argv + ["--dry-run"]) == 2
    assert str(path) in capsys.readouterr().err
    assert main(argv) == 2
    assert str(path) in capsys.readouterr().err
    assert trainings.calls == []

    summary = run_sweep(configs, progress=False, overwrite=True)  # as `train --overwrite`: replace it
    assert list(summary["status"]) == ["done", "done"]
    assert read_record(path)["key"] == configs[1].key


# -- parallel runs ----------------------------------------------------------------------
def test_jobs_run_in_worker_processes_and_a_failure_does_not_stop_the_others(results_dir, capsys):
    configs = tiny_sweep(lr=1e6) + tiny_sweep(methods=["uniform"])  # the first one diverges
    summary = run_sweep(configs, jobs=2, device="cpu", progress=False)
    assert list(summary["status"]) == ["failed", "done"]
    assert summary["error"][0].startswith("NonFiniteLossError: Non-finite training loss")
    assert os.getpid() not in set(summary["pid"])
    assert set(summary["threads"]) == {max(1, available_cores() // 2)}
    out = capsys.readouterr().out
    assert "2 runs: 0 recorded, 2 to train" in out and "2 runs: 1 done, 1 failed" in out
    assert "failed   cgmnist joint seed 0 (smoke): NonFiniteLossError" in out
    store = ResultsStore()
    assert store.load(configs[0]) is None and store.load(configs[1])["provenance"]["resumed"] is False


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX signals")
def test_a_stopped_parallel_sweep_keeps_its_checkpoints_and_resumes(results_dir):
    """SIGTERM to ``python -m mmlab sweep --jobs 2`` mid-run, then the same sweep again."""
    configs = tiny_sweep(seeds=[0, 1], epochs=8)  # long enough that the signal lands mid-run
    argv = [sys.executable, "-m", "mmlab", "sweep", "--profile", "smoke", "--method", "joint", "--seed", "0", "1",
            *TINY_ARGS, "--epochs", "8", "--jobs", "2", "--results", str(results_dir),
            "--no-progress"]
    proc = subprocess.Popen(argv, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    checkpoints = [results_dir / ".checkpoints" / f"{c.key}.pt" for c in configs]
    deadline = time.monotonic() + 120
    while not any(p.exists() for p in checkpoints) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and any(p.exists() for p in checkpoints), "no run was mid-way when the signal was due"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Interrupted" in out
    store = ResultsStore()
    stopped = [c for c in configs if (results_dir / ".checkpoints" / f"{c.key}.pt").exists()]
    assert stopped and all(store.load(c) is None for c in stopped), (out, err)  # stopped mid-run

    summary = run_sweep(configs, progress=False)
    rows = dict(zip(summary["key"], summary.to_dict("records")))
    for c in stopped:
        assert rows[c.key]["status"] == "done" and rows[c.key]["resumed"] is True
        assert len(store.load(c)["history"]) == 8


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_background_sweep_stops_on_sigint(results_dir):
    """``python -m mmlab sweep ... &`` in a script starts with SIGINT ignored; ``kill -INT`` still
    stops it (one run, in the sweep's own process), with the run's checkpoint kept."""
    config = tiny_sweep(epochs=30)[0]  # stopped long before its end
    argv = [sys.executable, "-m", "mmlab", "sweep", "--profile", "smoke", "--method", "joint", "--seed", "0",
            *TINY_ARGS, "--epochs", "30", "--results", str(results_dir), "--no-progress"]
    proc = subprocess.Popen(argv, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    checkpoint = results_dir / ".checkpoints" / f"{config.key}.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and checkpoint.exists(), "the run was not mid-way when the signal was due"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Interrupted" in out and checkpoint.exists()


# -- the SLURM backend, through submitit's own test executors ---------------------------
def test_slurm_backend_through_submitits_debug_executor(results_dir):
    import submitit

    seen = {}

    def factory(folder, parameters):
        seen.update(folder=folder, parameters=parameters)
        return submitit.DebugExecutor(folder)

    configs = tiny_sweep(seeds=[0, 1])
    summary = run_sweep(configs, backend="slurm", jobs=4, progress=False, executor_factory=factory,
                        slurm=SlurmOptions(partition="gpu", gpus_per_task=1, time="1:30:00", poll_s=0.01))
    assert seen["folder"] == results_dir.resolve() / ".submitit"
    assert seen["parameters"] == {"name": "mmlab-sweep", "timeout_min": 90, "slurm_partition": "gpu",
                                  "slurm_gpus_per_task": 1, "slurm_array_parallelism": 4}
    assert list(summary["status"]) == ["done", "done"] and summary["job_id"].notna().all()
    assert all(ResultsStore().load(c) for c in configs)

    again = run_sweep(configs, backend="slurm", progress=False, executor_factory=factory)
    assert list(again["status"]) == ["skipped", "skipped"]  # nothing submitted

    more = tiny_sweep(seeds=[2])
    submitted = run_sweep(more, backend="slurm", progress=False, executor_factory=factory,
                          slurm=SlurmOptions(wait=False))
    assert list(submitted["status"]) == ["submitted"] and submitted["job_id"].notna().all()


def test_slurm_jobs_requeue_the_same_run_and_a_dead_job_is_reported(results_dir):
    job_fn = SlurmRun(results_root=str(results_dir), device="cpu")
    config = tiny_sweep()[0].to_dict()
    requeued = job_fn.checkpoint(config)  # submitit calls this at the time limit, then resubmits it
    assert requeued.function is job_fn and requeued.args == (config,)
    assert pickle.loads(pickle.dumps(job_fn)).run_kwargs == job_fn.run_kwargs

    class DeadJob:
        job_id = "42_0"

        def done(self, force_check=False):
            return True

        def result(self):
            raise RuntimeError("Job 42_0 (task: 0) with path ...\nhas not produced any output (state: TIMEOUT)")

    class Executor:
        def map_array(self, fn, configs):
            return [DeadJob() for _ in configs]

    summary = run_sweep(tiny_sweep(), backend="slurm", progress=False, executor_factory=lambda f, p: Executor(),
                        slurm=SlurmOptions(poll_s=0.01))
    assert list(summary["status"]) == ["failed"]
    assert summary["error"][0] == "job 42_0 failed: has not produced any output (state: TIMEOUT)"


def test_slurm_backend_through_submitits_local_executor(results_dir, monkeypatch):
    """A real job process: pickled, started by submitit, training into the same results root."""
    import submitit

    monkeypatch.setenv("PYTHONPATH", str(REPO))

    def factory(folder, parameters):
        executor = submitit.LocalExecutor(folder)
        executor.update_parameters(timeout_min=5)
        return executor

    configs = tiny_sweep()
    summary = run_sweep(configs, backend="slurm", progress=False, executor_factory=factory,
                        slurm=SlurmOptions(cpus_per_task=1, poll_s=0.2))
    assert list(summary["status"]) == ["done"], summary["error"][0]
    assert summary["pid"][0] != os.getpid() and summary["threads"][0] == 1
    assert ResultsStore().load(configs[0])["provenance"]["resumed"] is False


# -- the command line -------------------------------------------------------------------
def test_cli_dry_run_end_to_end(results_dir):
    configs = plan_sweep(methods=["joint", "unimodal:modality=gray"], seeds=[0, 1], profile="smoke", **TINY)
    training.load_or_run(configs[1], progress=False)
    argv = [sys.executable, "-m", "mmlab", "sweep", "--profile", "smoke", "--method", "joint",
            "unimodal:modality=gray", "--seed", "0", "1", *TINY_ARGS, "--results", str(results_dir), "--dry-run"]
    done = subprocess.run(argv, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "4 runs: 1 recorded, 3 to train"
    assert lines[1].split() == ["profile", "dataset", "method", "seed", "epochs", "done", "status", "test_acc"]
    assert [line.split()[2:4] + line.split()[6:7] for line in lines[2:]] == [
        ["joint", "0", "train"], ["unimodal-gray", "0", "recorded"], ["joint", "1", "train"],
        ["unimodal-gray", "1", "train"]]
    assert sorted(p.name for p in results_dir.rglob("*") if p.is_file()) == [
        ResultsStore(results_dir).path_for(configs[1]).name]  # nothing else was written


def test_a_dry_run_refuses_what_the_sweep_would_refuse(results_dir, capsys):
    """A dry run plans the sweep: --jobs 0 used to print a normal table there and fail only when run."""
    argv = ["sweep", "--profile", "smoke", "--method", "joint", "--seed", "0", *TINY_ARGS, "--results",
            str(results_dir), "--dry-run"]
    for bad in (["--jobs", "0"], ["--jobs", "-3"], ["--stack", "0"]):
        assert main(argv + bad) == 2, bad
        err = capsys.readouterr().err
        assert ("jobs must be at least 1" if bad[0] == "--jobs" else "stack must be a whole number >= 1") in err
    assert main(argv + ["--jobs", "2"]) == 0 and "1 run: 0 recorded, 1 to train" in capsys.readouterr().out


def test_cli_sweep_reports_each_run_and_exits_1_on_a_failure(trainings, results_dir, capsys):
    failing = tiny_sweep(methods=["uniform"])[0]
    trainings.fail.add(failing.key)
    argv = ["sweep", "--profile", "smoke", "--method", "joint", "uniform", "--seed", "0", *TINY_ARGS,
            "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "2 runs: 0 recorded, 2 to train" in out
    assert "[1/2] done     cgmnist joint seed 0 (smoke): test acc" in out
    assert "[2/2] failed   cgmnist uniform seed 0 (smoke): NonFiniteLossError" in out
    table = out.splitlines()[-3:]
    assert table[0].split()[:8] == ["profile", "dataset", "method", "seed", "status", "test_acc", "epochs",
                                    "wall_s"]
    assert table[1].split()[2:5] == ["joint", "0", "done"] and table[2].split()[2:5] == ["uniform", "0", "failed"]

    trainings.fail.clear()
    assert main(argv) == 0
    assert "2 runs: 1 recorded, 1 to train" in capsys.readouterr().out


def test_parallel_sweeps_start_the_longest_runs_first():
    from mmlab.sweep import expected_cost

    def cost(method, **options):
        return expected_cost(RunConfig.from_profile(profile="quick", method=method, method_options=options))

    assert cost("mmpareto") > cost("uniform") > cost("unimodal", modality="gray")
    assert cost("uniform") == cost("joint")


def test_parallel_sweeps_start_unfinished_runs_first(results_dir, monkeypatch):
    """Under a time limit, finishing a started run keeps a record; so runs with a checkpoint go
    first, then the longest."""
    import mmlab.sweep as sweep

    configs = tiny_sweep(methods=["unimodal:modality=gray", "mmpareto", "joint"])
    store = ResultsStore(results_dir)
    store.checkpoint_dir.mkdir(parents=True)
    (store.checkpoint_dir / f"{configs[0].key}.pt").write_bytes(b"")  # the cheapest one was started

    started = []

    class Pool:  # records the order of submission; runs nothing
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, unit, **kwargs):
            started.append(unit[0]["method"])
            from concurrent.futures import Future

            future = Future()
            future.set_result([{"key": RunConfig.from_dict(c).key, "status": "skipped"} for c in unit])
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(sweep, "ProcessPoolExecutor", Pool)
    sweep._run_local(configs, lambda outcome: None, jobs=2, run_kwargs={"results_root": str(results_dir)})
    assert started == ["unimodal", "mmpareto", "joint"]


def test_a_worker_that_dies_or_is_interrupted_fails_its_runs_and_the_others_are_reported(results_dir, monkeypatch):
    """A worker killed (e.g. out of memory: BrokenProcessPool) or interrupted fails its own unit with the reason;
    the other units' outcomes still come back."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    import mmlab.sweep as sweep

    configs = tiny_sweep(methods=["joint", "uniform", "mmpareto"])
    fates = {"joint": BrokenProcessPool("killed"), "uniform": KeyboardInterrupt()}

    class Pool:
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, fn, unit, **kwargs):
            future = Future()
            method = unit[0]["method"]
            if method in fates:
                future.set_exception(fates[method])
            else:
                future.set_result([{"key": RunConfig.from_dict(c).key, "status": "done"} for c in unit])
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(sweep, "ProcessPoolExecutor", Pool)
    outcomes = []
    sweep._run_local(configs, outcomes.append, jobs=3, run_kwargs={"results_root": str(results_dir)})
    by_method = {o["method"]: o for o in outcomes if "method" in o}
    assert by_method["joint"]["status"] == "failed" and "worker process died" in by_method["joint"]["error"]
    assert by_method["uniform"]["status"] == "interrupted" and "checkpoint is kept" in by_method["uniform"]["error"]
    assert sum(o["status"] == "done" for o in outcomes) == 1 and len(outcomes) == 3


def test_a_time_limit_pauses_the_sweep_and_the_same_sweep_resumes(results_dir, capsys):
    """``--time-limit``: runs that would not finish are ``paused`` (exit status 3) rather than
    cut off; the same command, run again, records them."""
    argv = ["sweep", "--profile", "smoke", "--method", "joint", "--seed", "0", "1", *TINY_ARGS,
            "--no-progress"]
    assert main(argv + ["--time-limit", "0.001"]) == 3  # over before any run could start an epoch
    out = capsys.readouterr().out
    assert "2 runs: 2 paused" in out and "run the same sweep again to resume" in out
    assert "time limit: joint seed 0 stopped before epoch 1 of 1; no epoch was trained" in out
    assert main(argv + ["--time-limit", "2h"]) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out


@pytest.mark.parametrize("text, seconds", [("900", 900), ("900s", 900), ("50m", 3000), ("1.5h", 5400)])
def test_time_limit_durations(text, seconds):
    from mmlab.cli import _parse_duration

    assert _parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "-5m", "m"])
def test_bad_time_limits_are_refused_with_the_format(text, results_dir, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--method", "joint", f"--time-limit={text}"])
    err = capsys.readouterr().err
    assert "--time-limit" in err and ("is not a duration: write e.g. 900, 50m or 2h" in err
                                      or "the time limit must be positive" in err)


def test_stack_groups_hold_seeds_of_one_run():
    from mmlab.sweep import stack_groups

    configs = tiny_sweep(methods=["joint", "uniform"], seeds=(0, 1, 2))  # seed-major order
    groups = stack_groups(configs, 2)
    assert [[(c.method, c.seed) for c in g] for g in groups] == [
        [("joint", 0), ("joint", 1)], [("joint", 2)], [("uniform", 0), ("uniform", 1)], [("uniform", 2)]]
    assert stack_groups(configs, 1) == [[c] for c in configs]
    with pytest.raises(ValueError, match="at least 1"):
        stack_groups(configs, 0)


def test_cli_stack_trains_seeds_together_and_records_each(results_dir, capsys):
    argv = ["sweep", "--profile", "smoke", "--method", "joint", "--seed", "0", "1", *TINY_ARGS, "--no-progress",
            "--device", "cpu", "--stack", "2"]
    assert main(argv + ["--time-limit", "0.001"]) == 3  # a group pauses as a whole
    out = capsys.readouterr().out
    assert "2 runs: 2 paused" in out and "--stack on a CPU trains slower" in out
    assert main(argv) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out
    records = ResultsStore(results_dir).records(profile="smoke")
    assert sorted(r["config"]["seed"] for r in records) == [0, 1]
    assert all(r["provenance"]["stacked_runs"] == 2 for r in records)
    assert not list(ResultsStore(results_dir).checkpoint_dir.glob("*.pt"))  # removed once recorded
    assert main(argv) == 0 and "2 runs: 2 recorded, 0 to train" in capsys.readouterr().out
    assert main(argv[:-2] + ["--stack", "0"]) == 2
    assert "stack must be a whole number >= 1" in capsys.readouterr().err


def test_slurm_sweeps_leave_the_cuda_graph_check_to_the_nodes(results_dir):
    """This machine's device does not decide for SLURM nodes: the sweep is submitted, and a node without
    CUDA reports the run failed with the reason (here, submitit's debug executor runs it on the CPU)."""
    import submitit

    summary = run_sweep(tiny_sweep(), backend="slurm", progress=False, device="cpu", cuda_graph=True,
                        executor_factory=lambda folder, parameters: submitit.DebugExecutor(folder),
                        slurm=SlurmOptions(poll_s=0.01))
    assert list(summary["status"]) == ["failed"]
    assert "CUDA graphs need a CUDA device" in summary["error"][0]
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):  # locally, refused at once
        run_sweep(tiny_sweep(), progress=False, device="cpu", cuda_graph=True)


def test_a_data_error_is_shown_whole_once_not_cut_to_its_first_line(results_dir, monkeypatch, capsys):
    from mmlab.data import DataNotFoundError

    def missing(config, **kwargs):
        raise DataNotFoundError("MNIST could not be found on this machine.\nSearched: /nowhere/mnist\n"
                                "How to fix: pass --data FOLDER")

    monkeypatch.setattr(training, "train", missing)
    summary = run_sweep(tiny_sweep(methods=["joint", "uniform"]), progress=False)
    assert list(summary["status"]) == ["failed", "failed"]
    assert summary["error"][0] == "DataNotFoundError: MNIST could not be found on this machine."
    out = capsys.readouterr().out
    assert out.count("Searched: /nowhere/mnist") == 1 and out.count("How to fix: pass --data FOLDER") == 1
    assert "Traceback" not in out
