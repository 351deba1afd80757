import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab.metrics import accuracy, confusion_matrix, cosine, global_norm, macro_f1


def test_macro_f1_known_case():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    p = torch.tensor([0, 1, 1, 1, 2, 0])
    # class 0: tp1 fp1 fn1 -> 0.5 ; class 1: tp2 fp1 fn0 -> 0.8 ; class 2: tp1 fp0 fn1 -> 2/3
    assert abs(macro_f1(p, y, 3) - (0.5 + 0.8 + 2 / 3) / 3) < 1e-9
    assert abs(accuracy(p, y) - 4 / 6) < 1e-12
    assert confusion_matrix(p, y, 3).sum() == 6


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40))
def test_perfect_predictions_have_f1_one(labels):
    y = torch.tensor(labels)
    assert macro_f1(y, y, 5) == 1.0


def test_global_norm_and_cosine_match_flattened_vectors():
    torch.manual_seed(0)
    a = [torch.randn(3, 4), torch.randn(5)]
    b = [torch.randn(3, 4), torch.randn(5)]
    fa, fb = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    torch.testing.assert_close(global_norm(a), fa.norm())
    torch.testing.assert_close(cosine(a, b), torch.nn.functional.cosine_similarity(fa, fb, dim=0))
    torch.testing.assert_close(cosine(a, [-t for t in a]), torch.tensor(-1.0))


def test_global_norm_of_no_gradient_is_zero_on_the_device_asked_for():
    """A captured step stacks the logged norms on the GPU: an encoder no gradient reached must log its 0 there."""
    assert float(global_norm([None, None])) == 0.0
    assert global_norm([None], device=torch.device("meta")).device.type == "meta"
