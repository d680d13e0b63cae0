import math

import pytest
import torch

from pocketnet.models.heads import MarginHead


def _head(**kw) -> MarginHead:
    head = MarginHead(2, 3, **kw)
    with torch.no_grad():  # class centres along fixed directions
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    return head


def _emb(angle_deg: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    return torch.tensor([[3.0 * math.cos(a), 3.0 * math.sin(a)]])  # norm 3: normalised away


def test_arcface_logits_by_hand():
    head = _head(s=64.0, m1=1.0, m2=0.5, m3=0.0)
    logits = head(_emb(60.0), torch.tensor([0]))
    expected = [
        64 * math.cos(math.radians(60) + 0.5),
        64 * math.cos(math.radians(30)),
        64 * math.cos(math.radians(120)),
    ]
    assert logits[0].tolist() == pytest.approx(expected, abs=1e-3)


def test_cosface_and_combined_logits_by_hand():
    cos = _head(s=64.0, m1=1.0, m2=0.0, m3=0.35)(_emb(60.0), torch.tensor([1]))
    assert cos[0, 1].item() == pytest.approx(64 * (math.cos(math.radians(30)) - 0.35), abs=1e-3)
    assert cos[0, 0].item() == pytest.approx(64 * 0.5, abs=1e-3)
    comb = _head(s=32.0, m1=0.9, m2=0.4, m3=0.15)(_emb(60.0), torch.tensor([0]))
    theta = math.radians(60)
    assert comb[0, 0].item() == pytest.approx(32 * (math.cos(0.9 * theta + 0.4) - 0.15), abs=1e-3)


def test_softmax_is_a_plain_linear_classifier():
    head = _head(normalize=False)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.tensor([[2.0, 1.0]])
    assert head(x, torch.tensor([0]))[0].tolist() == pytest.approx([2.5, 0.0, 0.0])
    assert not head.has_margin


def test_fallback_past_pi_keeps_the_target_logit_decreasing():
    head = _head(s=1.0, m1=1.0, m2=0.5, m3=0.0)
    angles = torch.linspace(100, 179, 200)
    target = torch.stack([head(_emb(a.item()), torch.tensor([0]))[0, 0] for a in angles])
    assert (target[1:] < target[:-1]).all()
    theta0 = math.degrees(math.pi - 0.5)
    just_before = head(_emb(theta0 - 0.01), torch.tensor([0]))[0, 0].item()
    just_after = head(_emb(theta0 + 0.01), torch.tensor([0]))[0, 0].item()
    assert just_before == pytest.approx(-1.0, abs=1e-3)
    assert just_after == pytest.approx(-1.0, abs=1e-3)


def test_label_smoothing_by_hand():
    """CosFace, 30 deg from class 1 (60 and 120 deg from the others): the target is 0.9 on
    class 1 and 0.1 / 3 on every class, so the loss is log-sum-exp minus that mix of logits."""
    s, m3 = 4.0, 0.35
    logits = [s * math.cos(math.radians(60)), s * (math.cos(math.radians(30)) - m3)]
    logits.append(s * math.cos(math.radians(120)))
    lse = math.log(sum(math.exp(z) for z in logits))
    want = lse - 0.9 * logits[1] - 0.1 * sum(logits) / 3
    head = _head(s=s, m1=1.0, m2=0.0, m3=m3, label_smoothing=0.1)
    assert head.loss(_emb(60.0), torch.tensor([1])).item() == pytest.approx(want, abs=1e-5)
    plain = _head(s=s, m1=1.0, m2=0.0, m3=m3).loss(_emb(60.0), torch.tensor([1])).item()
    assert plain == pytest.approx(lse - logits[1], abs=1e-5)


def test_head_is_fp32_and_finite_at_the_clamp():
    head = _head()
    emb = torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16)  # exactly on the class centre
    logits = head(emb, torch.tensor([0]))
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(head.weight.grad).all()


def test_bad_head_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        MarginHead(8, 1)
    with pytest.raises(ValueError, match="m1"):
        MarginHead(8, 4, m1=0.0)
    with pytest.raises(ValueError, match=r"head.label_smoothing must be in \[0, 1\), got 1.0"):
        MarginHead(8, 4, label_smoothing=1.0)
