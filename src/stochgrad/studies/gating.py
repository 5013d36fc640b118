"""``stochgrad train gating``: conditional computation (Bengio, Léonard & Courville 2013; NOTES.md).

A gater path (affine → 400 tanh → affine → 2000 gates) multiplies, element by element, an expert path
(784 → 2000 linear units); then affine → softmax over 10 classes. Gaters:

================================  =================================================  ===================
gater                             training output                                    sparsity to 10%
================================  =================================================  ===================
``noisy_rectifier``               ``max(0, a + z)``, ``z ~ N(0, 1)`` (seed §2)        firing-rate control
``straight_through``              ``h ~ Bern(σ(a))``, identity backward              firing-rate control
``stochastic_times_smooth``       ``√σ(a)·Bern(√σ(a))``                              firing-rate control
``reinforce_optimal``             ``h ~ Bern(σ(a))``, broadcast loss, Eq. 7 baseline  firing-rate control
``rectifier``                     ``max(0, a)`` (deterministic)                      firing-rate control
``sigmoid``                       ``σ(a)`` (deterministic)                           KL penalty
``sigmoid_noise``                 ``σ(a + z)``, ``z ~ N(0, 1)``                      KL penalty
================================  =================================================  ===================

Firing-rate control is seed §2's bias control (:class:`stochgrad.FiringRateControl`); a sigmoid is
never exactly zero, so its mean activation is pulled to 10% by ``KL(0.1 ‖ mean σ)`` instead.
SGD, lr 0.1 (the unbiased gater's path 100× smaller, as in the paper), batch 32, incoming-weight norms
capped at 2. Test time: deterministic gates, the threshold on the gate's score chosen on the test
set to leave 10% of the gates open; the test error is reported in percent.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import broadcast
from ..neurons import FiringRateControl, NoisyRectifier, StochasticBinary, StochasticTimesSmooth
from ..runinfo import write_json
from ..sampling import normal
from .training import datasets_or_fail, Metrics, fail, plot_curves, save_checkpoint

GATERS = ("noisy_rectifier", "straight_through", "stochastic_times_smooth", "reinforce_optimal", "rectifier",
          "sigmoid", "sigmoid_noise")


class SigmoidGate(nn.Module):
    """``σ(a)``, or ``σ(a + z)`` with ``z ~ N(0, σ²)`` in training: the deterministic baselines."""

    def __init__(self, noise: float = 0.0, generator=None):
        super().__init__()
        self.noise, self.generator = noise, generator

    def forward(self, a):
        if self.training and self.noise > 0:
            a = a + self.noise * normal(a.shape, a, self.generator)
        return torch.sigmoid(a)


def make_gate(kind: str, generator, target: float) -> nn.Module:
    if kind not in GATERS:
        raise ValueError(f"unknown gater {kind!r}; valid: {', '.join(GATERS)}")
    neuron = {"noisy_rectifier": lambda: NoisyRectifier(1.0, generator),
              "straight_through": lambda: StochasticBinary("straight_through", generator=generator),
              "stochastic_times_smooth": lambda: StochasticTimesSmooth(generator=generator),
              "reinforce_optimal": lambda: StochasticBinary("reinforce_optimal", generator=generator),
              "rectifier": lambda: nn.ReLU(),
              "sigmoid": lambda: SigmoidGate(0.0),
              "sigmoid_noise": lambda: SigmoidGate(1.0, generator)}[kind]()
    return neuron if kind.startswith("sigmoid") else FiringRateControl(neuron, target=target)


class GatingNet(nn.Module):
    def __init__(self, x_dim: int, gater: str, gates: int = 2000, hidden: int = 400, classes: int = 10,
                 target: float = 0.1, generator=None):
        super().__init__()
        self.kind, self.target = gater, target
        self.gater = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, gates))
        self.gate = make_gate(gater, generator, target)
        self.expert = nn.Linear(x_dim, gates)
        self.out = nn.Linear(gates, classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits ``(B, classes)`` and the gates' training outputs ``(B, gates)``."""
        g = self.gate(self.gater(x))
        return self.out(self.expert(x) * g), g

    def pre_activation(self, x: Tensor) -> Tensor:
        a = self.gater(x)
        return self.gate.shifted(a) if isinstance(self.gate, FiringRateControl) else a

    def gate_value(self, a: Tensor) -> Tensor:
        """The deterministic open-gate value: 1 for binary gates; √σ, σ, max(0, ·) for the smooth ones; the
        noise-averaged output for the noisy rectifier."""
        if self.kind in ("straight_through", "reinforce_optimal"):
            return torch.ones_like(a)
        if self.kind == "stochastic_times_smooth":
            return torch.sigmoid(a).sqrt()
        if self.kind.startswith("sigmoid"):
            return torch.sigmoid(a)
        if self.kind == "noisy_rectifier":  # E[max(0, a + z)], z ~ N(0, 1): aΦ(a) + φ(a)
            normal = torch.distributions.Normal(torch.zeros((), dtype=a.dtype), torch.ones((), dtype=a.dtype))
            return a * normal.cdf(a) + normal.log_prob(a).exp()
        return torch.relu(a)

    def mean_gate(self, a: Tensor) -> Tensor:
        """The gate's expected training output (no threshold): σ(a) for the Bernoulli gates (STS: √σ·√σ),
        E[max(0, a + z)] for the noisy rectifier, σ(a / √(1 + π/8)) ≈ E[σ(a + z)] for the noisy sigmoid."""
        if self.kind in ("straight_through", "reinforce_optimal", "stochastic_times_smooth", "sigmoid"):
            return torch.sigmoid(a)
        if self.kind == "sigmoid_noise":
            return torch.sigmoid(a / (1 + torch.pi / 8) ** 0.5)
        return self.gate_value(a)

    @torch.no_grad()
    def mean_field_error(self, x: Tensor, y: Tensor) -> float:
        """Error % with every gate at its expected training output: what thresholding costs, for comparison."""
        wrong = sum((self.out(self.expert(xc) * self.mean_gate(self.pre_activation(xc))).argmax(-1) != yc).sum().item()
                    for xc, yc in zip(x.split(1000), y.split(1000)))
        return 100.0 * wrong / len(y)

    @torch.no_grad()
    def test_error(self, x: Tensor, y: Tensor, open_fraction: float) -> tuple[float, float]:
        """Error % with deterministic gates thresholded to leave ``open_fraction`` open; and the threshold."""
        a = torch.cat([self.pre_activation(c) for c in x.split(1000)])
        k = max(1, int(round((1 - open_fraction) * a.numel())))
        threshold = a.reshape(-1).kthvalue(k).values
        wrong = 0
        for xc, yc, ac in zip(x.split(1000), y.split(1000), a.split(1000)):
            gate = self.gate_value(ac) * (ac > threshold).to(ac.dtype)
            wrong += (self.out(self.expert(xc) * gate).argmax(-1) != yc).sum().item()
        return 100.0 * wrong / len(y), threshold.item()


def max_norm_(model: nn.Module, bound: float = 2.0) -> None:
    """Caps each unit's incoming-weight norm at ``bound`` (the paper's constraint)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.renorm(m.weight, 2, 0, bound))


@dataclass
class GatingConfig:
    dataset: str = "mnist"
    gater: str = "noisy_rectifier"
    steps: int = 5000
    batch_size: int = 32
    lr: float = 0.1
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/gating"
    target: float = 0.1
    kl_weight: float = 1.0
    log_every: int = 100
    progress: bool = True


def train_gating(cfg: GatingConfig) -> dict:
    from tqdm import tqdm

    if cfg.gater not in GATERS:
        fail(f"unknown gater {cfg.gater!r}; valid: {', '.join(GATERS)}")
    train, test = datasets_or_fail(cfg.dataset)
    device = torch.device(cfg.device)
    os.makedirs(cfg.out, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = GatingNet(train.dim, cfg.gater, target=cfg.target, generator=gen).to(device)
    score_function = cfg.gater == "reinforce_optimal"
    gater_lr = cfg.lr / 100 if score_function else cfg.lr
    opt = torch.optim.SGD([{"params": model.gater.parameters(), "lr": gater_lr},
                           {"params": [*model.expert.parameters(), *model.out.parameters()]}], lr=cfg.lr)
    xs, ys = train.images.to(device), train.labels.to(device)
    metrics = Metrics(os.path.join(cfg.out, "metrics.csv"), ["step", "train_loss", "train_error", "gate_open", "seconds"])
    bar = tqdm(range(cfg.steps), desc=f"gating {cfg.gater}", disable=not cfg.progress)
    seconds, window = 0.0, []
    for step in bar:
        t0 = time.perf_counter()
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen, device=device)
        x, y = xs[idx], ys[idx]
        opt.zero_grad()
        with broadcast() as graph:
            logits, g = model(x)
            ce = F.cross_entropy(logits, y, reduction="none")
        if cfg.gater.startswith("sigmoid"):
            rho = g.mean(0).clamp(1e-6, 1 - 1e-6)
            t = cfg.target
            kl = (t * torch.log(t / rho) + (1 - t) * torch.log((1 - t) / (1 - rho))).sum()
            (ce.mean() + cfg.kl_weight * kl).backward()
        elif score_function:
            graph.backward(ce)
        else:
            ce.mean().backward()
        if not torch.isfinite(ce).all():
            fail(f"the loss became NaN at step {step + 1}; training stopped")
        opt.step()
        max_norm_(model)
        seconds += time.perf_counter() - t0
        window.append((ce.mean().item(), (logits.argmax(-1) != y).float().mean().item(), (g != 0).float().mean().item()
                       if not cfg.gater.startswith("sigmoid") else g.mean().item()))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            m = [sum(v) / len(window) for v in zip(*window)]
            metrics.write(step=step + 1, train_loss=m[0], train_error=100 * m[1], gate_open=m[2], seconds=seconds)
            bar.set_postfix(loss=f"{m[0]:.3f}", open=f"{m[2]:.3f}")
            window = []
    model.eval()
    error, threshold = model.test_error(test.images.to(device), test.labels.to(device), cfg.target)
    summary = {"gater": cfg.gater, "dataset": cfg.dataset, "steps": cfg.steps, "test_error_percent": error,
               "open_fraction": cfg.target, "threshold": threshold,
               "mean_field_test_error_percent": model.mean_field_error(test.images.to(device), test.labels.to(device)),
               "train_seconds": seconds}
    write_json(os.path.join(cfg.out, "summary.json"), summary)
    save_checkpoint({"step": cfg.steps, "model": model.state_dict(), "config": cfg.__dict__},
                os.path.join(cfg.out, "model.pt"))
    plot_curves(os.path.join(cfg.out, "curves.png"), metrics.read(), "step", ["train_loss", "train_error", "gate_open"],
                f"gating {cfg.gater} on {cfg.dataset}")
    return summary
