"""The SupCon-MPL step: which parameters each sub-step moves, and the h-weighted teacher feedback."""
import contextlib
import copy

import torch
import torch.nn.functional as F

from models import LinearClassifier, SupConNet
from engine.config import DEFAULTS
from methods.supconmpl import MPLPair, mpl_step


def make_pair(seed=0):
    torch.manual_seed(seed)
    cfg = copy.deepcopy(DEFAULTS)
    cfg["mpl"].update(teacher_lr=1e-2, student_lr=1e-2)
    teacher, student = SupConNet("test_resnet", "none", 16), SupConNet("test_resnet", "none", 16)
    pair = MPLPair(teacher, LinearClassifier(teacher.dim), student, LinearClassifier(student.dim), cfg["mpl"],
                   contextlib.nullcontext())
    return pair


def batch(seed=1, b_l=4, b_u=6, size=16):
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.randn(n, 3, size, size, generator=g)  # noqa: E731
    return r(b_l), r(b_l), torch.tensor([0, 1, 0, 1]), r(b_u), r(b_u)


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module):
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())}


def test_every_trainable_part_moves():
    pair = make_pair()
    parts = {"teacher": pair.teacher, "t_cls": pair.t_cls, "student": pair.student, "s_cls": pair.s_cls}
    before = {n: params(m) for n, m in parts.items()}
    out = mpl_step(pair, *batch())
    for name, module in parts.items():
        assert changed(before[name], module), f"{name} did not move"
    assert all(torch.isfinite(v).all() for v in out.values())
    assert set(out) >= {"t_loss", "t_supcon", "s_supcon", "s_cls", "h"}


def test_teacher_encoder_gets_no_mpl_gradient():
    """With the teacher network's own SupCon update switched off, the MPL part must leave its encoder alone."""
    pair = make_pair()
    pair.opt_t = torch.optim.SGD(pair.teacher.parameters(), lr=0.0)
    before = params(pair.teacher)
    mpl_step(pair, *batch())
    assert not changed(before, pair.teacher)
    # ... and the teacher encoder's gradient is exactly that of its labeled SupCon loss.
    x_l, x_l2, y, _, _ = batch()
    probe = copy.deepcopy(pair.teacher)
    probe.train()
    z = probe(torch.cat([x_l, x_l2]))
    pair.supcon(torch.stack(z.split(4), dim=1), y).backward()
    # Recompute on the same (unchanged) weights: grads of the step's backward must match this probe.
    for (name, p), (_, q) in zip(pair.teacher.named_parameters(), probe.named_parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_student_encoder_untouched_by_classifier_and_teacher_updates():
    pair = make_pair()
    pair.opt_s = torch.optim.SGD(pair.student.parameters(), lr=0.0)  # switch off step 4 only
    before = params(pair.student)
    mpl_step(pair, *batch())
    assert not changed(before, pair.student)


def test_teacher_classifier_update_is_ce_plus_h_weighted_pseudo_label_term():
    pair = make_pair()
    pair.opt_t_cls = torch.optim.SGD(pair.t_cls.parameters(), lr=1.0)  # delta = -gradient
    x_l, x_l2, y, x_uw, x_us = batch()
    cls0 = copy.deepcopy(pair.t_cls)
    pair.teacher.eval()
    with torch.no_grad():
        f = pair.teacher.encoder(torch.cat([x_l, x_uw, x_us]))  # features before any update
    out = mpl_step(pair, x_l, x_l2, y, x_uw, x_us)
    h = out["h"]
    assert h.ndim == 0 and h != 0
    f_l, _, f_us = f.split([4, 6, 6])
    w = cls0.fc.weight.detach().clone().requires_grad_()
    b = cls0.fc.bias.detach().clone().requires_grad_()
    t_l, t_us = f_l @ w.T + b, f_us @ w.T + b
    expected = F.cross_entropy(t_l, y) + h * F.cross_entropy(t_us, t_us.detach().argmax(1))
    gw, gb = torch.autograd.grad(expected, [w, b], retain_graph=True)
    assert torch.allclose(cls0.fc.weight - pair.t_cls.fc.weight, gw, atol=1e-5)
    assert torch.allclose(cls0.fc.bias - pair.t_cls.fc.bias, gb, atol=1e-5)
    # The h-term really contributes: without it the update would differ.
    g0, _ = torch.autograd.grad(F.cross_entropy(t_l, y), [w, b])
    assert not torch.allclose(g0, gw, atol=1e-6)


def test_h_is_change_of_student_labeled_loss():
    pair = make_pair()
    x_l, x_l2, y, x_uw, x_us = batch()
    student0, s_cls0 = copy.deepcopy(pair.student), copy.deepcopy(pair.s_cls)
    out = mpl_step(pair, x_l, x_l2, y, x_uw, x_us)
    student0.eval()  # the authors' mode for s_old and s_new: running statistics
    pair.student.eval()
    with torch.no_grad():
        s_old = F.cross_entropy(s_cls0(student0.encoder(x_l)), y)
        s_new = F.cross_entropy(pair.s_cls(pair.student.encoder(x_l)), y)
    assert torch.allclose(out["h"], s_new - s_old, atol=1e-5)


def with_running_statistics(pair, seed=5):
    """Give the student's batch norms non-trivial running statistics (as a pretrained network has)."""
    g = torch.Generator().manual_seed(seed)
    pair.student.train()
    with torch.no_grad():
        for _ in range(3):
            pair.student(torch.randn(8, 3, 16, 16, generator=g) * 2 + 0.5)
    return pair


def bn_buffers(module):
    return {k: v.clone() for k, v in module.named_buffers() if "running" in k}


def test_student_batch_norm_modes_follow_the_authors_in_every_sub_step():
    """Sub-steps 3, 5 and 6 run the student in eval mode (running statistics, not updated); sub-step 4 in
    train mode; the student ends the step in train mode."""
    pair = with_running_statistics(make_pair())
    modes = []
    pair.student.encoder.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))
    x_l, x_l2, y, x_uw, x_us = batch()
    reference = copy.deepcopy(pair.student)
    mpl_step(pair, x_l, x_l2, y, x_uw, x_us)
    assert modes == [False, True, False]  # s_old; SupCon on (weak, strong); classifier features = s_new's
    assert pair.student.training
    # Only sub-step 4's forward (train mode, on the unlabeled views) moved the running statistics.
    reference.train()
    with torch.no_grad():
        reference(torch.cat([x_uw, x_us]))
    after = bn_buffers(pair.student)
    for k, v in bn_buffers(reference).items():
        assert torch.allclose(after[k], v), k


def test_h_uses_running_statistics_not_labeled_batch_statistics():
    """With the labeled batch's own statistics (train mode) h would differ: the authors' eval mode counts."""
    pair = with_running_statistics(make_pair())
    x_l, x_l2, y, x_uw, x_us = batch()
    student0, s_cls0 = copy.deepcopy(pair.student), copy.deepcopy(pair.s_cls)
    out = mpl_step(pair, x_l, x_l2, y, x_uw, x_us)
    student0.train()
    with torch.no_grad():
        s_old_train = F.cross_entropy(s_cls0(student0.encoder(x_l)), y)
    student0.eval()
    with torch.no_grad():
        s_old_eval = F.cross_entropy(s_cls0(student0.encoder(x_l)), y)
    assert not torch.allclose(s_old_train, s_old_eval, atol=1e-4)  # the modes give different losses here
    assert torch.isfinite(out["h"])
