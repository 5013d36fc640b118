"""The categorical-latent VAE: ``n`` latent variables of ``K`` classes, the setting of the
Gumbel-softmax (Jang et al. 2017, §4.2: 20 × 10 on binarised MNIST) and ReinMax (Liu et al. 2023,
§6.2: 30 × 10 on dynamically binarised MNIST) papers.

It is :class:`~stochgrad.studies.vae.BernoulliVAE` with the latent layer swapped: the encoder emits
``n·K`` logits, read as ``(n, K)``; the decoder reads the one-hot sample flattened to ``n·K``; the
prior is a learned categorical per variable (uniform at the start). ``stochgrad train vae
--categories K --latents n`` trains it with any estimator that supports categorical units.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..distributions import CATEGORICAL
from ..estimators import resolve
from .vae import BernoulliVAE


def categorical_log_prob(h: Tensor, logits: Tensor) -> Tensor:
    """``log Cat(h; softmax(logits))`` for one-hot ``h`` ``(..., n, K)``, summed over the ``n`` variables."""
    return (h * torch.log_softmax(logits, -1)).sum((-2, -1))


def categorical_kl(q_logits: Tensor, p_logits: Tensor) -> Tensor:
    """``KL(Cat(softmax(q)) ‖ Cat(softmax(p)))`` summed over the variables: ``(..., n, K)`` → ``(...)``."""
    log_q, log_p = torch.log_softmax(q_logits, -1), torch.log_softmax(p_logits, -1)
    return (log_q.exp() * (log_q - log_p)).sum((-2, -1))


class CategoricalVAE(BernoulliVAE):
    """Encoder ``x → (n, K)`` logits of ``q(h | x)``, decoder ``onehot h (n·K) → p(x | h)``, learned prior.

    ``loss(x, estimator, samples, generator, signal)`` as the Bernoulli model's: ``signal="elbo"``
    hands the estimator the whole one-sample ELBO term (q detached inside ``f``), ``"analytic_kl"``
    only ``−log p(x | h)`` with the KL added exactly.
    """

    def __init__(self, x_dim: int, latents: int = 20, categories: int = 10, **options):
        if categories < 2 or latents < 1:
            raise ValueError(f"a categorical VAE needs latents >= 1 and categories >= 2, got {latents} and {categories}")
        super().__init__(x_dim, latents * categories, **options)
        self.latents, self.categories = latents, categories

    @property
    def prior(self) -> Tensor:
        """The prior's logits ``(n, K)``."""
        return self.prior_logits.view(self.latents, self.categories)

    def encode(self, x: Tensor) -> Tensor:
        """Logits of ``q(h | x)``: ``x`` ``(B, D)`` → ``(B, n, K)``."""
        demean = getattr(self, "demean", True)
        return self.encoder(x - self.pixel_mean if demean else x).unflatten(-1, (self.latents, self.categories))

    def neg_log_lik(self, h: Tensor, x: Tensor) -> Tensor:
        """``−log p(x | h)``: ``h`` ``(*lead, B, n, K)`` one-hot, ``x`` ``(B, D)`` → ``(*lead, B)``."""
        return super().neg_log_lik(h.flatten(-2), x)

    def learning_signal(self, h: Tensor, x: Tensor, q_logits: Tensor) -> Tensor:
        """``−log p(x | h) − log p(h) + log q(h | x)`` per sample, ``(*lead, B)``."""
        return self.neg_log_lik(h, x) - categorical_log_prob(h, self.prior) + categorical_log_prob(h, q_logits)

    def loss(self, x: Tensor, estimator, samples: int = 1, generator=None, signal: str = "elbo") -> Tensor:
        """Per-example ``−ELBO`` estimate ``(B,)``; its backward carries the estimator's gradient to the encoder."""
        q_logits = self.encode(x)
        if signal == "elbo":
            q_fixed = q_logits.detach()
            return resolve(estimator).forward(lambda h: self.learning_signal(h, x, q_fixed), q_logits, samples, generator,
                          distribution="categorical")
        if signal == "analytic_kl":
            recon = resolve(estimator).forward(lambda h: self.neg_log_lik(h, x), q_logits, samples, generator,
                           distribution="categorical")
            return recon + categorical_kl(q_logits, self.prior)
        raise ValueError(f"signal must be 'elbo' or 'analytic_kl', got {signal!r}")

    forward = loss

    @torch.no_grad()
    def iw_bound(self, x: Tensor, k: int = 100, generator=None) -> Tensor:
        """The ``k``-sample importance-weighted lower bound on ``log p(x)``, per example ``(B,)``."""
        q_logits = self.encode(x)
        h = CATEGORICAL.sample(CATEGORICAL.probs(q_logits), (k,), generator)
        return torch.logsumexp(-self.learning_signal(h, x, q_logits), 0) - math.log(k)

    def extra_repr(self) -> str:
        return f"latents={self.latents}, categories={self.categories}"


__all__ = ["CategoricalVAE", "categorical_kl", "categorical_log_prob", "nn"]
