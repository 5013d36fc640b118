"""The estimator interface shared by the functional view (``expect``) and the network view (layers)."""
from __future__ import annotations

import abc
import copy

import torch
from torch import Tensor, nn

from ..distributed import mean_over_ranks
from ..distributions import BERNOULLI
from ..expect import CheckedLoss, LossFn, attach_gradient, expect, lead, over_samples
from ..guard import LOSSES, Verdict, finite


def check_positive(value, name: str) -> float:
    """An estimator option that must be a finite number > 0 (a temperature, a step): NaN and inf are errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class Estimator(nn.Module, abc.ABC):
    """A gradient estimator for ``E_{b ~ Bernoulli(σ(a))}[f(b)]`` with respect to the logits ``a``.

    Class attributes declare what the checks demand of it:

    - ``name``: the registered name; ``description``: one line, citing the equation it implements.
    - ``unbiased``: whether ``E[estimate] = ∇_a E[f]`` exactly (tested against enumeration).
    - ``pathwise``: gradient flows by autograd through a (relaxed or straight-through) sample, so in a
      network it needs no broadcast loss.
    - ``min_samples``: the fewest samples per estimate it accepts.
    - ``broadcast``: as a layer, it takes the per-example loss from :func:`stochgrad.broadcast` through
      :meth:`score_gradient`; ``needs_dl_dh``: it also needs ``∂L/∂h`` (a backward pass to its output).
    - ``distributions``: the units it supports (:mod:`stochgrad.distributions`); for any but Bernoulli,
      :meth:`estimate` is called with the keyword ``dist``.

    Subclasses implement :meth:`estimate`; call them through :func:`stochgrad.expect` or as
    ``estimator(f, logits, samples, generator)``, which validates the input first.
    """

    name: str = ""
    description: str = ""
    unbiased: bool = False
    pathwise: bool = False
    min_samples: int = 1
    broadcast: bool = False
    needs_dl_dh: bool = False
    distributions: tuple[str, ...] = ("bernoulli",)
    cost: str = "S"  # evaluations of f per example and estimate, in words (S = samples, n = units)
    skip_nonfinite: bool = False  # True: a call whose losses are NaN/inf is skipped (state unchanged), not raised

    @property
    def verdict(self) -> Verdict:
        """Where this site's value checks surface (:mod:`stochgrad.guard`); a plain attribute, not state."""
        v = self.__dict__.get("_verdict")
        if v is None:
            v = self.__dict__["_verdict"] = Verdict()
        v.skip = self.skip_nonfinite
        return v

    @property
    def stateful(self) -> bool:
        """Whether it carries state from call to call (buffers or parameters): then keep one object per site."""
        return next(self.buffers(), None) is not None or next(self.parameters(), None) is not None

    def forward(self, f: LossFn, logits: Tensor, samples: int = 1, generator: torch.Generator | None = None,
                distribution: str | None = None) -> Tensor:
        return expect(f, logits, self, samples, generator, distribution)

    @abc.abstractmethod
    def estimate(self, f: CheckedLoss, logits: Tensor, samples: int,
                 generator: torch.Generator | None) -> Tensor:
        """Validated input in, ``(*batch,)`` estimate of ``E[f]`` out, carrying the gradient to ``logits``."""

    def evaluations(self, n: int, samples: int = 1) -> int:
        """Points at which ``f`` is evaluated per example and estimate, for ``n`` units."""
        return samples


class ScoreFunction(Estimator):
    """The score-function family: ``ĝ_i = mean_s (h_si − σ(a_i))·(L_s − c_si)`` (seed Theorem 1, Corollary 1).

    The baseline ``c`` is a :class:`stochgrad.baselines.Baseline`; the formula lives in
    :meth:`score_gradient`, which the network view calls with the broadcast loss. Categorical units:
    the score is ``onehot − softmax(a)`` (Williams 1992), the same ``h − probs``; the baselines see it
    flattened to ``(S, *batch, n·K)``, so the optimal baseline of Eq. 7 is kept per unit and class.
    """

    unbiased = True
    broadcast = True
    distributions = ("bernoulli", "categorical")

    def __init__(self, baseline):
        super().__init__()
        self.baseline = baseline

    def score_gradient(self, h: Tensor, probs: Tensor, losses: Tensor, update: bool = True, dl_dh=None) -> Tensor:
        """``h``: ``(*lead, *batch, n)``, ``probs``: ``(*batch, n)``, ``losses``: ``(*lead, *batch)`` → ``(*batch, n)``,
        ``lead`` empty (one sample) or ``(S,)`` (averaged over).

        Reads the baseline first, then (if ``update``) folds in the current losses: Corollary 1. A call
        whose losses are NaN/inf leaves the baseline as it was (:mod:`stochgrad.guard`).
        """
        losses, score = losses.detach() if losses.requires_grad else losses, h - probs
        c = self.baseline.forward(score, losses)
        centred = losses.unsqueeze(-1) if c is None else losses.unsqueeze(-1) - c
        grad = score * centred
        if h.dim() > probs.dim():
            grad = grad.mean(0)
        if update:
            ok = self.baseline.update(score, losses)
            if ok is not None:
                self.verdict.report(ok, LOSSES)
        return grad

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        h = dist.sample(probs, lead(samples), generator)
        losses = f(h)
        if dist is BERNOULLI:
            grad = self.score_gradient(h, probs, losses, update=logits.requires_grad)
        else:
            grad = self.score_gradient(dist.flat(h), dist.flat(probs), losses, update=logits.requires_grad).view_as(logits)
        return attach_gradient(over_samples(losses, samples), logits, grad)


class Tuned(Estimator):
    """An estimator whose control variate has parameters (``nn.Parameter`` s of the estimator) tuned online.

    The estimate is unbiased whatever the parameters, so the gradient of ``E‖ĝ‖²`` with respect to them
    is that of the variance: each training call (``tune`` and ``self.training``) takes one Adam step
    (``lr``) on ``mean ‖ĝ‖²`` over the examples, *after* the estimate was made (so each estimate uses
    parameters fixed by past calls). The step's gradient is averaged over ranks under
    ``torch.distributed`` (every rank holds the same parameters), and Adam's state travels with
    ``state_dict``. The tuner leaves no ``.grad`` on them, so when the estimator sits inside a user's model
    the user's optimiser (which skips parameters without a gradient) never steps them a second time. Subclasses set ``self.tune``, ``self.lr`` and call :meth:`_tune_step`.
    """

    unbiased = True
    _optimizer = None

    def _tuned_parameters(self):
        return [q for q in self.parameters() if q.requires_grad]

    def _follow_dtype(self, like: Tensor) -> None:
        """Before the first tuning step, moves the parameters to the logits' dtype (float64 problems tune in float64)."""
        if self._optimizer is None and any(q.dtype != like.dtype for q in self.parameters()):
            self.to(dtype=like.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # parameters adopt the checkpoint's dtype (a float64 run resumes in float64), before any child loads
        for name, q in self.named_parameters():
            incoming = state_dict.get(prefix + name)
            if incoming is not None and incoming.dtype != q.dtype:
                q.data = q.data.to(incoming.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _tune_step(self, grad: Tensor, event_dims: int = 1) -> None:
        """One Adam step on ``mean ‖ĝ‖²``; ``grad``: ``(*batch, *event)``, differentiable in the parameters."""
        params = self._tuned_parameters()
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(params, lr=self.lr)
        per_example = grad.square().flatten(grad.dim() - event_dims).sum(-1)
        objective, count = per_example.mean(), per_example.numel()
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        ok = finite(objective.detach())   # a non-finite call steps nothing (zero gradient), without a sync
        for q, g in zip(params, grads):
            q.grad = None if g is None else torch.where(ok, mean_over_ranks(g.detach().to(q.dtype), count), 0.0)
        self._optimizer.step()
        for q in params:  # issue 14.15: a user's optimiser over model.parameters() skips what it sees no .grad on
            q.grad = None

    def get_extra_state(self):
        """The tuner's Adam state travels with ``state_dict`` (a copy: Adam's own shares its tensors)."""
        return {"optimizer": None if self._optimizer is None else copy.deepcopy(self._optimizer.state_dict())}

    def set_extra_state(self, state):
        self._optimizer = None
        if state and state.get("optimizer") is not None:
            self._optimizer = torch.optim.Adam(self._tuned_parameters(), lr=self.lr)
            self._optimizer.load_state_dict(state["optimizer"])
