"""Reference-style training steps, for benchmark.py only: the structure of the authors' code, written here
for comparison (no line of theirs is used). What makes them "reference-style":

- data: every image opened with PIL and augmented one at a time (torchvision's PIL transforms, ToTensor)
  in DataLoader workers, shuffled with a fresh DataLoader per pass;
- arithmetic: fp32 (PyTorch's defaults; no autocast), default (not channels_last) memory format, Adam
  with its default (not fused) implementation;
- the MPL step runs the student's encoder three times on the labeled batch (loss before the update,
  classifier update, loss after it), where ours shares the features of the last two;
- a host sync per loss per step (`.item()` for the running averages the reference code logs).

The algorithm is the same as ours, so the two can be timed side by side on the same models and batches.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from losses import SupConLoss, mpl_feedback, teacher_mpl_loss


class PILDataset(Dataset):
    """(path, label) pairs -> (view_1, ..., view_V, label): PIL decode + PIL augmentation per image."""

    def __init__(self, items: list[tuple[str, int]], cfg: dict, views: int):
        aug = cfg["aug"]
        self.items, self.views = items, views
        self.transform = T.Compose([
            T.RandomResizedCrop(cfg["img_size"], scale=tuple(aug["scale"])),
            T.RandomHorizontalFlip(aug["hflip"]),
            T.RandomApply([T.ColorJitter(*aug["color_jitter"])], p=aug["color_jitter_p"]),
            T.RandomGrayscale(aug["grayscale_p"]),
            T.ToTensor(),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        img = Image.open(path).convert("RGB")
        return (*[self.transform(img) for _ in range(self.views)], label)


def pil_batches(items: list[tuple[str, int]], cfg: dict, batch_size: int, views: int, workers: int) -> Iterator:
    """Endless batches, one DataLoader pass after another (as an epoch loop would)."""
    loader = DataLoader(PILDataset(items, cfg, views), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    while True:
        yield from loader


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()  # the reference code's running averages: a host sync per loss


def pt_step(model, opt, batches, device) -> None:
    x, y = next(batches)
    x, y = x.to(device), y.to(device)
    _update(opt, F.cross_entropy(model(x), y))


def supcon_step(net, opt, batches, device, criterion: SupConLoss) -> None:
    v1, v2, y = next(batches)
    b = y.shape[0]
    z = net(torch.cat([v1, v2]).to(device))  # [2B, D]
    _update(opt, criterion(torch.stack(z.split(b), dim=1), y.to(device)))


def mpl_step(m, lab, unl, device) -> None:
    """The SupCon-MPL step as the reference code structures it; m: train_supconmpl.MPLPair with
    non-fused optimizers (see benchmark.py)."""
    x_l, x_l2, y_l = (t.to(device) for t in next(lab))
    x_uw, x_us, _ = (t.to(device) for t in next(unl))
    b_l, b_u = x_l.shape[0], x_uw.shape[0]
    m.teacher.eval()
    with torch.no_grad():
        t_feats = m.teacher.encoder(torch.cat([x_l, x_uw, x_us]))
    t_l, t_uw, t_us = m.t_cls(t_feats).split([b_l, b_u, b_u])
    m.student.eval()
    with torch.no_grad():
        s_old = F.cross_entropy(m.s_cls(m.student.encoder(x_l)), y_l)  # student encoder pass 1
    pseudo = torch.softmax(t_uw.detach() / m.T, dim=1).argmax(dim=1)
    m.student.train()
    z = m.student(torch.cat([x_uw, x_us]))
    _update(m.opt_s, m.supcon(torch.stack(z.split(b_u), dim=1), pseudo))
    m.student.eval()
    with torch.no_grad():
        feats = m.student.encoder(x_l)  # pass 2
    _update(m.opt_s_cls, F.cross_entropy(m.s_cls(feats), y_l))
    with torch.no_grad():
        s_new = F.cross_entropy(m.s_cls(m.student.encoder(x_l)), y_l)  # pass 3
    m.student.train()
    h = mpl_feedback(s_old, s_new, m.sign)
    m.teacher.train()
    zt = m.teacher(torch.cat([x_l, x_l2]))
    _update(m.opt_t, m.supcon(torch.stack(zt.split(b_l), dim=1), y_l))
    _update(m.opt_t_cls, teacher_mpl_loss(t_l, y_l, t_us, h))
