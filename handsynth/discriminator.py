"""The adversarial naturalness prior of RenderIH: an MLP that tells real finger poses from fakes.

Input: one hand's 15 finger joints as 45 Euler angles — the anatomical (bend, splay, twist)
angles of :mod:`handsynth.joint_limits`, left hands mirrored into right ones, so the network sees
the same quantity whatever the hand model's axes. Training data: natural hands labelled 1 and
jittered copies labelled r, as in RenderIH, with Gaussian jitter of standard deviation
0.6 rad x (1 - r) for r in 0, 0.1, ..., 0.9 (0.6 rad ~ 34 degrees: at r = 0 the copy is
clearly unnatural, at r = 0.9 it is barely changed). Soft labels make the score a graded
"distance from natural" rather than a hard decision, which gives the optimizer useful gradients.

The natural hands are the gesture library's variations (:func:`natural_hands`), not the deduped
input poses: the input is what augmentation perturbs (48 generator hands in the demo, whose
fingers follow the generator's rules, not a hand's), and at dataset size (1.4M raw frames) training
on it costs far more than on a fixed library of everyday gestures and grasps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from handsynth import gestures
from handsynth.seeds import rng_for

JITTER_RAD = 0.6
LEVELS = tuple(round(0.1 * i, 1) for i in range(10))
#: Natural variations per gesture in the training set (32 gestures x 40 = 1280 hands).
HANDS_PER_GESTURE = 40


def natural_hands(seed: int) -> np.ndarray:
    """The "real" training set (N, 45): gesture-library variations as anatomical angles, radians."""
    samples = gestures.gesture_samples(HANDS_PER_GESTURE, rng_for("discriminator hands", seed))
    return np.deg2rad(samples).reshape(len(samples), 45)


@dataclass
class DiscriminatorConfig:
    width: int = 512
    blocks: int = 2
    in_features: int = 45


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.2), nn.Linear(width, width))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class PoseDiscriminator(nn.Module):
    """MLP with residual blocks: (B, 45) Euler angles -> (B,) logit of 'natural'."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DiscriminatorConfig()
        c = self.config
        self.net = nn.Sequential(nn.Linear(c.in_features, c.width), nn.LeakyReLU(0.2),
                                 *[_ResBlock(c.width) for _ in range(c.blocks)], nn.Linear(c.width, 1))

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        return self.net(angles.reshape(-1, self.config.in_features)).squeeze(-1)


@dataclass
class TrainingReport:
    holdout_accuracy: float = 0.0
    holdout_auc: float = 0.0
    loss_curve: list[float] = field(default_factory=list)
    n_real: int = 0


def jittered_training_set(real: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Real angles (N, 45) -> inputs and soft labels: originals (1) plus one copy per level r."""
    xs, ys = [real], [torch.ones(len(real))]
    for r in LEVELS:
        noise = torch.randn(real.shape, generator=generator) * JITTER_RAD * (1.0 - r)
        xs.append(real + noise)
        ys.append(torch.full((len(real),), r))
    return torch.cat(xs), torch.cat(ys)


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic."""
    s = np.concatenate([scores_pos, scores_neg])
    ranks = np.empty(len(s))
    ranks[np.argsort(s, kind="stable")] = np.arange(1, len(s) + 1)
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_discriminator(real_angles: np.ndarray, *, seed: int = 0, epochs: int = 15, batch_size: int = 256,
                        lr: float = 1e-3, holdout_fraction: float = 0.2, config: DiscriminatorConfig | None = None,
                        log_fn: Callable[[str], None] | None = None) -> tuple[PoseDiscriminator, TrainingReport]:
    """Train on real hands (N, 45) radians; report held-out accuracy and AUC vs r <= 0.3 jitter."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    real = torch.as_tensor(real_angles, dtype=torch.float32)
    perm = torch.randperm(len(real), generator=g)
    n_hold = max(1, int(len(real) * holdout_fraction)) if len(real) > 1 else 0
    hold, train = real[perm[:n_hold]], real[perm[n_hold:]]
    model = PoseDiscriminator(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    bce = nn.BCEWithLogitsLoss()
    report = TrainingReport(n_real=len(real))
    for epoch in range(epochs):
        x, y = jittered_training_set(train, g)
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            loss = bce(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        report.loss_curve.append(total / max(len(x), 1))
        if log_fn:
            log_fn(f"discriminator epoch {epoch + 1}/{epochs}: loss {report.loss_curve[-1]:.4f}")
    if n_hold:
        with torch.no_grad():
            fake = torch.cat([hold + torch.randn(hold.shape, generator=g) * JITTER_RAD * (1 - r) for r in (0.0, 0.1, 0.2, 0.3)])
            p_real = torch.sigmoid(model(hold)).numpy()
            p_fake = torch.sigmoid(model(fake)).numpy()
        report.holdout_auc = auc(p_real, p_fake)
        report.holdout_accuracy = float(np.concatenate([p_real > 0.5, p_fake < 0.5]).mean())
    model.eval().requires_grad_(False)
    return model, report


def naturalness_loss(model: PoseDiscriminator, angles: torch.Tensor) -> torch.Tensor:
    """Cross-entropy toward 'natural' per pose (B,); the model is frozen, gradients reach the pose."""
    logits = model(angles)
    return nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")


def save_discriminator(model: PoseDiscriminator, report: TrainingReport) -> tuple[bytes, dict]:
    """safetensors bytes of the weights and a JSON-able card (architecture + metrics)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = {"architecture": asdict(model.config), "metrics": asdict(report),
            "input": "45 anatomical Euler angles (bend, splay, twist) of one right-equivalent hand, radians",
            "jitter_rad": JITTER_RAD, "levels": list(LEVELS)}
    return st_save(state), card


def load_discriminator(weights: bytes, card: dict) -> PoseDiscriminator:
    model = PoseDiscriminator(DiscriminatorConfig(**card["architecture"]))
    model.load_state_dict(st_load(weights))
    return model.eval().requires_grad_(False)


def discriminator_from_state(state: dict[str, torch.Tensor]) -> PoseDiscriminator:
    """Rebuild a frozen model from its state dict alone (width and depth read off the tensors)."""
    width, in_features = state["net.0.weight"].shape
    blocks = len({k.split(".")[1] for k in state if k.endswith("body.0.weight")})
    model = PoseDiscriminator(DiscriminatorConfig(width=width, blocks=blocks, in_features=in_features))
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)
