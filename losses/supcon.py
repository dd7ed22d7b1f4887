from __future__ import annotations

import torch
import torch.nn as nn


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, eq. 2).

    Call as ``loss(features, labels=None, mask=None)``:
      features: [B, V, D] — V views of B samples, each row L2-normalised.
      labels:   [B] — positives of an anchor are all other vectors whose sample has the same label.
      mask:     [B, B] — alternatively, mask[i, j] = 1 when sample j is a positive of sample i.
      Neither: SimCLR — an anchor's only positives are the other views of its own sample.
    contrast_mode 'all' uses all B*V vectors as anchors, 'one' only the first view.

    loss_i = -(T / T_base) * mean_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) ),
    averaged over anchors. An anchor without positives contributes 0 (and no NaN).
    """

    def __init__(self, temperature: float = 0.07, contrast_mode: str = "all", base_temperature: float = 0.07):
        super().__init__()
        if contrast_mode not in ("all", "one"):
            raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")
        self.temperature = temperature
        self.contrast_mode = contrast_mode
        self.base_temperature = base_temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"features must be [B, V, D], got shape {tuple(features.shape)}")
        if labels is not None and mask is not None:
            raise ValueError("give labels or mask, not both")
        b, v, _ = features.shape
        device = features.device
        dtype = torch.promote_types(features.dtype, torch.float32)
        if labels is not None:
            labels = labels.reshape(-1, 1)
            if labels.shape[0] != b:
                raise ValueError(f"labels has {labels.shape[0]} entries for {b} samples")
            mask = torch.eq(labels, labels.T).float()  # [B, B]
        elif mask is None:
            mask = torch.eye(b, device=device)
        mask = mask.to(device=device, dtype=dtype)

        contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # [V*B, D], view-major
        anchors = contrast if self.contrast_mode == "all" else features[:, 0]  # [A, D]
        n_anchor_views = v if self.contrast_mode == "all" else 1

        # Similarities in at least fp32 (also under autocast): exp/log of logits up to 1/T need the range.
        logits = anchors.to(dtype) @ contrast.to(dtype).T / self.temperature  # [A, V*B]
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # numerical stability

        mask = mask.repeat(n_anchor_views, v)  # [A, V*B]
        # An anchor is never its own positive nor in its denominator. (1 - eye, not an indexed assignment:
        # that would make the GPU wait for the host.)
        self_mask = 1 - torch.eye(*mask.shape, device=device, dtype=dtype)  # [A, V*B]
        mask = mask * self_mask

        exp_logits = torch.exp(logits) * self_mask
        log_prob = logits - torch.log(exp_logits.sum(dim=1, keepdim=True))
        n_pos = mask.sum(dim=1)
        # Anchors without positives: numerator 0 and denominator clamped to 1, so they add exactly 0.
        mean_log_prob_pos = (mask * log_prob).sum(dim=1) / n_pos.clamp(min=1)
        loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        return loss.mean()
