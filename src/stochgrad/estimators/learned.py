"""``learned`` (seed §3.2.2): a per-unit predictor, trained online, maps the biased low-variance
straight-through gradient to the unbiased high-variance one, and its prediction is the gradient used.

For unit ``i`` the regression target is the centred unbiased estimate ``y_i = (h_i − σ_i)(L − c_i)``
(``c_i``: the per-unit optimal baseline of Eq. 7, past losses only). The inputs are
``x_i = [Ĝ_i σ'(a_i), Ĝ_i, h_i − σ_i, 1]`` with ``Ĝ_i = ∂L/∂h_i`` (straight-through's gradient). The
weights ``w_i`` solve ridge-regularised least squares on running moments ``E[x xᵀ]``, ``E[x y]`` per unit
(decay ``0.99``), read before they are updated with the current sample; the gradient used is ``w_i·x_i``.

Because ``x`` holds a constant, the least-squares fit has residuals of mean zero: at the fitted
optimum ``E[w·x] = E[y]``, the exact gradient averaged over the examples the moments pool. Its bias is
what remains (moments that lag, per-example differences the pooled fit cannot see) and is measured
in the tests against straight-through's and ``reinforce_optimal``'s. Before the first update the raw
``y`` is used. Costs one evaluation of ``f`` and one backward pass to ``h`` per sample.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..baselines import OptimalBaseline, ResizableBuffers
from ..distributed import mean_over_ranks
from ..distributions import BERNOULLI
from ..gradient import attach_gradient
from ..guard import LOSSES, finite, fold_, total
from ..options import DECAY, POSITIVE_FLOAT
from ..sampling import lead, over_samples
from .base import Estimator

FEATURES = 4


def features(dl_dh: Tensor, score: Tensor, probs: Tensor) -> Tensor:
    """``x = [Ĝ σ', Ĝ, h − σ, 1]``: ``(..., n)`` inputs to ``(..., n, 4)``."""
    probs = probs.expand_as(score)
    return torch.stack([dl_dh * probs * (1 - probs), dl_dh, score, torch.ones_like(score)], -1)


class Learned(Estimator, ResizableBuffers):
    """``learned`` (seed §3.2.2): the straight-through gradient mapped to the unbiased one by per-unit
    least squares on running moments (see the module docstring). Biased; one evaluation and one
    backward pass to ``h`` per sample.
    """

    name = "learned"
    description = ("§3.2.2: per-unit least squares on running moments maps the straight-through gradient "
                   "(with σ', h - σ, 1) to the unbiased (h - σ)(L - c)")
    unbiased = False
    broadcast = True
    needs_dl_dh = True
    cost = "S + backward"

    def __init__(self, decay: float = 0.99, ridge: float = 1e-4, baseline_decay: float = 0.9):
        super().__init__()
        self.decay = float(DECAY.check(decay, "decay"))
        self.ridge = float(POSITIVE_FLOAT.check(ridge, "ridge"))
        self.baseline = OptimalBaseline(baseline_decay)
        self.register_buffer("xx", torch.zeros(0, FEATURES, FEATURES))  # running E[x xᵀ] per unit
        self.register_buffer("xy", torch.zeros(0, FEATURES))            # running E[x y] per unit

    def weights(self) -> Tensor:
        """``(n, 4)``: the ridge least-squares solution per unit from the current moments."""
        eye = torch.eye(FEATURES, dtype=self.xx.dtype, device=self.xx.device)
        scale = self.xx.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1).clamp_min(1e-12)
        # solve_ex: no error check read back from the device (a ridge term keeps the systems regular)
        return torch.linalg.solve_ex(self.xx + self.ridge * scale * eye, self.xy.unsqueeze(-1)).result.squeeze(-1)

    def score_gradient(self, h, probs, losses, update: bool = True, dl_dh=None):
        """``h``, ``dl_dh``: ``(*lead, *batch, n)``; ``probs``: ``(*batch, n)``; ``losses``: ``(*lead, *batch)``.

        Reads the moments first, then (if ``update``) folds the current call in, guarded as one: NaN/inf
        anywhere (losses, ``dl_dh``) leaves the moments and the baseline as they were.
        """
        if dl_dh is None:
            raise ValueError("the learned estimator needs dL/dh, the straight-through gradient at its output")
        losses, score = losses.detach(), h - probs
        n = h.shape[-1]
        self._sized(n, losses, "xx", "xy")
        y = score * (losses.unsqueeze(-1) - self.baseline.forward(score, losses))
        x = features(dl_dh.detach(), score, probs)
        trained = self.xx[:, -1, -1] > 0   # (n,): moments exist (E[1·1] > 0); chosen on the device, no sync
        grad = torch.where(trained, (x * self.weights()).sum(-1), y)
        if h.dim() > probs.dim():
            grad = grad.mean(0)
        if update:
            flat_x, flat_y = x.reshape(-1, n, FEATURES), y.reshape(-1, n)
            count = flat_x.shape[0]
            base = self.baseline.statistics(score, losses)
            if base is not None:
                xx = mean_over_ranks(torch.einsum("bni,bnj->nij", flat_x, flat_x) / count, count)
                xy = mean_over_ranks(torch.einsum("bni,bn->ni", flat_x, flat_y) / count, count)
                value = total(xx) + total(xy) + total(base[0])   # (base[1]: a mean of (h − σ)², finite)
                ok = finite(value)
                self.baseline.fold(base, ok)
                d = self.decay
                fold_(ok, (self.xx, self.xx * d + (1 - d) * xx), (self.xy, self.xy * d + (1 - d) * xy))
                self.verdict.report(value, LOSSES)
        return grad

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        h = dist.sample(probs, lead(samples), generator)
        with torch.enable_grad():
            b = h.clone().requires_grad_(True)
            losses = f(b)
            (dl_dh,) = torch.autograd.grad(losses.sum(), b, retain_graph=losses.requires_grad)
        grad = self.score_gradient(h, probs, losses, update=logits.requires_grad, dl_dh=dl_dh)
        return attach_gradient(over_samples(losses, samples), logits, grad, dist.masks)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, ridge={self.ridge}, units={self.xy.shape[0]}"
