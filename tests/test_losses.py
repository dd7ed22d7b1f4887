import math

import pytest
import torch
import torch.nn.functional as F

from losses import SupConLoss, mpl_feedback, teacher_mpl_loss


def naive_supcon(features, labels=None, temperature=0.07, base_temperature=0.07):
    """Per-anchor loop straight from the paper's formula (eq. 2 of Khosla et al.)."""
    b, v, _ = features.shape
    z = [features[i, k] for k in range(v) for i in range(b)]  # view-major, as the loss concatenates
    owner = [i for k in range(v) for i in range(b)]
    losses = []
    for a in range(len(z)):
        if labels is None:
            pos = [p for p in range(len(z)) if p != a and owner[p] == owner[a]]
        else:
            pos = [p for p in range(len(z)) if p != a and labels[owner[p]] == labels[owner[a]]]
        denom = sum(torch.exp(z[a] @ z[o] / temperature) for o in range(len(z)) if o != a)
        if not pos:
            losses.append(torch.tensor(0.0, dtype=features.dtype))
            continue
        terms = [torch.log(torch.exp(z[a] @ z[p] / temperature) / denom) for p in pos]
        losses.append(-(temperature / base_temperature) * torch.stack(terms).mean())
    return torch.stack(losses).mean()


def feats(b, v, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, v, d, generator=g, dtype=torch.float64), dim=2)


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("with_labels", [True, False])
def test_supcon_matches_naive_loop(views, with_labels):
    f = feats(6, views)
    labels = torch.tensor([0, 1, 0, 1, 1, 0]) if with_labels else None
    loss = SupConLoss(temperature=0.1)(f, labels)
    ref = naive_supcon(f, labels, temperature=0.1)
    assert torch.allclose(loss, ref, atol=1e-10), (loss, ref)


def test_anchor_without_positive_contributes_zero_and_no_nan():
    f = feats(4, 1).requires_grad_()
    labels = torch.tensor([0, 0, 1, 2])  # samples 2 and 3 have no positive with a single view
    loss = SupConLoss(temperature=0.1)(f, labels)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, naive_supcon(f.detach(), labels, temperature=0.1), atol=1e-10)
    loss.backward()
    assert torch.isfinite(f.grad).all()
    # SimCLR with one view: nobody has a positive -> exactly 0.
    assert SupConLoss()(feats(3, 1)).item() == 0.0


def test_mask_equals_labels_and_contrast_mode_one():
    f = feats(5, 2, seed=3)
    labels = torch.tensor([1, 0, 1, 1, 0])
    mask = (labels[:, None] == labels[None, :]).float()
    crit = SupConLoss(temperature=0.2)
    assert torch.allclose(crit(f, labels), crit(f, mask=mask))
    one = SupConLoss(temperature=0.2, contrast_mode="one")(f, labels)
    assert torch.isfinite(one) and not torch.allclose(one, crit(f, labels))


def test_supcon_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, V, D\]"):
        SupConLoss()(torch.randn(4, 8))


def test_perfectly_clustered_features_have_lower_loss():
    labels = torch.tensor([0, 0, 1, 1])
    good = F.normalize(torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]]), dim=1)[:, None].repeat(1, 2, 1)
    bad = F.normalize(torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]]), dim=1)[:, None].repeat(1, 2, 1)
    crit = SupConLoss(temperature=0.1)
    assert crit(good, labels) < crit(bad, labels)


def test_mpl_feedback_sign():
    old, new = torch.tensor(0.9), torch.tensor(0.7)
    assert math.isclose(mpl_feedback(old, new).item(), -0.2, abs_tol=1e-6)
    assert math.isclose(mpl_feedback(old, new, "old_minus_new").item(), 0.2, abs_tol=1e-6)
    with pytest.raises(ValueError):
        mpl_feedback(old, new, "sideways")


def test_teacher_loss_gradient_carries_h_weighted_term():
    torch.manual_seed(0)
    t_l = torch.randn(4, 2, requires_grad=True)
    t_us = torch.randn(6, 2, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0])
    grads = {}
    for h in (0.0, 0.5):
        t_l.grad = t_us.grad = None
        teacher_mpl_loss(t_l, y, t_us, torch.tensor(h)).backward()
        grads[h] = (t_l.grad.clone(), t_us.grad.clone())
    t_us.grad = None
    F.cross_entropy(t_us, t_us.detach().argmax(1)).backward()
    assert torch.allclose(grads[0.5][0], grads[0.0][0])  # labeled part does not depend on h
    assert torch.allclose(grads[0.5][1] - grads[0.0][1], 0.5 * t_us.grad, atol=1e-7)
