"""The captured training step (mmlab.training.graph): on a CPU, with EmulatedGraphs, every part but
the CUDA graph itself -- static buffers, logs summed on the device, eager probe / warm-up / last
steps, the host's step counters -- must give the record an eager run gives."""

import math
import time
import types
import warnings

import pytest
import torch

from mmlab.errors import NotCapturableError
from mmlab.metrics import global_norm
from mmlab.methods import METHODS, build_method
from mmlab.methods.baselines import UniformBaseline
from mmlab.training import train, train_stacked
from mmlab.training.checkpoint import load_checkpoint
from mmlab.training.graph import CudaGraphs, EmulatedGraphs, StepRecorder, is_capturable

from conftest import without_timing

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny runs are fastest on one thread (conftest)


def _close(a, b, rel=1e-9):
    """Two histories equal, numbers to ``rel`` (a sum of the logs over an epoch is taken in another order)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float) and not (math.isnan(x[key]) and math.isnan(y[key])):
                assert x[key] == pytest.approx(y[key], rel=rel, abs=1e-12), key
            else:
                assert x[key] == y[key], key


# 256 samples at batch 24: 10 full batches and a last one of 16 (eager); probes every 3rd step (eager)
SIZES = dict(train_size=256, batch_size=24, grad_probe_every=3, epochs=2)


@pytest.mark.parametrize("method", ["uniform", "mmpareto", "mgda", "pcgrad", "joint"])
def test_replayed_steps_give_the_eager_record(method, tiny_config, tmp_path):
    config = tiny_config(method, **SIZES)
    eager = train(config, checkpoint_dir=tmp_path / "eager", progress=False)
    graphs = EmulatedGraphs()
    replayed = train(config, checkpoint_dir=tmp_path / "graph", progress=False, cuda_graph=graphs)
    assert graphs.captures == 1
    # 11 steps per epoch, 22 in all, eager: 8 probes (steps 0, 3, ..., 21), the last batch of the first
    # epoch (step 10; the second's, step 21, is a probe), 3 warm-up steps (1, 2, 4); the rest replayed
    expected = 22 - len(range(0, 22, 3)) - 1 - 3
    assert graphs.replays == expected
    assert replayed["provenance"]["cuda_graph"] == {"backend": "emulated", "captured": True,
                                                    "replayed_steps": expected, "graphs": 1}
    _close(without_timing(eager["history"]), without_timing(replayed["history"]))
    assert "cuda_graph" not in eager["provenance"]


@pytest.mark.parametrize("method", ["ogm_ge", "opm"])
def test_methods_with_phases_capture_one_graph_per_phase(method, tiny_config, tmp_path):
    """OGM-GE and OPM act inside their window of epochs only (here the first epoch): a graph per phase,
    each after its own warm-up, and their random draws (GE noise, OPM's drops) as in the eager run."""
    config = tiny_config(method, method_options={"window_end": 1}, **SIZES)
    eager = train(config, checkpoint_dir=tmp_path / "eager", progress=False)
    graphs = EmulatedGraphs()
    replayed = train(config, checkpoint_dir=tmp_path / "graph", progress=False, cuda_graph=graphs)
    # epoch 1: probes 0, 3, 6, 9, last batch 10, warm-up 1, 2, 4 -> 5, 7, 8 replayed;
    # epoch 2: probes 12, ..., 21 (the last batch), warm-up 11, 13, 14 -> 16, 17, 19, 20
    assert (graphs.captures, graphs.replays) == (2, 7) and replayed["provenance"]["cuda_graph"]["graphs"] == 2
    _close(without_timing(eager["history"]), without_timing(replayed["history"]))
    assert any(k.startswith(("train/ogm_coefficient", "train/opm_drop")) for k in replayed["history"][0])


def test_a_capture_the_device_refuses_leaves_the_run_training_eagerly(tiny_config, tmp_path):
    """A CUDA error in the second phase's capture must not stop a 100-epoch run at that epoch in every
    session: the run trains on eagerly, gives the eager record, and its provenance says why."""
    config = tiny_config("ogm_ge", method_options={"window_end": 1}, **SIZES)
    eager = train(config, checkpoint_dir=tmp_path / "eager", progress=False)

    class RefusesSecond(EmulatedGraphs):
        def capture(self, body, state, generators=()):
            if self.captures == 1:  # as CUDA does: the cause, then a generic error from ending the capture
                try:
                    raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")
                except RuntimeError:
                    raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
            return super().capture(body, state, generators)

    graphs = RefusesSecond()
    with pytest.warns(UserWarning, match="capture of phase .* failed: RuntimeError: CUDA error: operation not "
                                         "permitted when stream is capturing; the rest of the run trains eagerly"):
        replayed = train(config, checkpoint_dir=tmp_path / "graph", progress=False, cuda_graph=graphs)
    assert (graphs.captures, graphs.replays) == (1, 3)  # the first phase's replays only
    _close(without_timing(eager["history"]), without_timing(replayed["history"]))
    provenance = replayed["provenance"]["cuda_graph"]
    assert provenance["replayed_steps"] == 3 and "operation not permitted" in provenance["failure"]
    assert "more" not in provenance["failure"]  # the error's first line


def test_an_epoch_is_timed_after_the_device_has_run_its_queued_steps(monkeypatch, tiny_config, tmp_path):
    from mmlab.training import loop
    from mmlab.training.device import wait_for_device

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    wait_for_device(torch.device("cpu"))
    assert waited == []
    wait_for_device(torch.device("cuda", 1))
    assert waited == [torch.device("cuda", 1)]
    # the loop waits once per epoch, before it reads the epoch's training time: the wait (queued GPU
    # steps) must count in time/train_s. Here it moves the loop's clock on by 1,000 s.
    epochs, waited_s = [], [0.0]

    def slow_device(device):
        epochs.append(device)
        waited_s[0] += 1000.0

    clock = types.SimpleNamespace(time=time.time, perf_counter=lambda: time.perf_counter() + waited_s[0])
    monkeypatch.setattr(loop, "wait_for_device", slow_device)
    monkeypatch.setattr(loop, "time", clock)
    result = train(tiny_config("uniform", epochs=2), checkpoint_dir=tmp_path, progress=False, device="cpu")
    assert epochs == [torch.device("cpu")] * 2
    assert all(1000.0 <= row["time/train_s"] < 2000.0 for row in result["history"])


def test_the_loop_asks_for_each_encoder_s_gradient_norm_on_that_encoder_s_device(monkeypatch, tiny_config, tmp_path):
    # where no gradient reaches an encoder, global_norm's zero must be made on the parameters' device
    # (a captured CUDA step cannot meet a CPU tensor); the loop passes that device for every encoder
    from mmlab.training import loop

    devices = []

    def recording_norm(tensors, device=None):
        devices.append(device)
        return global_norm(tensors, device=device)

    monkeypatch.setattr(loop, "global_norm", recording_norm)
    result = train(tiny_config("uniform", epochs=1), checkpoint_dir=tmp_path, progress=False, device="cpu")
    steps, encoders = result["history"][-1]["step"], 2
    assert devices.count(torch.device("cpu")) == steps * encoders  # the gradient probe's norms need none


def test_the_replayed_run_ends_with_the_eager_weights(tiny_config, tmp_path):
    config = tiny_config("mmpareto", **SIZES)
    train(config, checkpoint_dir=tmp_path / "eager", progress=False)
    train(config, checkpoint_dir=tmp_path / "graph", progress=False, cuda_graph=EmulatedGraphs())
    eager = load_checkpoint(tmp_path / "eager" / f"{config.key}.pt", "cpu")
    replayed = load_checkpoint(tmp_path / "graph" / f"{config.key}.pt", "cpu")
    for name, value in eager["model"].items():
        assert torch.equal(value, replayed["model"][name]), name
    assert replayed["step"] == eager["step"] == 22


def test_stacked_runs_replay_together(tiny_config, tmp_path):
    configs = [tiny_config("uniform", seed=s, **SIZES) for s in (0, 1)]
    eager = train_stacked(configs, checkpoint_dir=tmp_path / "eager", progress=False)
    graphs = EmulatedGraphs()
    replayed = train_stacked(configs, checkpoint_dir=tmp_path / "graph", progress=False, cuda_graph=graphs)
    assert graphs.captures == 1 and graphs.replays > 0
    for a, b in zip(eager, replayed):
        _close(without_timing(a["history"]), without_timing(b["history"]), rel=1e-6)


def test_a_resumed_replayed_run_gives_the_straight_one(tiny_config, tmp_path):
    config = tiny_config("uniform", **SIZES)
    straight = train(config, checkpoint_dir=tmp_path / "straight", progress=False, cuda_graph=EmulatedGraphs())

    def crash(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, checkpoint_dir=tmp_path / "resumed", progress=False, callbacks=[crash],
              cuda_graph=EmulatedGraphs())
    resumed = train(config, checkpoint_dir=tmp_path / "resumed", progress=False, cuda_graph=EmulatedGraphs())
    _close(without_timing(straight["history"]), without_timing(resumed["history"]))


def test_methods_that_are_not_capturable_train_eagerly_and_say_so(tiny_config, tmp_path):
    config = tiny_config("gradnorm", **SIZES)
    graphs = EmulatedGraphs()
    with pytest.warns(UserWarning, match="not capturable"):
        record = train(config, checkpoint_dir=tmp_path, progress=False, cuda_graph=graphs)
    assert graphs.captures == 0
    assert record["provenance"]["cuda_graph"] == {"backend": "emulated", "captured": False, "replayed_steps": 0,
                                                  "graphs": 0}


def test_a_run_that_measures_the_imbalance_trains_eagerly(tiny_config, tmp_path):
    config = tiny_config("uniform", measure_imbalance=True, **SIZES)
    with pytest.warns(UserWarning, match="imbalance"):
        record = train(config, checkpoint_dir=tmp_path, progress=False, cuda_graph=EmulatedGraphs())
    assert record["provenance"]["cuda_graph"]["captured"] is False


def test_capturable_is_declared_by_each_class_not_inherited():
    captured = {name for name, factory in METHODS.items()
                if is_capturable(build_method(name, ["gray", "color"], **({"modality": "gray"}
                                                                            if name == "unimodal" else {})))}
    assert captured == {"joint", "unimodal", "uniform", "mmpareto", "mgda", "pcgrad", "ogm_ge", "opm", "mmcosine"}

    class Reweighted(UniformBaseline):  # changes a hook, says nothing: not captured
        def total_loss(self, losses, state):
            return 2 * super().total_loss(losses, state)

    assert not is_capturable(Reweighted())


def test_a_python_number_logged_in_a_captured_step_is_refused(tiny_config, tmp_path):
    class LogsAFloat(UniformBaseline):
        name = "logs_a_float"
        capturable = True

        def total_loss(self, losses, state):
            state.log("train/weight", 1.0)  # frozen at its captured value in a real graph
            return super().total_loss(losses, state)

    with pytest.raises(NotCapturableError, match="train/weight"):
        train(tiny_config("uniform", **SIZES), method=LogsAFloat(), checkpoint_dir=tmp_path, progress=False,
              cuda_graph=EmulatedGraphs())


def test_a_nan_in_a_replayed_step_stops_the_run_at_the_epoch_end(tiny_config, tmp_path):
    class Explodes(UniformBaseline):
        capturable = True

        def total_loss(self, losses, state):
            total = super().total_loss(losses, state)
            return total * torch.where(state.labels[0] >= 0, float("nan"), 1.0)

    from mmlab.errors import NonFiniteLossError

    # no probes and no smaller last batch: after 3 unchecked warm-up steps, every step is replayed
    config = tiny_config("uniform", train_size=240, batch_size=24, grad_probe_every=0, epochs=2)
    graphs = EmulatedGraphs()
    with pytest.raises(NonFiniteLossError, match="epoch 1 "):
        train(config, method=Explodes(), checkpoint_dir=tmp_path, progress=False, cuda_graph=graphs)
    assert graphs.replays == 7
    assert not (tmp_path / f"{config.key}.pt").exists()  # the epoch that went wrong left no checkpoint


def test_recorder_packs_the_logged_tensors_in_order():
    recorder = StepRecorder("uniform")
    recorder("a", torch.tensor(1.5))
    recorder("b", torch.tensor([2], dtype=torch.long))
    assert recorder.names == ["a", "b"]
    assert torch.equal(recorder.packed(torch.device("cpu")), torch.tensor([1.5, 2.0], dtype=torch.float64))


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(ValueError, match="CUDA device"):
        CudaGraphs(torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert is_capturable(build_method("uniform"))


def test_the_sweep_asks_for_cuda_graphs_down_to_the_training(results_dir, tiny_config, monkeypatch):
    import mmlab.training.loop as loop
    from mmlab.sweep import run_unit

    monkeypatch.setattr(loop, "CudaGraphs", EmulatedGraphs)  # what cuda_graph=True builds, here on the CPU
    config = tiny_config("uniform", **SIZES)
    [outcome] = run_unit([config], results_dir, device="cpu", cuda_graph=True)
    assert outcome["status"] == "done", outcome
    from mmlab.results import ResultsStore

    record = ResultsStore(results_dir).load(config)
    assert record["provenance"]["cuda_graph"]["captured"] is True


def test_the_cli_refuses_cuda_graphs_without_a_cuda_device(results_dir, capsys):
    from mmlab.cli import main

    assert main(["sweep", "--method", "joint", "--profile", "smoke", "--device", "cpu", "--cuda-graph",
                 "--no-progress"]) == 2
    assert "cuda_graph needs a CUDA device" in capsys.readouterr().err
    assert main(["train", "--method", "joint", "--profile", "smoke", "--device", "cpu", "--cuda-graph",
                 "--no-progress"]) == 2
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err


def _check_script():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "check_cuda_graph.py"
    spec = importlib.util.spec_from_file_location("check_cuda_graph", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_cuda_graph"] = module
    spec.loader.exec_module(module)
    return module


CHECK_ARGS = ["--device", "cpu", "--emulate", "--train-size", "1024", "--epochs", "1", "--methods", "uniform",
              "--loss-rtol", "1e-6", "--acc-atol", "0", "--stack", "2"]


def test_the_gpu_check_passes_a_faithful_replay_and_writes_its_record(tmp_path, capsys):
    import json

    out = tmp_path / "check.json"
    assert _check_script().main(CHECK_ARGS + ["--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["passed"] and record["emulated"] and record["methods"][0]["replayed_steps"] > 0
    assert [m["method"] for m in record["methods"]] == ["uniform", "mmpareto, 2 seeds stacked"]
    assert "CUDA-graph check passed" in capsys.readouterr().out


def test_the_gpu_check_fails_a_graph_that_replays_nothing(monkeypatch, capsys):
    """A graph whose replay does not train (stale buffers, say) must not pass the check."""
    check = _check_script()

    class Inert(EmulatedGraphs):
        def capture(self, body, state, generators=()):
            replay, output = super().capture(body, state, generators)
            return (lambda: None), output

    monkeypatch.setattr(check, "EmulatedGraphs", Inert)
    assert check.main(CHECK_ARGS) == 1
    assert "FAILED" in capsys.readouterr().out


def test_the_gpu_check_captures_both_phases_and_fails_a_refused_capture(tmp_path, monkeypatch, capsys):
    """OGM-GE's window ends after the first epoch in the check: its second phase is captured too, and a
    capture the device refuses (the run then trains eagerly) fails the check, not passes it unnoticed."""
    import json

    check = _check_script()
    args = ["--device", "cpu", "--emulate", "--train-size", "1000", "--epochs", "2", "--methods", "ogm_ge",
            "--stack", "1", "--loss-rtol", "1e-6", "--acc-atol", "0"]
    out = tmp_path / "check.json"
    assert check.main(args + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())["methods"][0]
    assert result["graphs"] == 2 and result["checks"]["both phases captured"] and result["failure"] is None
    assert {"test/acc", "test/acc/gray", "test/acc/color"} <= set(result["final_test_acc"])

    class RefusesSecond(EmulatedGraphs):
        def capture(self, body, state, generators=()):
            if self.captures == 1:
                raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
            return super().capture(body, state, generators)

    monkeypatch.setattr(check, "EmulatedGraphs", RefusesSecond)
    with pytest.warns(UserWarning, match="capture of phase"):
        assert check.main(args) == 1
    assert "FAILED: no capture failed, both phases captured" in capsys.readouterr().out


def test_the_gpu_check_needs_a_gpu_unless_emulated(capsys):
    with pytest.raises(SystemExit):
        _check_script().main(["--device", "cpu"])
    assert "--emulate" in capsys.readouterr().err
