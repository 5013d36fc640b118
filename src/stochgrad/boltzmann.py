"""Restricted Boltzmann machines as reward correlation (seed §4.2).

A Bernoulli–Bernoulli RBM: ``E(v, h) = −b·v − c·h − vᵀWh``, ``p(v, h) ∝ exp(−E)``. The log-likelihood
gradient is ``⟨X⟩_data − ⟨X⟩_model`` for the sufficient statistics ``X = (v h, v, h)``. CD-k and PCD
estimate it from samples; seed §4.2 reads the estimate as an unnormalised reward correlation: stack
the data-clamped samples (reward ``R = +1``) and the free-running ones (``R = −1``) and average
``X·R``: [`reward_correlation`][stochgrad.boltzmann.reward_correlation] is that estimator, [`positive_minus_negative`][stochgrad.boltzmann.positive_minus_negative] the usual
``X⁺ − X⁻`` form; the tests show they agree sample for sample.

Exact ``log Z`` by enumeration of the smaller layer (≤ 20 units), and an annealed-importance-sampling
estimate (Neal 2001; Salakhutdinov & Murray 2008) for large models.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .exact import all_states
from .sampling import bernoulli


class RBM(nn.Module):
    """``W`` ``(n_visible, n_hidden)``, visible biases ``b``, hidden biases ``c``."""

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.01, visible_bias: Tensor | None = None):
        super().__init__()
        self.W = nn.Parameter(init_std * torch.randn(n_visible, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_visible) if visible_bias is None else visible_bias.clone())
        self.c = nn.Parameter(torch.zeros(n_hidden))

    def hidden_probs(self, v: Tensor) -> Tensor:
        return torch.sigmoid(v @ self.W + self.c)

    def visible_probs(self, h: Tensor) -> Tensor:
        return torch.sigmoid(h @ self.W.T + self.b)

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v) = −b·v − Σ_j softplus(c_j + v·W_j)``, so ``p(v) = exp(−F(v)) / Z``."""
        return -(v @ self.b) - F.softplus(v @ self.W + self.c).sum(-1)

    @torch.no_grad()
    def gibbs(self, v: Tensor, steps: int, generator=None) -> tuple[Tensor, Tensor]:
        """``steps`` rounds of ``h ~ p(h | v)``, ``v ~ p(v | h)``; returns the last ``(v, h ~ p(h | v))``."""
        for _ in range(steps):
            h = bernoulli(self.hidden_probs(v), (), generator)
            v = bernoulli(self.visible_probs(h), (), generator)
        return v, bernoulli(self.hidden_probs(v), (), generator)

    # ---- exact quantities (small models) --------------------------------------------------------------
    def log_partition(self) -> Tensor:
        """Exact ``log Z``, enumerating the smaller layer (≤ 20 units) and summing the other analytically."""
        nv, nh = self.W.shape
        if min(nv, nh) > 20:
            raise ValueError(f"exact log Z needs a layer of <= 20 units; got {nv} visible, {nh} hidden")
        if nv <= nh:
            return torch.logsumexp(-self.free_energy(all_states(nv, self.W)), 0)
        h = all_states(nh, self.W)
        return torch.logsumexp(h @ self.c + F.softplus(h @ self.W.T + self.b).sum(-1), 0)

    def log_likelihood(self, v: Tensor) -> Tensor:
        """Exact mean ``log p(v)`` over the rows of ``v``."""
        return (-self.free_energy(v)).mean() - self.log_partition()


def statistics(v: Tensor, h: Tensor) -> dict[str, Tensor]:
    """The sufficient statistics ``X`` per sample: ``vhᵀ`` ``(N, nv, nh)``, ``v``, ``h``."""
    return {"W": v.unsqueeze(-1) * h.unsqueeze(-2), "b": v, "c": h}


def reward_correlation(v_pos: Tensor, h_pos: Tensor, v_neg: Tensor, h_neg: Tensor) -> dict[str, Tensor]:
    """Seed §4.2: ``mean_k X_k·R_k`` over data-clamped (``R = +1``) and free-running (``R = −1``) samples,
    scaled per phase (``N⁺ = N⁻`` samples each): the ascent direction of the log-likelihood."""
    v = torch.cat([v_pos, v_neg])
    h = torch.cat([h_pos, h_neg])
    R = torch.cat([torch.ones(len(v_pos), dtype=v.dtype, device=v.device),
                   -torch.ones(len(v_neg), dtype=v.dtype, device=v.device)])
    if len(v_pos) != len(v_neg):
        raise ValueError(f"the reward correlation pairs each data sample with a model sample: got {len(v_pos)} and {len(v_neg)}")
    return {k: torch.einsum("n,n...->...", R, x) / len(v_pos) for k, x in statistics(v, h).items()}


def positive_minus_negative(v_pos: Tensor, h_pos: Tensor, v_neg: Tensor, h_neg: Tensor) -> dict[str, Tensor]:
    """The usual form: ``⟨X_i⁺ X_j⁺⟩ − ⟨X_i⁻ X_j⁻⟩`` (weights) and ``⟨X⁺⟩ − ⟨X⁻⟩`` (biases)."""
    pos, neg = statistics(v_pos, h_pos), statistics(v_neg, h_neg)
    return {k: pos[k].mean(0) - neg[k].mean(0) for k in pos}


def exact_gradient(rbm: RBM, v: Tensor) -> dict[str, Tensor]:
    """``∇ mean log p(v)`` by enumeration (autograd through the exact log-likelihood)."""
    grads = torch.autograd.grad(rbm.log_likelihood(v), [rbm.W, rbm.b, rbm.c])
    return dict(zip("W b c".split(), grads))


class ContrastiveDivergence:
    """CD-k (chains restart at the data) or PCD (``persistent=True``: chains carry over between updates).

    [`gradient`][stochgrad.boltzmann.ContrastiveDivergence.gradient] returns the reward-correlation estimate of the log-likelihood gradient for a batch.
    """

    def __init__(self, rbm: RBM, k: int = 1, persistent: bool = False, chains: int | None = None, generator=None):
        self.rbm, self.k, self.persistent, self.generator = rbm, k, persistent, generator
        self.chains = chains
        self.state: Tensor | None = None

    def negative(self, v_data: Tensor) -> tuple[Tensor, Tensor]:
        n = len(v_data)
        if not self.persistent:
            return self.rbm.gibbs(v_data, self.k, self.generator)
        if self.state is None or len(self.state) != n:
            self.state = bernoulli(torch.full_like(v_data, 0.5), (), self.generator)
        v, h = self.rbm.gibbs(self.state, self.k, self.generator)
        self.state = v
        return v, h

    @torch.no_grad()
    def gradient(self, v_data: Tensor) -> dict[str, Tensor]:
        h_data = bernoulli(self.rbm.hidden_probs(v_data), (), self.generator)
        v_model, h_model = self.negative(v_data)
        return reward_correlation(v_data, h_data, v_model, h_model)

    @torch.no_grad()
    def step(self, v_data: Tensor, lr: float) -> dict[str, Tensor]:
        g = self.gradient(v_data)
        for name, p in (("W", self.rbm.W), ("b", self.rbm.b), ("c", self.rbm.c)):
            p.add_(lr * g[name])
        return g


@torch.no_grad()
def ais_log_partition(rbm: RBM, betas: int = 1000, runs: int = 100, generator=None,
                      base_visible_bias: Tensor | None = None, progress=None) -> tuple[float, float]:
    """Annealed importance sampling estimate of ``log Z`` and its standard error (log scale, delta method).

    Intermediate models ``p_β ∝ exp(−(1−β)F_A(v) − βF_B(v))`` from the base rate model ``A`` (``W = 0``,
    visible biases ``base_visible_bias``, default the target's) to the target ``B``; Gibbs transitions
    at each ``β``. ``progress``: called with no argument after each temperature (a progress bar's update).
    """
    for name, value in (("betas", betas), ("runs", runs)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= 2, got {value!r}")
        if value < 2:  # one temperature is the base model alone; one run has no standard error
            raise ValueError(f"{name} must be >= 2 (the base and the target {'temperatures' if name == 'betas' else 'for a standard error'}), got {value}")
    nv, nh = rbm.W.shape
    bA = rbm.b.detach() if base_visible_bias is None else base_visible_bias
    log_zA = F.softplus(bA).sum() + nh * math.log(2.0)
    schedule = torch.linspace(0.0, 1.0, betas, dtype=rbm.W.dtype, device=rbm.W.device)

    def log_f(v, beta):  # unnormalised log p_β(v), hidden units summed out
        return (1 - beta) * (v @ bA) + beta * (v @ rbm.b) + F.softplus(beta * (v @ rbm.W + rbm.c)).sum(-1)

    v = bernoulli(torch.sigmoid(bA).expand(runs, nv), (), generator)
    log_w = torch.zeros(runs, dtype=rbm.W.dtype, device=rbm.W.device)
    for prev, beta in zip(schedule[:-1], schedule[1:]):
        log_w += log_f(v, beta) - log_f(v, prev)
        h = bernoulli(torch.sigmoid(beta * (v @ rbm.W + rbm.c)), (), generator)
        v = bernoulli(torch.sigmoid((1 - beta) * bA + beta * (h @ rbm.W.T + rbm.b)), (), generator)
        if progress is not None:
            progress()
    log_mean = torch.logsumexp(log_w, 0) - math.log(runs)
    w = torch.exp(log_w - log_w.max())
    rel_se = (w.std() / w.mean() / math.sqrt(runs)).item()
    return (log_zA + log_mean).item(), rel_se
