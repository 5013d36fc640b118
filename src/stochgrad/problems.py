"""Small problems with exact gradients, shared by the checks, the study and the tests.

Each [`Problem`][stochgrad.problems.Problem] holds ``logits`` ``(n,)`` and a loss ``f`` mapping ``(*lead, n)`` samples to
``(*lead,)`` losses, polynomial or smooth in ``b`` so that pathwise estimators can differentiate it.
Categorical problems (``distribution == "categorical"``) hold ``logits`` ``(n, K)`` and ``f`` maps one-hot
samples ``(*lead, n, K)`` to ``(*lead,)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .exact import all_states


@dataclass
class Problem:
    name: str
    description: str
    f: Callable[[Tensor], Tensor]
    logits: Tensor
    distribution: str = "bernoulli"

    @property
    def n(self) -> int:
        """The number of units."""
        return self.logits.shape[-1] if self.distribution == "bernoulli" else self.logits.shape[-2]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def separable(n: int = 6, logits: Tensor | float | None = None, target: float = 0.45,
              dtype=torch.float64, device="cpu") -> Problem:
    """``L = Σ_i (b_i − target)²``: the toy of the seed's §5 question (docs: "The paper, with corrections"). Default logits vary."""
    if logits is None:
        logits = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    elif not isinstance(logits, Tensor):
        logits = torch.full((n,), float(logits), dtype=torch.float64)
    return Problem("separable", f"sum_i (b_i - {target})^2, n={n}",
                   lambda b: (b - target).square().sum(-1), logits.to(dtype=dtype, device=device))


def nonseparable(n: int = 5, seed: int = 1, dtype=torch.float64, device="cpu") -> Problem:
    """``L = (w·b − 0.6·Σw)² + 0.5·b_0·b_1·b_2``: units interact through a square and a product."""
    g = _gen(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    logits = torch.randn(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    t = 0.6 * w.sum()

    def f(b):
        return (b @ w - t).square() + 0.5 * b[..., 0] * b[..., 1] * b[..., 2 % n]

    return Problem("nonseparable", f"(w.b - t)^2 + 0.5 b0 b1 b2, n={n}", f, logits)


def decoder(n: int = 6, d: int = 12, seed: int = 2, dtype=torch.float64, device="cpu") -> Problem:
    """Logistic decoder: ``L = −log p(x | b)``, ``p(x_j = 1 | b) = σ(W_j·b + c_j)``, fixed ``x ∈ {0,1}^d``."""
    g = _gen(seed)
    W = (2 * torch.randn(d, n, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)
    c = torch.randn(d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    x = (torch.rand(d, generator=g, dtype=torch.float64) < 0.5).to(dtype=dtype, device=device)
    logits = torch.randn(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)

    def f(b):
        z = b @ W.T + c
        return F.binary_cross_entropy_with_logits(z, x.expand_as(z), reduction="none").sum(-1)

    return Problem("decoder", f"-log p(x|b), logistic decoder {n}->{d}", f, logits)


def two_layer(n: int = 4, m: int = 4, seed: int = 3, dtype=torch.float64, device="cpu") -> Problem:
    """Two stochastic layers: ``b ~ Bern(σ(a))``, ``h ~ Bern(σ(V b + c))``, ``L = (u·h − t)²``.

    ``f(b)`` is the loss averaged exactly over the second layer's ``2^m`` states, so the gradient with
    respect to the first layer's logits is exact by enumeration of both layers.
    """
    g = _gen(seed)
    V = (1.5 * torch.randn(n, m, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)
    c = torch.randn(m, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    u = torch.randn(m, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    logits = torch.randn(n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    states = all_states(m, u)  # (2^m, m)
    second = (states @ u - 0.3 * u.sum()).square()  # loss of each second-layer state, (2^m,)

    def f(b):
        z = (b @ V + c).unsqueeze(-2)  # (*lead, 1, m)
        logp = (states * F.logsigmoid(z) + (1 - states) * F.logsigmoid(-z)).sum(-1)  # (*lead, 2^m)
        return (logp.exp() * second).sum(-1)

    return Problem("two_layer", f"two stochastic layers {n}->{m}, second marginalised exactly", f, logits)


def suite(dtype=torch.float64, device="cpu") -> list[Problem]:
    """The built-in problems of ``stochgrad check``: separable, non-separable, decoder, two-layer."""
    return [separable(dtype=dtype, device=device), nonseparable(dtype=dtype, device=device),
            decoder(dtype=dtype, device=device), two_layer(dtype=dtype, device=device)]


def categorical_separable(n: int = 3, K: int = 4, seed: int = 4, dtype=torch.float64, device="cpu") -> Problem:
    """``L = Σ_i (w_i·h_i − t)²`` over one-hot ``h_i``: each unit alone, a smooth quadratic in ``h``."""
    g = _gen(seed)
    w = torch.randn(n, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    logits = torch.randn(n, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return Problem("cat_separable", f"sum_i (w_i.h_i - 0.3)^2, n={n}, K={K}",
                   lambda h: ((h * w).sum(-1) - 0.3).square().sum(-1), logits, "categorical")


def categorical_nonseparable(n: int = 3, K: int = 4, seed: int = 5, dtype=torch.float64, device="cpu") -> Problem:
    """``L = (Σ_i w_i·h_i − t)² + h_{0,0}·h_{1,1}·h_{2,2}``: units interact through a square and a product."""
    g = _gen(seed)
    w = torch.randn(n, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    logits = torch.randn(n, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    t = 0.5 * w.sum() / K

    def f(h):
        return ((h * w).sum((-2, -1)) - t).square() + h[..., 0, 0] * h[..., 1 % n, 1 % K] * h[..., 2 % n, 2 % K]

    return Problem("cat_nonseparable", f"(sum_i w_i.h_i - t)^2 + h00 h11 h22, n={n}, K={K}", f, logits, "categorical")


def categorical_decoder(n: int = 3, K: int = 4, d: int = 3, C: int = 5, seed: int = 6, dtype=torch.float64,
                        device="cpu") -> Problem:
    """Softmax decoder: ``L = −Σ_j log softmax(W_j·h + c_j)[x_j]``, ``d`` outputs of ``C`` classes, fixed ``x``."""
    g = _gen(seed)
    W = (1.5 * torch.randn(d, C, n * K, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)
    c = torch.randn(d, C, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    x = torch.randint(C, (d,), generator=g).to(device)
    logits = torch.randn(n, K, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)

    def f(h):
        out = torch.einsum("dck,...k->...dc", W, h.flatten(-2)) + c          # (*lead, d, C)
        return -out.log_softmax(-1).gather(-1, x.expand(*out.shape[:-1]).unsqueeze(-1)).squeeze(-1).sum(-1)

    return Problem("cat_decoder", f"-log p(x|h), softmax decoder {n}x{K} -> {d}x{C}", f, logits, "categorical")


def categorical_suite(dtype=torch.float64, device="cpu") -> list[Problem]:
    """Categorical problems with exact gradients: separable, non-separable, softmax decoder."""
    return [categorical_separable(dtype=dtype, device=device), categorical_nonseparable(dtype=dtype, device=device),
            categorical_decoder(dtype=dtype, device=device)]
