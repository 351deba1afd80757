"""Several seeds trained at once (mmlab.models.stacked, mmlab.training.train_stacked): the same
function, gradients and records as the runs trained one by one."""

import copy

import pytest
import torch
import torch.nn.functional as F

from mmlab.data.registry import get_dataset
from mmlab.models import build_model
from mmlab.models.stacked import StackedEncoders, stackable
from mmlab.training import train, train_stacked
from mmlab.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny runs are fastest on one thread (conftest)


@pytest.fixture
def float64(monkeypatch):
    """Models and inputs in float64: stacked and separate runs then agree to rounding in the 12th
    digit, where float32 differs in the 4th (grouped and plain convolutions round differently)."""
    import mmlab.training.batches as batches

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    monkeypatch.setattr(batches, "_as_float", lambda x: x.double().div_(255.0) if x.dtype == torch.uint8 else x.double())
    yield
    torch.set_default_dtype(before)


def _models(dataset="cgmnist", seeds=(0, 1, 2)):
    spec = get_dataset(dataset)
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(spec, list(spec.modalities), True).use_channels_last())
    return spec, models


def _uniform_loss(output, labels):
    return F.cross_entropy(output.logits, labels) + sum(F.cross_entropy(h, labels) for h in output.unimodal_logits.values())


@pytest.mark.parametrize("dataset", ["cgmnist", "avdigits"])
def test_stacked_encoders_are_the_separate_encoders(dataset, float64):
    spec, models = _models(dataset)
    separate = [copy.deepcopy(m) for m in models]
    stacked = StackedEncoders(models)
    torch.manual_seed(5)
    shapes = {"cgmnist": {"gray": (1, 28, 28), "color": (3, 28, 28)},
              "avdigits": {"image": (1, 28, 28), "audio": (1, 129, 63)}}[dataset]
    for step in range(2):  # the second step sees the BatchNorm statistics the first one updated
        x = {m: torch.rand(3, 8, *shape) for m, shape in shapes.items()}  # float64 (the fixture)
        y = torch.randint(0, 10, (3, 8))
        features = stacked(x)
        losses = [_uniform_loss(model.fuse({m: z[k] for m, z in features.items()}), y[k])
                  for k, model in enumerate(models)]
        torch.autograd.backward(losses)
        for k, (model, alone) in enumerate(zip(models, separate)):
            out = alone({m: x[m][k] for m in x})
            _uniform_loss(out, y[k]).backward()
            for m in x:
                torch.testing.assert_close(features[m][k], out.features[m], rtol=1e-10, atol=1e-12)
            for (name, p), q in zip(model.named_parameters(), alone.parameters()):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
            for (name, b), c in zip(model.named_buffers(), alone.buffers()):  # running statistics
                torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12, msg=name)
    models[1].eval()  # a model on its own, in evaluation mode, reads its own statistics
    separate[1].eval()
    x = {m: torch.rand(4, *shape) for m, shape in shapes.items()}
    torch.testing.assert_close(models[1](x).logits, separate[1](x).logits, rtol=1e-10, atol=1e-12)


def test_models_that_connect_their_encoders_do_not_stack():
    spec = get_dataset("cgmnist")
    mmtm = [build_model(spec, list(spec.modalities), False, fusion="mmtm") for _ in range(2)]
    assert not stackable(mmtm[0]) and stackable(build_model(spec, list(spec.modalities), False))
    with pytest.raises(ValueError, match="cannot be stacked"):
        StackedEncoders(mmtm)
    with pytest.raises(ValueError, match="at least two"):
        StackedEncoders(mmtm[:1])


def _final_model(record):
    return load_checkpoint(record["_checkpoint"])["model"]


def _close_histories(a, b, rtol=2e-3, atol=2e-3):
    assert len(a) == len(b), (len(a), len(b))  # a history missing its last epoch is not close
    for ha, hb in zip(a, b):
        assert set(ha) - {k for k in ha if k.startswith("time/")} <= set(hb), set(ha) - set(hb)
        for key, value in ha.items():
            if key.startswith("time/"):
                continue
            assert hb[key] == pytest.approx(value, rel=rtol, abs=atol), key


@pytest.mark.parametrize("method, options", [
    ("joint", {}), ("uniform", {}), ("mmpareto", {}), ("ogm_ge", {}), ("opm", {}), ("gradnorm", {}), ("pmr", {}),
    ("gblending", {"super_epoch": 1}), ("agm", {"alpha": 0.5}), ("unimodal", {"modality": "gray"}),
    ("pretrain_finetune", {"pretrain_epochs": 1}), ("relearning", {"relearn_every": 1}),
    ("reconboost", {"stage_epochs": 1, "rectify_epochs": 1}), ("uncertainty", {}), ("mmcosine", {"scaling": 5.0}),
    ("cggm", {}), ("ume", {})])
def test_stacked_runs_are_the_runs_trained_one_by_one(method, options, tiny_config, tmp_path, float64):
    # each a different hook: plain, heads, per-loss gradients, gradient transform with noise,
    # intervention with randomness, a learned loss weighting, re-initialisation from the split's features,
    # epoch stages; one epoch of 8 steps (float64 is slow)
    epochs = {"pretrain_finetune": 2, "relearning": 2, "reconboost": 3}.get(method, 1)  # every stage once
    configs = [tiny_config(method, seed=seed, method_options=options, epochs=epochs) for seed in (0, 1)]
    together = train_stacked(configs, checkpoint_dir=tmp_path / "together", progress=False)
    for config, record in zip(configs, together):
        alone = train(config, checkpoint_dir=tmp_path / "alone", progress=False)
        assert record["key"] == alone["key"] and record["provenance"]["stacked_runs"] == 2
        assert "stacked_runs" not in alone["provenance"]
        _close_histories(alone["history"], record["history"], rtol=1e-7, atol=1e-9)
        mine, theirs = _final_model(record), _final_model(alone)
        for name in theirs:
            if theirs[name].is_floating_point():
                torch.testing.assert_close(mine[name], theirs[name], rtol=1e-7, atol=1e-9, msg=name)


def test_a_stacked_training_resumes_and_its_checkpoints_resume_alone(tiny_config, tmp_path):
    configs = [tiny_config("uniform", epochs=3, seed=seed) for seed in (3, 4)]
    straight = train_stacked(configs, checkpoint_dir=tmp_path / "straight", progress=False)

    def crash(epoch, metrics):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stacked(configs, checkpoint_dir=tmp_path / "resumed", progress=False, callbacks=[crash])
    resumed = train_stacked(configs, checkpoint_dir=tmp_path / "resumed", progress=False)
    for a, b in zip(straight, resumed):
        assert b["provenance"]["resumed"] is True
        _close_histories(a["history"], b["history"], rtol=1e-6, atol=1e-6)

    # a checkpoint of a stacked training is a single run's checkpoint: train() resumes it
    with pytest.raises(KeyboardInterrupt):
        train_stacked(configs, checkpoint_dir=tmp_path / "mixed", progress=False, callbacks=[crash])
    alone = train(configs[1], checkpoint_dir=tmp_path / "mixed", progress=False)
    assert alone["provenance"]["resumed"] is True
    _close_histories(straight[1]["history"], alone["history"])
    # runs at different epochs are trained one after the other, each from where it was
    mixed = train_stacked(configs, checkpoint_dir=tmp_path / "mixed", progress=False)
    assert [r["provenance"]["resumed"] for r in mixed] == [True, True]
    assert "stacked_runs" not in mixed[0]["provenance"]


@pytest.mark.parametrize("method, options, epochs", [("greedy", {}, 1), ("udi", {"anchor_epochs": 1}, 2)])
def test_greedy_and_udi_fall_back_to_one_run_after_the_other(method, options, epochs, tiny_config, tmp_path):
    """Greedy connects its encoders; UDI freezes a different anchor per run (in evaluation mode, which the
    stacked encoders would not see): asked to stack, their runs train one after another."""
    configs = [tiny_config(method, seed=seed, epochs=epochs, method_options=options) for seed in (0, 1)]
    records = train_stacked(configs, checkpoint_dir=tmp_path / "s", progress=False)
    alone = train(configs[1], checkpoint_dir=tmp_path / "a", progress=False)
    assert "stacked_runs" not in records[1]["provenance"]
    _close_histories(alone["history"], records[1]["history"], rtol=1e-6, atol=1e-6)


def test_stacked_configs_must_differ_in_their_seed_only(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="differ in their seed only"):
        train_stacked([tiny_config("joint"), tiny_config("uniform", seed=1)], checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="differ in their seed only"):
        train_stacked([tiny_config("joint"), tiny_config("joint", seed=1, lr=0.1)], checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct seeds"):
        train_stacked([tiny_config("joint"), tiny_config("joint")], checkpoint_dir=tmp_path)


def test_load_or_run_stacked_trains_the_unrecorded_seeds_together_and_stores_each(tiny_config, tmp_path, monkeypatch):
    import mmlab.training as training
    from mmlab.results import ResultsStore

    store = ResultsStore(tmp_path / "results")
    configs = [tiny_config("joint", seed=seed, epochs=1) for seed in (0, 1, 2)]
    first = training.load_or_run(configs[1], store=store, progress=False)  # seed 1 is recorded already
    calls = []
    real = training.train_stacked
    monkeypatch.setattr(training, "train_stacked", lambda cs, **kw: calls.append([c.seed for c in cs]) or real(cs, **kw))
    records = training.load_or_run_stacked(configs, store=store, progress=False)
    assert calls == [[0, 2]]  # the recorded seed is not trained again
    assert [r["config"]["seed"] for r in records] == [0, 1, 2]
    assert records[1] == first
    assert [r["provenance"].get("stacked_runs") for r in records] == [2, None, 2]
    assert all(store.load(c) == r for c, r in zip(configs, records))  # each stored as its own run
    assert not list(store.checkpoint_dir.glob("*.pt"))  # checkpoints removed once recorded
    assert training.load_or_run_stacked(configs, store=store, progress=False) == records and calls == [[0, 2]]
