"""A real optimisation signal for model-part tests: Adam on one batch of sines."""

from __future__ import annotations

import torch


def sine_batch(num_samples: int = 3200) -> dict[str, torch.Tensor]:
    """Four unit sines (200-700 Hz) of ``num_samples`` samples at 16 kHz, ``x (4, 1, L)``."""
    t = torch.arange(num_samples) / 16000
    x = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (200, 300, 450, 700)])[:, None]
    return {"x": x, "mask": torch.ones(4, num_samples, dtype=torch.bool)}


def adam_losses(module, steps: int = 30, lr: float = 3e-3) -> tuple[float, float]:
    """InfoNCE loss of ``module`` on :func:`sine_batch` before and after ``steps`` Adam steps."""
    batch = sine_batch()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    first = module.compute_loss(batch).loss.item()
    for _ in range(steps):
        loss = module.compute_loss(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()
