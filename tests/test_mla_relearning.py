"""Chapter 6's MLA and Diagnosing & Re-learning: their rules against closed forms and invariants, and the two
loop hooks they brought (several optimiser steps per batch; features of a split and soft re-initialisation)
honoured by the loop."""

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import straight_and_resumed, without_timing
from mmlab.errors import UnknownNameError
from mmlab.methods import build_method, reinitialize_toward
from mmlab.methods.mla import entropy_fusion_weights, projector_update
from mmlab.methods.relearning import cluster_purity, kmeans, relearning_strengths, scale_features
from mmlab.models import SharedHeadFusion
from mmlab.training import train


# -- MLA's projector ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 12), log_alpha=st.floats(-4, 1), steps=st.integers(1, 4))
def test_the_projector_stays_symmetric_positive_semidefinite_with_unit_frobenius_norm(seed, d, log_alpha, steps):
    g = torch.Generator().manual_seed(seed)
    p = torch.eye(d, dtype=torch.float64)
    for _ in range(steps):
        p = projector_update(p, torch.randn(d, generator=g, dtype=torch.float64), 10 ** log_alpha)
    assert torch.allclose(p, p.T, atol=1e-12)
    assert torch.linalg.eigvalsh(p).min() > -1e-10
    assert math.isclose(torch.linalg.matrix_norm(p).item(), 1.0, rel_tol=1e-9)


def test_the_unnormalised_update_shrinks_the_mean_feature_and_leaves_orthogonal_directions_alone():
    torch.manual_seed(0)
    d, alpha = 6, 1e-3
    r = torch.randn(d, dtype=torch.float64)
    p = projector_update(torch.eye(d, dtype=torch.float64), r, alpha, normalise=False)
    # closed form: P r = alpha / (alpha + |r|^2) r
    assert torch.allclose(p @ r, alpha / (alpha + r @ r) * r, atol=1e-12)
    v = torch.randn(d, dtype=torch.float64)
    v -= (v @ r) / (r @ r) * r
    assert torch.allclose(p @ v, v, atol=1e-12)


def test_a_projected_head_step_keeps_the_head_s_response_to_the_earlier_feature():
    """The point of the projection: after W -= lr * grad P^T, the head answers the earlier modality's mean
    feature as before (up to alpha), while an unprojected step changes that answer."""
    torch.manual_seed(1)
    d, c, alpha = 8, 3, 1e-4
    w, r, grad = torch.randn(c, d, dtype=torch.float64), torch.randn(d, dtype=torch.float64), torch.randn(c, d, dtype=torch.float64)
    p = projector_update(torch.eye(d, dtype=torch.float64), r, alpha, normalise=False)
    projected, plain = w - 0.5 * grad @ p.T, w - 0.5 * grad
    assert (projected @ r - w @ r).norm() < 1e-3 * (plain @ r - w @ r).norm()


def test_entropy_fusion_weights_favour_the_confident_modality_and_sum_to_one():
    confident, unsure = torch.tensor([[8.0, 0.0, 0.0]]), torch.tensor([[0.1, 0.0, 0.05]])
    weights = entropy_fusion_weights([confident, unsure])
    assert torch.allclose(weights.sum(0), torch.ones(1)) and (weights >= 0).all()
    assert weights[0, 0] > 0.6 > 0.4 > weights[1, 0]
    same = entropy_fusion_weights([confident, confident.flip(-1)])  # the same entropy: equal weights
    assert torch.allclose(same, torch.full_like(same, 0.5))
    # the paper's form exp(max_j H_j - H_m) / sum, computed directly
    log_p = torch.stack([confident.log_softmax(-1), unsure.log_softmax(-1)])
    h = -(log_p.exp() * log_p).sum(-1)
    direct = (h.max(0).values - h).exp() / (h.max(0).values - h).exp().sum(0)
    assert torch.allclose(weights, direct)


def test_the_shared_head_s_shares_are_its_outputs_and_add_up_to_the_fused_logits():
    torch.manual_seed(0)
    head = SharedHeadFusion({"a": 5, "b": 5}, 4)
    z = {"a": torch.randn(3, 5), "b": torch.randn(3, 5)}
    shares = head.modality_shares(z)
    assert torch.allclose(shares["a"], head.linear(z["a"])) and torch.allclose(shares["b"], head.linear(z["b"]))
    assert torch.allclose(head(z), shares["a"] + shares["b"])
    with pytest.raises(ValueError, match="features of one size"):
        SharedHeadFusion({"a": 5, "b": 6}, 4)


def test_mla_refuses_an_unknown_prediction_rule():
    with pytest.raises(UnknownNameError, match="Unknown mla prediction 'vote'"):
        build_method("mla", ["gray", "color"], prediction="vote")


# -- MLA through the loop: one optimiser step per modality ----------------------------------------------
class StepSpy:
    """Wraps an optimiser's step to keep, for each call, which parameters had a gradient."""

    def __init__(self, method):
        self.method, self.calls = method, []

    def install(self, state):
        step = state.optimizer.step
        names = {id(p): n for n, p in state.model.named_parameters()}

        def spied(*args, **kwargs):
            self.calls.append((state.substep, {names[id(p)].split(".")[1] for g in state.optimizer.param_groups
                                                for p in g["params"] if p.grad is not None and
                                                names[id(p)].startswith("encoders.")}))
            return step(*args, **kwargs)

        state.optimizer.step = spied


def test_mla_takes_one_optimiser_step_per_modality_each_touching_only_that_encoder(tiny_config, tmp_path):
    config = tiny_config("mla", epochs=1, train_size=128)
    method = build_method("mla", ["gray", "color"])
    spy = StepSpy(method)
    original_setup = method.setup

    def setup(state):
        original_setup(state)
        spy.install(state)

    method.setup = setup
    record = train(config, method=method, checkpoint_dir=tmp_path, progress=False)
    steps = record["history"][-1]["step"]
    assert len(spy.calls) == 2 * steps
    assert spy.calls[:4] == [("gray", {"gray"}), ("color", {"color"}), ("gray", {"gray"}), ("color", {"color"})]
    assert 0 <= record["history"][-1]["train/acc"] <= 1  # counted once per batch, not once per substep
    rank = record["history"][-1]["train/mla/projector_effective_rank"]
    assert 1 <= rank < 512


def test_mla_resumes_to_the_same_run(tiny_config, tmp_path):
    straight, resumed = straight_and_resumed(tiny_config("mla", epochs=2, train_size=128), tmp_path)
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_runs_of_a_method_with_several_substeps_asked_to_stack_train_one_after_another(tiny_config, tmp_path):
    from mmlab.training import train_stacked

    configs = [tiny_config("mla", epochs=1, train_size=64, seed=s) for s in (0, 1)]
    stacked = train_stacked(configs, progress=False, checkpoint_dir=tmp_path / "a")
    alone = [train(c, progress=False, checkpoint_dir=tmp_path / "b") for c in configs]
    assert [without_timing(r["history"]) for r in stacked] == [without_timing(r["history"]) for r in alone]
    assert all("stacked_runs" not in r["provenance"] for r in stacked)


# -- Diagnosing & Re-learning ---------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters_and_purity_is_one_for_them():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 20
    labels = torch.arange(4).repeat_interleave(50)
    x = centres[labels] + torch.randn(200, 4, generator=g)
    assignment = kmeans(x, 4, generator=torch.Generator().manual_seed(1))
    assert cluster_purity(assignment, labels) == 1.0
    noise = torch.randn(200, 4, generator=g)  # clusters that know nothing of the labels
    assert cluster_purity(kmeans(noise, 4, generator=g), labels) < 0.5


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_purity_ignores_cluster_names_and_is_at_least_the_largest_class_share(data):
    n = data.draw(st.integers(2, 40))
    assignment = torch.tensor(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    labels = torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    renamed = torch.tensor(data.draw(st.permutations(range(5))))[assignment]
    purity = cluster_purity(assignment, labels)
    assert purity == cluster_purity(renamed, labels)
    assert torch.bincount(labels).max().item() / n <= purity + 1e-12 <= 1 + 1e-12
    assert cluster_purity(labels, labels) == 1.0


def test_features_are_scaled_onto_minus_one_to_one_and_strengths_follow_the_purity_gap():
    x = torch.tensor([[0.0, 5.0, 1.0], [2.0, 7.0, 1.0], [1.0, 6.0, 1.0]])
    scaled = scale_features(x)
    assert torch.allclose(scaled[:, 0], torch.tensor([-1.0, 1.0, 0.0])) and torch.all(scaled[:, 2] == 0)
    s = relearning_strengths({"a": 0.9, "b": 0.5, "c": 0.4}, {"a": 0.5, "b": 0.5, "c": 0.6}, scale=2.0)
    assert s["b"] == 0.0 and math.isclose(s["a"], math.tanh(0.8)) and math.isclose(s["c"], math.tanh(0.4))
    assert all(0 <= v < 1 for v in s.values())


def test_reinitialize_toward_moves_each_parameter_the_given_fraction_of_the_way_back():
    p = [torch.nn.Parameter(torch.tensor([4.0, -2.0])), torch.nn.Parameter(torch.tensor([1.0]))]
    initial = [torch.tensor([0.0, 2.0]), torch.tensor([3.0])]
    reinitialize_toward(p, initial, 0.25)
    assert torch.equal(p[0].data, torch.tensor([3.0, -1.0])) and torch.equal(p[1].data, torch.tensor([1.5]))
    reinitialize_toward(p, initial, 1.0)
    assert torch.equal(p[0].data, initial[0]) and torch.equal(p[1].data, initial[1])
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        reinitialize_toward(p, initial, 1.5)


def test_relearning_refuses_bad_options():
    with pytest.raises(ValueError, match="relearn_every must be a whole number"):
        build_method("relearning", ["gray", "color"], relearn_every=0)
    with pytest.raises(ValueError, match="strength_scale"):
        build_method("relearning", ["gray", "color"], strength_scale=-1.0)


def test_relearning_moves_each_encoder_back_toward_its_initial_parameters_by_its_logged_strength(tiny_config, tmp_path):
    """After the re-learning epoch every encoder parameter equals (1 - a) theta + a theta_0, with a the strength the
    epoch logged; the heads are untouched; epochs without re-learning log strength 0."""
    config = tiny_config("relearning", epochs=3, train_size=256, method_options={"relearn_every": 2})
    method = build_method("relearning", ["gray", "color"], **config.method_options)
    seen = {}
    original = method.on_epoch_end

    def on_epoch_end(state, evaluate):
        before = {k: v.clone() for k, v in state.model.state_dict().items()}
        out = original(state, evaluate)
        seen[state.epoch] = (before, {k: v.clone() for k, v in state.model.state_dict().items()}, out)
        seen["names"] = {m: [n for n, _ in state.model.encoders[m].named_parameters()] for m in state.model.encoders}
        return out

    method.on_epoch_end = on_epoch_end
    record = train(config, method=method, checkpoint_dir=tmp_path, progress=False)
    initial = {f"encoders.{m}.{n}": p for m in ("gray", "color") for n, p in zip(seen["names"][m], method.initial[m])}
    before, after, logged = seen[1]
    assert set(logged) >= {"train/relearning/strength/gray", "train/relearning/purity/color", "val/relearning/purity/gray"}
    for key, theta0 in initial.items():
        m = key.split(".")[1]
        a = logged[f"train/relearning/strength/{m}"]
        assert torch.allclose(after[key], torch.lerp(before[key], theta0, a), atol=1e-6)
    heads = [k for k in after if k.startswith("fusion.")]
    assert heads and all(torch.equal(before[k], after[k]) for k in heads)
    assert seen[0][2] == {"train/relearning/strength/gray": 0.0, "train/relearning/strength/color": 0.0}
    assert record["history"][1]["train/relearning/strength/color"] == logged["train/relearning/strength/color"]


def test_relearning_resumes_after_a_re_learning_epoch_to_the_same_run(tiny_config, tmp_path):
    config = tiny_config("relearning", epochs=3, train_size=256, method_options={"relearn_every": 1})
    straight, resumed = straight_and_resumed(config, tmp_path)  # interrupted after the first re-learning
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


# -- ReconBoost ---------------------------------------------------------------------------------------
from mmlab.methods.reconboost import boosting_loss


def test_the_boosting_loss_is_the_cross_entropy_weighted_by_what_the_others_miss():
    torch.manual_seed(0)
    logits, others, labels = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    q = others.softmax(-1)[torch.arange(6), labels]
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(boosting_loss(logits, others, labels, 5.0, 1.0), ((5.0 - q) * ce).mean() / 4)
    assert torch.allclose(boosting_loss(logits, None, labels, 5.0, 1.0), ((5.0 - 0.25) * ce).mean() / 4)
    # an ensemble certain of the right label, with w2 = w1: nothing left to learn, no gradient
    sure = torch.nn.functional.one_hot(labels, 4).float() * 100
    x = logits.clone().requires_grad_()
    boosting_loss(x, sure, labels, 1.0, 1.0).backward()
    assert x.grad.abs().max() < 1e-12


def test_reconboost_s_schedule_alternates_stages_and_rectifications():
    method = build_method("reconboost", ["gray", "color"], stage_epochs=2, rectify_epochs=1)
    method._modalities = ("gray", "color")
    phases = [method.phase(e) for e in range(7)]
    assert phases == [(0, "gray", False), (0, "gray", False), (0, "gray", True), (1, "color", False),
                      (1, "color", False), (1, "color", True), (2, "gray", False)]
    assert [method.ensemble_members(e) for e in (0, 2, 3, 5)] == [[], ["gray"], ["gray"], ["gray", "color"]]


def test_reconboost_trains_only_the_staged_modality_s_encoder_and_resumes_to_the_same_run(tiny_config, tmp_path):
    config = tiny_config("reconboost", epochs=3, train_size=256,
                         method_options={"stage_epochs": 1, "rectify_epochs": 1})
    snapshots = {}

    def keep(epoch, metrics):
        snapshots[epoch] = copy.deepcopy(torch.load(tmp_path / "straight" / f"{config.key}.pt", weights_only=False)["model"])

    straight = train(config, checkpoint_dir=tmp_path / "straight", progress=False, callbacks=[keep])
    params = lambda m: [k for k in snapshots[0] if k.startswith(f"encoders.{m}.") and "running" not in k
                        and "num_batches" not in k]  # noqa: E731
    # epoch 3 (index 2) is color's stage: gray's encoder parameters stay, color's move
    assert all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in params("gray"))
    assert any(not torch.equal(snapshots[1][k], snapshots[2][k]) for k in params("color"))
    assert [h["train/reconboost/boosting/gray"] for h in straight["history"]] == [1.0, 0.0, 0.0]

    _, resumed = straight_and_resumed(config, tmp_path / "again")  # interrupted after gray's stage
    assert without_timing(resumed["history"]) == without_timing(straight["history"])


def test_reconboost_refuses_a_run_too_short_for_every_modality_to_have_a_stage(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="need at least 12 epochs, this run has 2"):
        train(tiny_config("reconboost", epochs=2), checkpoint_dir=tmp_path, progress=False)
