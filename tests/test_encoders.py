"""The CG-MNIST encoder's folded input normalisation is the same function as BatchNorm then
convolution: outputs, gradients and running statistics (float64, so only rounding differs)."""

import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from mmlab.models import ConvEncoder
from mmlab.models.encoders import normalised_convolution


def _reference_and_folded(channels, stride, padding, kernel, momentum, seed):
    torch.manual_seed(seed)
    norm = nn.BatchNorm2d(channels, momentum=momentum).double()
    conv = nn.Conv2d(channels, 5, kernel, stride=stride, padding=padding).double()
    with torch.no_grad():  # away from the (1, 0) initialisation, so a missing term shows
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    return (norm, conv), copy.deepcopy((norm, conv))


@settings(max_examples=25, deadline=None)
@given(channels=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2),
       kernel=st.sampled_from([1, 3, 5]), momentum=st.sampled_from([0.1, None]),
       training=st.booleans(), seed=st.integers(0, 1000))
def test_folded_normalised_convolution_equals_norm_then_conv(channels, stride, padding, kernel, momentum,
                                                              training, seed):
    (norm, conv), (norm2, conv2) = _reference_and_folded(channels, stride, padding, kernel, momentum, seed)
    for module in (norm, conv, norm2, conv2):
        module.train(training)
    x = torch.randn(4, channels, 9, 8, dtype=torch.float64) * 3 + 1
    for _ in range(2):  # twice: the running statistics feed the second step in eval mode
        expected = conv(norm(x))
        got = normalised_convolution(norm2, conv2, x)
        torch.testing.assert_close(got, expected)
        cotangent = torch.randn_like(expected)
        params, params2 = [*norm.parameters(), *conv.parameters()], [*norm2.parameters(), *conv2.parameters()]
        for a, b in zip(torch.autograd.grad(expected, params, cotangent),
                        torch.autograd.grad(got, params2, cotangent)):
            torch.testing.assert_close(b, a)
        for name, buffer in norm.named_buffers():
            torch.testing.assert_close(getattr(norm2, name), buffer, msg=name)


def test_conv_encoder_keeps_its_layer_names_and_stages_compose_to_forward():
    encoder = ConvEncoder(3).double()
    assert list(encoder.state_dict())[:5] == ["net.0.weight", "net.0.bias", "net.0.running_mean",
                                              "net.0.running_var", "net.0.num_batches_tracked"]
    x = torch.randn(6, 3, 28, 28, dtype=torch.float64)
    encoder.eval()
    reference = encoder.net(x)  # the plain Sequential: BatchNorm, then the convolution
    h = x
    for stage in encoder.stages():
        h = stage(h)
    torch.testing.assert_close(encoder(x), reference)
    torch.testing.assert_close(h, reference)


def test_folded_form_refuses_other_padding_modes():
    norm, conv = nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="zero padding"):
        normalised_convolution(norm, conv, torch.randn(2, 1, 5, 5))


def test_channels_last_model_gives_the_same_outputs_and_gradients():
    from mmlab.data.registry import get_dataset
    from mmlab.models import build_model

    spec = get_dataset("cgmnist")
    torch.manual_seed(0)
    plain = build_model(spec, list(spec.modalities), True).double()
    nhwc = copy.deepcopy(plain).use_channels_last()
    conv = nhwc.encoders["color"].net[1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()  # really NHWC strides, not a no-op
    inputs = {"gray": torch.randn(4, 1, 28, 28, dtype=torch.float64),
              "color": torch.randn(4, 3, 28, 28, dtype=torch.float64)}
    a, b = plain(inputs), nhwc(inputs)
    torch.testing.assert_close(b.logits, a.logits)
    def scalar(out):
        return (out.logits ** 2).sum() + sum((h ** 2).sum() for h in out.unimodal_logits.values())

    for ga, gb in zip(torch.autograd.grad(scalar(a), list(plain.parameters())),
                      torch.autograd.grad(scalar(b), list(nhwc.parameters()))):
        torch.testing.assert_close(gb, ga)


def test_channels_last_leaves_other_ranks_alone():
    from mmlab.models.resnet import FramesResNet

    encoder = FramesResNet(3)
    from mmlab.models import ConcatFusion, MultimodalClassifier

    model = MultimodalClassifier({"visual": encoder}, ConcatFusion({"visual": encoder.feature_dim}, 6))
    model.use_channels_last()  # a 5-d normalisation buffer must not stop it
    assert encoder.normalise.mean.dim() == 5


def test_a_one_channel_encoder_runs_channels_last_after_its_first_convolution():
    encoder = ConvEncoder(1).to(memory_format=torch.channels_last)
    h = encoder._stem(torch.rand(4, 1, 28, 28))
    assert h.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous()
    assert ConvEncoder(1)._stem(torch.rand(4, 1, 28, 28)).is_contiguous()  # NCHW model: NCHW
