"""The one training loop: a tiny run, its logs, the hooks, resume, NaN handling."""

import math
import time

import pytest
import torch

from mmlab import NonFiniteLossError
from mmlab.data.registry import get_dataset
from mmlab.methods import TrainState
from mmlab.methods.baselines import UniformBaseline, JointLoss
from mmlab.models import build_model
from mmlab.training import per_loss_encoder_gradients, train
from mmlab.training.checkpoint import load_checkpoint

from conftest import straight_and_resumed, without_timing


def test_uniform_run_logs_what_the_chapter_needs(tiny_config, tmp_path):
    record = train(tiny_config("uniform"), checkpoint_dir=tmp_path, progress=False, device="cpu")
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    last = record["history"][-1]
    for key in ["test/acc", "test/f1", "val/acc", "test/acc/gray", "test/acc/color",
                "test/share_acc/gray", "train/grad_norm/gray", "train/grad_norm/color",
                "train/cos_mm_uni/gray", "train/cos_mm_uni/color", "train/loss/unimodal/gray"]:
        assert key in last, key
        assert math.isfinite(last[key])
    assert 0 <= last["test/acc"] <= 1 and -1 <= last["train/cos_mm_uni/gray"] <= 1
    assert last["train/grad_norm/gray"] > 0
    # the uniform loss is the sum of its terms
    terms = sum(last[f"train/loss/{t}"] for t in ["multimodal", "unimodal/gray", "unimodal/color"])
    assert abs(terms - last["train/loss"]) < 1e-4
    prov = record["provenance"]
    assert prov["profile"] == "smoke" and prov["device"] == "cpu" and prov["torch_version"] == torch.__version__
    assert record["dataset"]["train"]["size"] == 256


def test_the_gradient_probe_logs_the_cosine_of_the_right_pair_and_conflict_where_it_is_negative():
    from mmlab.training.loop import _EpochLog, _log_gradient_probe

    g_mm = [torch.tensor([1.0, 0.0]), torch.tensor([2.0])]
    g_gray = [torch.tensor([-1.0, 1.0]), torch.tensor([0.5])]  # cos = (-1 + 1) / (sqrt 5 sqrt 2.25) = 0
    g_colour = [torch.tensor([-3.0, 0.0]), torch.tensor([-1.0])]  # conflicts with g_mm
    log = _EpochLog()
    _log_gradient_probe({"gray": {"multimodal": g_mm, "unimodal/gray": g_gray},
                         "color": {"multimodal": g_mm, "unimodal/color": g_colour}}, log)
    means = log.means()

    def cos(a, b):
        a, b = torch.cat(a), torch.cat(b)
        return float(a @ b / (a.norm() * b.norm()))

    assert means["train/cos_mm_uni/gray"] == pytest.approx(cos(g_mm, g_gray), abs=1e-7)
    assert means["train/cos_mm_uni/color"] == pytest.approx(cos(g_mm, g_colour)) and cos(g_mm, g_colour) < 0
    assert means["train/conflict/gray"] == 0.0 and means["train/conflict/color"] == 1.0
    assert means["train/grad_norm_mm/gray"] == pytest.approx(5 ** 0.5)
    assert means["train/grad_norm_uni/color"] == pytest.approx(10 ** 0.5)


def test_the_optimiser_is_sgd_with_the_configured_settings(tiny_config, tmp_path):
    config = tiny_config("uniform", epochs=1, lr=0.02, weight_decay=3e-4)
    record = train(config, checkpoint_dir=tmp_path, progress=False)
    group = load_checkpoint(record["_checkpoint"])["optimizer"]["param_groups"][0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, config.momentum, 3e-4)
    assert config.momentum == 0.9  # the papers' SGD momentum


def test_joint_has_no_unimodal_cosine_and_unimodal_trains_one_encoder(tiny_config, tmp_path):
    joint = train(tiny_config("joint", epochs=1), checkpoint_dir=tmp_path, progress=False)
    assert not any(k.startswith("train/cos_mm_uni") for k in joint["history"][0])
    uni = train(tiny_config("unimodal", epochs=1, method_options={"modality": "gray"}),
                checkpoint_dir=tmp_path, progress=False)
    h = uni["history"][0]
    assert "train/grad_norm/color" not in h and "train/grad_norm/gray" in h
    assert h["test/acc/gray"] == h["test/acc"]
    assert uni["label"] == "unimodal-gray"


def test_per_loss_encoder_gradients_match_autograd():
    torch.manual_seed(0)
    model = build_model(get_dataset("cgmnist"), ["gray", "color"], unimodal_heads=True)
    x = {"gray": torch.rand(8, 1, 28, 28), "color": torch.rand(8, 3, 28, 28)}
    y = torch.randint(0, 10, (8,))
    out = model(x)
    method = UniformBaseline()
    losses = method.losses(out, y, None)
    groups = model.parameter_groups()
    grads = per_loss_encoder_gradients(out, losses, groups)
    assert set(grads["gray"]) == {"multimodal", "unimodal/gray"}  # unimodal/color does not reach it
    for m in ["gray", "color"]:
        for name, g in grads[m].items():
            expected = torch.autograd.grad(losses[name], groups.encoders[m], retain_graph=True)
            for a, b in zip(g, expected):
                torch.testing.assert_close(a, b)


class _SumThroughHook(UniformBaseline):
    per_loss_gradients = True
    seen = []

    def combine_encoder_gradients(self, modality, grads, state):
        self.seen.append((modality, tuple(sorted(grads))))
        return super().combine_encoder_gradients(modality, grads, state)


def test_combine_hook_with_default_sum_equals_plain_backward(tiny_config, tmp_path):
    config = tiny_config("uniform", epochs=1, grad_probe_every=0)
    plain = train(config, checkpoint_dir=tmp_path / "a", progress=False)
    hooked = train(config, method=_SumThroughHook(), checkpoint_dir=tmp_path / "b", progress=False)
    assert ("gray", ("multimodal", "unimodal/gray")) in _SumThroughHook.seen
    a, b = plain["history"][0], hooked["history"][0]
    assert abs(a["train/loss"] - b["train/loss"]) < 1e-4
    assert abs(a["test/loss"] - b["test/loss"]) < 1e-3
    plain_weights = load_checkpoint(plain["_checkpoint"])["model"]
    hooked_weights = load_checkpoint(hooked["_checkpoint"])["model"]
    for name, value in plain_weights.items():  # the same step, parameter by parameter
        torch.testing.assert_close(hooked_weights[name], value, rtol=1e-5, atol=1e-6, msg=name)


class _ZeroColourThroughCombine(UniformBaseline):
    per_loss_gradients = True

    def combine_encoder_gradients(self, modality, grads, state):
        summed = super().combine_encoder_gradients(modality, grads, state)
        return [torch.zeros_like(g) for g in summed] if modality == "color" else summed


def test_the_combined_encoder_gradient_is_the_one_the_optimiser_applies(tiny_config, tmp_path):
    # MMPareto, MGDA, PCGrad return their integrated gradient from this hook: if the loop dropped it (or let a
    # backward pass of the summed loss overwrite it) they would train as the uniform baseline. A hook that returns
    # zeros for the colour encoder must leave that encoder's parameters where they started.
    config = tiny_config("uniform", epochs=1, weight_decay=0.0, grad_probe_every=0)
    record = train(config, method=_ZeroColourThroughCombine(), checkpoint_dir=tmp_path, progress=False)
    trained = load_checkpoint(record["_checkpoint"])["model"]
    torch.manual_seed(config.seed)
    initial = build_model(get_dataset("cgmnist"), ["gray", "color"], True).state_dict()
    params = [k for k in initial if k.startswith("encoders.") and ("weight" in k or "bias" in k)]
    colour = [k for k in params if k.startswith("encoders.color.")]
    assert colour and all(torch.equal(initial[k], trained[k]) for k in colour)
    assert any(not torch.equal(initial[k], trained[k]) for k in params if k.startswith("encoders.gray."))
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if k.startswith(("fusion.", "unimodal_heads.")))


class _FreezeColour(JointLoss):
    def transform_gradients(self, output, labels, state: TrainState):
        for p in state.groups.encoders["color"]:
            p.grad = torch.zeros_like(p)


def test_transform_gradients_touches_only_its_group(tiny_config, tmp_path):
    config = tiny_config("joint", epochs=1, weight_decay=0.0)
    record = train(config, method=_FreezeColour(), checkpoint_dir=tmp_path, progress=False)
    trained = load_checkpoint(record["_checkpoint"])["model"]
    torch.manual_seed(config.seed)
    initial = build_model(get_dataset("cgmnist"), ["gray", "color"], False).state_dict()
    changed = {k for k in initial if not torch.equal(initial[k], trained[k])}
    assert changed, "nothing trained"
    assert not any(k.startswith("encoders.color.") and ("weight" in k or "bias" in k) for k in changed)
    assert any(k.startswith("encoders.gray.") for k in changed)


def test_interrupted_run_resumes_to_identical_result(tiny_config, tmp_path):
    config = tiny_config("uniform", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert resumed["provenance"]["resumed"] is True
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_provenance_names_the_commit_the_run_started_from(tiny_config, tmp_path, monkeypatch):
    """A long run outlives its checkout: the record names the commit whose code the process
    imported (when training started), and a resumed run the commits of its earlier parts."""
    import pytest

    import mmlab.provenance as provenance

    config = tiny_config("joint", epochs=2)
    commits = iter([("first", False), ("second", True), ("third", False)])
    monkeypatch.setattr(provenance, "git_commit", lambda: next(commits))
    sources = iter(["code-a", "code-b", "code-c"])
    monkeypatch.setattr(provenance, "source_digest", lambda: next(sources))

    def crash(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # part one runs from commit "first"
        train(config, checkpoint_dir=tmp_path, progress=False, callbacks=[crash])
    record = train(config, checkpoint_dir=tmp_path, progress=False)  # part two from "second"
    prov = record["provenance"]
    assert prov["git_commit"] == "second" and prov["git_dirty"] is True
    assert prov["earlier_commits"] == ["first"]
    assert prov["source_digest"] == "code-b" and prov["earlier_source_digests"] == ["code-a"]
    straight = train(config.with_(seed=1), checkpoint_dir=tmp_path, progress=False)  # from "third"
    assert straight["provenance"]["git_commit"] == "third" and "earlier_commits" not in straight["provenance"]
    assert "earlier_source_digests" not in straight["provenance"]


def test_a_resumed_run_with_unchanged_code_names_no_earlier_source(tiny_config, tmp_path, monkeypatch):
    """Commits that differ only outside ``mmlab/`` leave the source digest alone: the record then
    shows the code was the same in every part. A checkpoint that kept no digest (older format)
    gives ``None``: unknown, never assumed equal."""
    import pytest

    import mmlab.provenance as provenance
    from mmlab.training.checkpoint import load_checkpoint, save_checkpoint

    config = tiny_config("joint", epochs=2)
    monkeypatch.setattr(provenance, "source_digest", lambda: "same-code")

    def crash(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, checkpoint_dir=tmp_path, progress=False, callbacks=[crash])
    prov = train(config, checkpoint_dir=tmp_path, progress=False)["provenance"]
    assert prov["resumed"] is True and "earlier_source_digests" not in prov

    old = config.with_(seed=1)
    with pytest.raises(KeyboardInterrupt):
        train(old, checkpoint_dir=tmp_path, progress=False, callbacks=[crash])
    path = tmp_path / f"{old.key}.pt"
    ckpt = load_checkpoint(path, map_location="cpu")
    del ckpt["source_digests"]
    save_checkpoint(path, ckpt)
    assert train(old, checkpoint_dir=tmp_path, progress=False)["provenance"]["earlier_source_digests"] == [None]


def test_a_deadline_pauses_the_run_at_an_epochs_end_and_the_run_resumes(tiny_config, tmp_path, monkeypatch):
    """No epoch starts that, by the last epoch's duration, would end after the deadline: the run
    stops with its checkpoint kept, and resumed it reaches the uninterrupted run's result."""
    import types

    import pytest

    import mmlab.training.loop as loop
    from mmlab.errors import TimeLimitReached

    config = tiny_config("joint", epochs=3)
    straight = train(config, checkpoint_dir=tmp_path / "straight", progress=False)

    clock = [1000.0]  # a wall clock that moves only when an epoch ends: each epoch "takes" 10 s
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: clock[0], perf_counter=time.perf_counter))

    def tick(epoch, metrics):
        clock[0] += 10.0

    with pytest.raises(TimeLimitReached, match="stopped before epoch 2 of 3") as stopped:
        train(config, checkpoint_dir=tmp_path / "paused", progress=False, callbacks=[tick], deadline=1015.0)
    assert stopped.value.epochs_done == 1  # at 1010 a 10 s epoch would end at 1020, after 1015
    assert load_checkpoint(tmp_path / "paused" / f"{config.key}.pt")["epochs_done"] == 1
    with pytest.raises(TimeLimitReached, match="no epoch was trained"):  # past it already: nothing starts
        train(config.with_(seed=5), checkpoint_dir=tmp_path / "paused", progress=False, deadline=999.0)
    monkeypatch.undo()

    resumed = train(config, checkpoint_dir=tmp_path / "paused", progress=False)
    assert resumed["provenance"]["resumed"] is True
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


class _NaNAfter(JointLoss):
    def __init__(self, step):
        self.bad_step = step

    def losses(self, output, labels, state):
        terms = super().losses(output, labels, state)
        if state.step >= self.bad_step:
            terms["multimodal"] = terms["multimodal"] * float("nan")
        return terms


def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(tiny_config, tmp_path):
    config = tiny_config("joint", epochs=3)
    steps_per_epoch = 256 // 32
    with pytest.raises(NonFiniteLossError) as info:
        train(config, method=_NaNAfter(steps_per_epoch + 2), checkpoint_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "epoch 2" in message and "checkpoint" in message
    ckpt = load_checkpoint(tmp_path / f"{config.key}.pt")
    assert ckpt["epochs_done"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_bad_device_is_an_error():
    from mmlab.training.device import pick_device

    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        pick_device("tpu")
    with pytest.raises(ValueError, match="not 'meta'"):  # a torch device, but nothing mmlab can train on
        pick_device("meta")


def test_cli_train_checks_the_device_even_when_the_record_exists(results_dir, capsys):
    from mmlab.cli import main

    argv = ["train", "--method", "joint", "--profile", "smoke", "--epochs", "1", "--no-progress"]
    assert main(argv + ["--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(argv + ["--device", "tpu"]) == 2  # the record is there: nothing would train, still an error
    assert "Unknown device 'tpu'" in capsys.readouterr().err


def test_a_run_stopped_after_its_last_checkpoint_finishes_without_training_again(tiny_config, tmp_path):
    """The last epoch's checkpoint is written before the record: a crash in between leaves a finished checkpoint,
    from which the run is recorded without another epoch."""
    from conftest import without_timing
    from mmlab.training import train

    config = tiny_config("uniform", epochs=2)
    straight = train(config, checkpoint_dir=tmp_path / "straight", progress=False)

    def crash_at_the_end(epoch, metrics):
        if epoch == config.epochs - 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, checkpoint_dir=tmp_path / "stopped", progress=False, callbacks=[crash_at_the_end])
    assert (tmp_path / "stopped" / f"{config.key}.pt").exists()
    epochs_run = []
    finished = train(config, checkpoint_dir=tmp_path / "stopped", progress=False,
                     callbacks=[lambda epoch, metrics: epochs_run.append(epoch)])
    assert epochs_run == [] and finished["provenance"]["resumed"]
    assert without_timing(finished["history"]) == without_timing(straight["history"])
    assert finished["final"] == straight["final"]


@pytest.mark.parametrize("environment, shown", [(None, True), ("1", False), ("0", False), ("", True)])
def test_progress_bars_follow_the_caller_and_tqdm_disable(tiny_config, tmp_path, monkeypatch, capsys,
                                                          environment, shown):
    """The book's build sets TQDM_DISABLE (a bar in an executed notebook is a widget stored for nothing);
    tqdm ignores it where a call sets ``disable``, as the loop's bars do, so mmlab reads it itself, as tqdm
    does (any value but the empty one, "0" too)."""
    if environment is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", environment)
    train(tiny_config("joint", epochs=1), checkpoint_dir=tmp_path, progress=True, device="cpu")
    assert ("joint" in capsys.readouterr().err) is shown  # the epoch bar's label
    train(tiny_config("joint", epochs=1, seed=1), checkpoint_dir=tmp_path, progress=False, device="cpu")
    assert capsys.readouterr().err == ""  # the caller's no wins either way
