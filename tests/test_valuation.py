"""Sample-level modality valuation (Wei et al., CVPR 2024; chapter 5) and the loop's ``epoch_samples`` hook:
the Shapley values' axioms, the re-sampling rule, the valuation of a real model, the copies that keep one
modality, and the epochs it trains (equal to the plain loop's when every sample comes once; resumable)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.data.registry import get_dataset
from mmlab.methods import Method, TrainState, build_method
from mmlab.methods.shapley import shapley_values
from mmlab.methods.valuation import coalition_correct, resample_copies
from mmlab.models import build_model
from mmlab.training import train
from mmlab.training.batches import ResidentBatches

SPEC = get_dataset("cgmnist")
MODALITIES = list(SPEC.modalities)


def _subsets(names):
    return [frozenset(c) for size in range(len(names) + 1) for c in itertools.combinations(names, size)]


@settings(max_examples=60, deadline=None)
@given(count=st.integers(2, 3), data=st.data())
def test_per_sample_shapley_values_are_efficient_symmetric_and_zero_for_a_dummy(count, data):
    names = [f"m{k}" for k in range(count)]
    table = {s: torch.tensor(data.draw(st.lists(st.booleans(), min_size=5, max_size=5)))
             for s in _subsets(names) if s}
    table[frozenset()] = torch.zeros(5, dtype=torch.bool)
    phi = shapley_values(table, names)
    # efficiency: a sample's contributions sum to v(M) - v({}), 1 where the full model is right
    assert torch.allclose(sum(phi.values()), table[frozenset(names)].double())
    # a dummy: a modality that never changes the outcome contributes nothing
    dummy = {s: table[s - {"m0"}] for s in table}
    assert torch.equal(shapley_values(dummy, names)["m0"], torch.zeros(5, dtype=torch.float64))
    # symmetry: swapping two modalities' roles swaps their values
    swap = {"m0": "m1", "m1": "m0"}
    swapped = {frozenset(swap.get(m, m) for m in s): v for s, v in table.items()}
    assert torch.allclose(shapley_values(swapped, names)["m1"], phi["m0"])


def test_two_modalities_have_the_closed_form():
    a, b, ab = (torch.tensor([1, 0, 1, 0, 1, 0]).bool(), torch.tensor([0, 1, 1, 0, 0, 1]).bool(),
                torch.tensor([1, 1, 1, 0, 0, 0]).bool())
    table = {frozenset(): torch.zeros(6, dtype=torch.bool), frozenset("a"): a, frozenset("b"): b,
             frozenset("ab"): ab}
    phi = shapley_values(table, ["a", "b"])
    assert phi["a"].tolist() == pytest.approx(((a.double() + ab.double() - b.double()) / 2).tolist())
    assert phi["a"].tolist() == [1.0, 0.0, 0.5, 0.0, 0.5, -0.5]


def test_the_copies_follow_the_thresholds_and_never_increase_with_the_contribution():
    assert resample_copies(torch.tensor([1.0, 0.5, 0.0, -0.5])).tolist() == [0, 1, 2, 3]
    assert resample_copies(torch.tensor([0.41, 0.4, -0.09, -0.1])).tolist() == [1, 2, 2, 3]
    values = torch.linspace(-1.0, 1.0, 401)
    copies = resample_copies(values)
    assert torch.all(copies[1:] <= copies[:-1]) and copies.min() == 0 and copies.max() == 3


def test_the_valuation_of_a_model_matches_its_own_predictions():
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, False).eval()
    inputs = {"gray": torch.rand(40, 1, 28, 28), "color": torch.rand(40, 3, 28, 28)}
    labels = torch.randint(0, 10, (40,))
    with torch.no_grad():
        features = model.encode(inputs)
        full = model(inputs).logits.argmax(1) == labels
        gray_only = model.fusion({"gray": features["gray"], "color": torch.zeros_like(features["color"])})
    values = coalition_correct(model, features, labels, chunk=16)  # chunks of 16 over 40 samples: 16, 16, 8
    assert torch.equal(values[frozenset(MODALITIES)], full)
    assert torch.equal(values[frozenset({"gray"})], gray_only.argmax(1) == labels)
    assert not values[frozenset()].any()


def _state(method, model):
    return TrainState(model=model, groups=model.parameter_groups(),
                      optimizer=torch.optim.SGD(model.parameters(), 0.1), device=torch.device("cpu"),
                      num_epochs=3, steps_per_epoch=1)


def test_the_copies_keep_only_the_modality_that_contributed_little():
    torch.manual_seed(0)
    model = build_model(SPEC, MODALITIES, False)
    method = build_method("sample_valuation", MODALITIES)
    state = _state(method, model)
    features = {"gray": torch.randn(6, 512), "color": torch.randn(6, 512)}
    labels = torch.randint(0, 10, (6,))
    state.features = lambda split: (features, labels)
    state.epoch = 0
    assert method.epoch_samples(state) is None  # the warm-up epoch trains on every sample once
    state.epoch = 1
    samples = method.epoch_samples(state)
    phi = shapley_values(coalition_correct(model, features, labels), MODALITIES)
    expected = 6 + sum(int(resample_copies(phi[m]).sum()) for m in MODALITIES)
    assert len(samples) == len(method.kept) == expected and torch.equal(samples[:6], torch.arange(6))
    batch = {m: torch.ones(len(samples), 3) for m in MODALITIES}
    state.batch_positions = torch.arange(len(samples))
    masked = method.intervene(batch, state)
    for k, m in enumerate(MODALITIES):
        other = MODALITIES[1 - k]
        copies_of_m = method.kept == k
        assert torch.all(masked[other][copies_of_m] == 0) and torch.all(masked[m][copies_of_m] == 1)
    assert torch.all(masked["gray"][:6] == 1) and torch.all(masked["color"][:6] == 1)  # originals keep both


class _EverySampleOnce(Method):
    """The joint loss, asking the loop for every training sample once: must train as the plain loop does."""

    name = "joint"
    stackable = False

    def epoch_samples(self, state):
        return torch.arange(state.steps_per_epoch * 32)


class _OnlyClassZero(Method):
    name = "joint"
    stackable = False

    def __init__(self, labels):
        self.labels, self.seen = labels, []

    def epoch_samples(self, state):
        zeros = torch.nonzero(self.labels == 0).flatten()
        return torch.cat([zeros, zeros, zeros])

    def losses(self, output, labels, state):
        self.seen.append((labels.clone(), state.batch_positions.clone()))
        return super().losses(output, labels, state)


def test_an_epoch_of_every_sample_once_trains_exactly_as_the_plain_loop(tiny_config, tmp_path):
    config = tiny_config("joint", train_size=256, batch_size=32)
    plain = train(config, checkpoint_dir=tmp_path / "plain", progress=False)
    chosen = train(config, checkpoint_dir=tmp_path / "chosen", progress=False, method=_EverySampleOnce())
    assert without_timing(plain["history"]) == without_timing(chosen["history"])


def test_the_loop_trains_on_the_samples_a_method_chooses(tiny_config, tmp_path):
    config = tiny_config("joint", train_size=256, batch_size=32, epochs=1)
    splits = SPEC.load_splits(train_size=256, val_size=64, test_size=128, data_seed=config.data_seed,
                              options=config.dataset_options)
    labels = splits["train"].labels
    method = _OnlyClassZero(labels)
    record = train(config, checkpoint_dir=tmp_path, progress=False, method=method)
    count = 3 * int((labels == 0).sum())
    assert record["history"][0]["step"] == ResidentBatches(splits["train"], MODALITIES, 32, "cpu").batches_in(count)
    assert all(torch.all(y == 0) for y, _ in method.seen)
    positions = torch.cat([p for _, p in method.seen])
    assert sorted(positions.tolist()) == list(range(len(positions)))  # each entry of the list once, shuffled


def test_bad_sample_lists_are_refused_with_a_clear_error():
    from mmlab.training.batches import check_samples

    with pytest.raises(ValueError, match="1-d integer"):
        check_samples(torch.rand(5), 10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        check_samples(torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match="at least two"):
        check_samples(torch.tensor([3]), 10)


def test_a_valuation_run_resumes_to_the_same_record(tiny_config, tmp_path):
    config = tiny_config("sample_valuation", epochs=3)
    straight, resumed = straight_and_resumed(config, tmp_path)
    assert without_timing(straight["history"]) == without_timing(resumed["history"])
    last = straight["history"][-1]
    assert last["train/valuation/epoch_size"] == 256 + last["train/valuation/copies/gray"] \
        + last["train/valuation/copies/color"]
    assert "train/valuation/epoch_size" not in straight["history"][0]  # the warm-up epoch


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="warmup_epochs"):
        build_method("sample_valuation", MODALITIES, warmup_epochs=-1)
