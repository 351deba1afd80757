"""ResNet-18 encoders of CREMA-D (mmlab.models.resnet) and the models built with them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.data.registry import DatasetSpec
from mmlab.models import build_model
from mmlab.models.resnet import FramesResNet, ResNet18, SpectrogramResNet, resnet18_trunk

SPEC = DatasetSpec(name="cremad", description="test", modalities={"audio": 1, "visual": 3}, num_classes=6)


def _inputs(n=2, frames=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"audio": torch.randn(n, 1, 40, 36, generator=g),
            "visual": torch.rand(n, frames, 3, size, size, generator=g)}


def test_own_resnet18_has_torchvisions_layers_under_the_same_names():
    torchvision = pytest.importorskip("torchvision")
    ours = ResNet18(in_channels=1).state_dict()
    theirs = torchvision.models.resnet18(weights=None)
    theirs.conv1 = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    theirs = {k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert sum(v.numel() for k, v in ours.items() if "running" not in k and "tracked" not in k) == 11_170_240


def test_both_trunks_compute_the_same_function_with_the_same_weights():
    pytest.importorskip("torchvision")
    ours, theirs = resnet18_trunk(3, prefer_torchvision=False).eval(), resnet18_trunk(3).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x))


def test_encoders_give_512_features_and_their_stages_compose_to_them():
    torch.manual_seed(0)
    x = _inputs()
    for encoder, inp in ((SpectrogramResNet(1), x["audio"]), (FramesResNet(3), x["visual"])):
        encoder.eval()
        out = encoder(inp)
        assert out.shape == (2, 512)
        h = inp
        for stage in encoder.stages():
            h = stage(h)
        torch.testing.assert_close(h, out)
    maps = FramesResNet(3).stages()[0](x["visual"])
    assert maps.shape[:3] == (2, 128, 2)  # the visual stages keep the frame axis: [N, C, T, h, w]


@settings(max_examples=5, deadline=None)
@given(perm_seed=st.integers(0, 1000))
def test_visual_features_do_not_depend_on_the_order_of_frames(perm_seed):
    torch.manual_seed(0)
    encoder = FramesResNet(3).eval()
    frames = _inputs(frames=3, size=32)["visual"]
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(perm_seed))
    torch.testing.assert_close(encoder(frames[:, perm]), encoder(frames), atol=1e-5, rtol=1e-4)


def test_visual_encoder_refuses_a_single_image_batch():
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\]"):
        FramesResNet(3)(torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("fusion", ["concat", "mmtm"])
def test_cremad_models_train_one_step(fusion):
    torch.manual_seed(0)
    model = build_model(SPEC, ["audio", "visual"], unimodal_heads=True, fusion=fusion)
    out = model(_inputs())
    assert out.logits.shape == (2, 6) and set(out.unimodal_logits) == {"audio", "visual"}
    out.logits.sum().backward()
    groups = model.parameter_groups()
    assert all(p.grad is not None for p in groups.encoders["visual"] if p.requires_grad)
    encoder_ids = {id(p) for ps in groups.encoders.values() for p in ps}
    assert len(encoder_ids) == sum(len(ps) for ps in groups.encoders.values())  # no parameter twice
    assert encoder_ids.isdisjoint(id(p) for p in groups.non_encoder())


def test_normalisation_buffers_follow_the_model():
    model = build_model(SPEC, ["audio", "visual"], unimodal_heads=False).to(torch.float64)
    out = model({k: v.double() for k, v in _inputs().items()})
    assert out.logits.dtype == torch.float64


def test_a_cremad_shaped_run_goes_through_the_loop(tmp_path):
    """The ResNet path end to end: frames augmented on the device, bf16 autocast, per-loss
    gradients (the first steps of a 2 x 11M-parameter model take seconds on a CPU: one method)."""
    from mmlab import RunConfig
    from mmlab.training import train

    for method in ("mmpareto",):
        config = RunConfig.from_profile(dataset="cremad_shaped", method=method, profile="smoke",
                                        dataset_options={"frames": 2, "frame_size": 32, "spectrogram_bins": 33,
                                                         "spectrogram_frames": 24}, train_size=8,
                                        val_size=4, test_size=4, epochs=1, batch_size=4, precision="bf16",
                                        grad_probe_every=1)
        record = train(config, checkpoint_dir=tmp_path, progress=False)
        assert record["history"][0]["step"] == 2
        assert {"test/acc/audio", "test/acc/visual"} <= set(record["final"])
