"""The estimator interface shared by the functional view (``expect``) and the network view (layers)."""
from __future__ import annotations

import abc
import inspect

import torch
from torch import Tensor, nn
from torch.optim.adam import adam

from ..baselines import ResizableBuffers, per_sample
from ..distributed import is_distributed, mean_over_ranks
from ..distributions import BERNOULLI, Distribution, one_hot
from ..distributions import resolve as as_distribution
from ..gradient import NODE_MIN, attach_gradient
from ..options import FLAG, POSITIVE, POSITIVE_FLOAT
from ..guard import LOSSES, LOW_PRECISION, TUNING, CheckedLoss, LossFn, Verdict, check_logits, check_samples, finite, \
    fold_, report_finite, total
from ..sampling import Sharded, lead, over_samples, uniform

REGISTRY: dict[str, type["Estimator"]] = {}
"""Registered names to classes: filled by [`stochgrad.estimators`][stochgrad.estimators] (the registry), read here for error messages."""

BETAS, EPS = (0.9, 0.999), 1e-8  # Adam (Kingma & Ba 2015) for the tuned state: torch.optim.Adam's defaults


class Estimator(nn.Module, abc.ABC):
    """A gradient estimator for ``E_{h ~ p_a}[f(h)]`` with respect to the logits ``a`` of discrete units (Bernoulli
    ``p = σ(a)``, categorical ``p = softmax(a)``).

    Class attributes declare what the checks demand of it:

    - ``name``: the registered name; ``description``: one line, citing the equation it implements.
    - ``unbiased``: whether ``E[estimate] = ∇_a E[f]`` exactly (tested against enumeration).
    - ``pathwise``: gradient flows by autograd through a (relaxed or straight-through) sample, so in a
      network it needs no broadcast loss.
    - ``min_samples``: the fewest samples per estimate it accepts.
    - ``broadcast``: as a layer, it takes the per-example loss from [`stochgrad.broadcast`][stochgrad.graph.broadcast] through
      [`score_gradient`][stochgrad.estimators.base.ScoreFunction.score_gradient]; ``needs_dl_dh``: it also needs ``∂L/∂h`` (a backward pass to its output).
    - ``distributions``: the units it supports ([`stochgrad.distributions`][stochgrad.distributions]);
      [`estimate`][stochgrad.estimators.base.Estimator.estimate] receives the distribution of the call as ``dist``.

    Subclasses implement [`estimate`][stochgrad.estimators.base.Estimator.estimate]; call them through [`stochgrad.expect`][stochgrad.expect] or as
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
    records: tuple[str, ...] = ()  # buffers that record measurements (NaN: not measured), not running statistics

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        estimate = cls.__dict__.get("estimate")
        if estimate is not None and "dist" not in inspect.signature(estimate).parameters:
            raise TypeError(f"{cls.__name__}.estimate must take the units' distribution: "
                            "def estimate(self, f, logits, samples, generator, dist=BERNOULLI) "
                            "(stochgrad.distributions.BERNOULLI for an estimator of Bernoulli units only)")

    def __init__(self):
        super().__init__()
        self.verdict = Verdict()  # where this site's value checks surface (stochgrad.guard): not state

    @property
    def skip_nonfinite(self) -> bool:
        """``True``: a call whose losses (or tuning step) are NaN/inf is skipped, its state unchanged, instead of
        raising ([`stochgrad.guard`][stochgrad.guard]); non-finite logits always raise."""
        return self.verdict.skip

    @skip_nonfinite.setter
    def skip_nonfinite(self, value: bool) -> None:
        self.verdict.skip = FLAG.check(value, "skip_nonfinite")

    @property
    def stateful(self) -> bool:
        """Whether it carries state from call to call (buffers or parameters): then keep one object per site."""
        return next(self.buffers(), None) is not None or next(self.parameters(), None) is not None

    def forward(self, f: LossFn, logits: Tensor, samples: int = 1, generator: torch.Generator | None = None,
                distribution: str | None = None) -> Tensor:
        """The checked call behind [`stochgrad.expect`][stochgrad.expect] (see it for the arguments): structure is checked before
        anything runs, then [`estimate`][stochgrad.estimators.base.Estimator.estimate] gets the wrapped loss ([`CheckedLoss`][stochgrad.guard.CheckedLoss])."""
        if logits.__class__ is Tensor and distribution is None:
            dist = BERNOULLI
        else:
            logits, dist = as_distribution(logits, distribution)
        check_logits(logits, "logits", self.verdict, dist.masks)
        if samples.__class__ is not int or samples != 1 or self.min_samples > 1:
            check_samples(samples, self.min_samples, self.name)
        if generator is not None and not isinstance(generator, (torch.Generator, Sharded)):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if dist is BERNOULLI and logits.dtype not in LOW_PRECISION:  # the common case
            return self.estimate(CheckedLoss(f, 1, logits.ndim), logits, samples, generator, dist)
        if dist is not BERNOULLI:
            dist.check(logits)
            if dist.name not in self.distributions:
                raise ValueError(unsupported(self, dist))
        if logits.dtype in LOW_PRECISION:  # sample and score in float32: the low-precision grid biases P(h = 1)
            work = logits.float()
            loss = CheckedLoss(f, dist.sample_dims, logits.dim() - dist.event_dims + dist.sample_dims, logits.dtype,
                               work.dtype)
            return self.estimate(loss, work, samples, generator, dist).to(logits.dtype)
        loss = CheckedLoss(f, dist.sample_dims, logits.dim() - dist.event_dims + dist.sample_dims, None, logits.dtype)
        return self.estimate(loss, logits, samples, generator, dist)

    def state_meaning(self) -> dict:
        """What this estimator's state means beyond its shapes: its name and the options that decide how its buffers
        are read (RELAX adds ``hidden``). Estimators whose buffers share their names with another's (the tuned family,
        ``auto``) save it in their extra state; a state loads only into an estimator of the same meaning."""
        return {"estimator": self.name}

    def check_state(self, state_dict, prefix: str = "") -> None:
        """One rule for loading an estimator's state, applied before any of it (or of its submodules) changes: the state
        must mean the same ([`state_meaning`][stochgrad.estimators.base.Estimator.state_meaning]: REBAR's tuned values never load into ``double_cv``, RELAX's network of
        10 hidden units never into one of 20, ``auto([a, b])``'s choice never into ``auto([b, a])``) and hold only finite
        numbers. A state saved without its meaning (an older checkpoint) is taken as this estimator's."""
        key = prefix + "_extra_state"
        saved = state_dict.get(key)
        mine = self.state_meaning()
        if isinstance(saved, dict):
            differ = {k: (saved[k], v) for k, v in mine.items() if k in saved and saved[k] != v}
            if differ:
                raise ValueError(f"this state belongs to another estimator ({', '.join(f'{k} = {a!r}' for k, (a, _) in differ.items())}), "
                                 f"not to this one ({', '.join(f'{k} = {b!r}' for k, (_, b) in differ.items())}): "
                                 "its values would be misread; load it into the estimator it was saved from")
        for name, value in state_dict.items():
            if name.startswith(prefix) and isinstance(value, Tensor) and value.is_floating_point() \
                    and name[len(prefix):] not in self.records and not bool(torch.isfinite(value).all()):
                raise ValueError(f"state {name!r} holds NaN or inf: a running statistic or tuned value must be finite "
                                 "(the state was not loaded)")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """[`check_state`][stochgrad.estimators.base.Estimator.check_state] first (it raises before anything changes), then the usual load."""
        self.check_state(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @abc.abstractmethod
    def estimate(self, f: CheckedLoss, logits: Tensor, samples: int, generator: torch.Generator | None,
                 dist: Distribution = BERNOULLI) -> Tensor:
        """Validated input in, ``(*batch,)`` estimate of ``E[f]`` out, carrying the gradient to ``logits``: ``logits``
        ``(*batch, *event)`` of units with the distribution ``dist`` (one of those the class declares in
        ``distributions``), every probability, sample, score and relaxation asked of ``dist``."""

    def evaluations(self, n: int, samples: int = 1) -> int:
        """Points at which ``f`` is evaluated per example and estimate, for ``n`` units."""
        return samples


def unsupported(est: Estimator, dist) -> str:
    """The error for an estimator asked for a distribution it does not declare, naming those that fit."""
    fit = [name for name, cls in REGISTRY.items() if dist.name in cls.distributions]
    return (f"estimator {est.name!r} does not support {dist.name} units (it supports "
            f"{', '.join(est.distributions)}); estimators for {dist.name} units: {', '.join(fit)}")


class ScoreFunction(Estimator):
    """The score-function family: ``ĝ_i = mean_s (h_si − σ(a_i))·(L_s − c_si)`` (seed Theorem 1, Corollary 1).

    The baseline ``c`` is a [`stochgrad.baselines.Baseline`][stochgrad.baselines.Baseline]; the formula lives in
    [`score_gradient`][stochgrad.estimators.base.ScoreFunction.score_gradient], which the network view calls with the broadcast loss. Categorical units:
    the score is ``onehot − softmax(a)`` (Williams 1992), the same ``h − probs``; the baselines see it
    flattened to ``(S, *batch, n·K)``, so the optimal baseline of Eq. 7 is kept per unit and class.
    """

    unbiased = True
    broadcast = True
    distributions = ("bernoulli", "categorical", "categorical_index")

    def __init__(self, baseline):
        super().__init__()
        self.baseline = baseline

    def score_gradient(self, h: Tensor, probs: Tensor, losses: Tensor, update: bool = True, dl_dh=None,
                       scale: float | None = None) -> Tensor:
        """``h``: ``(*lead, *batch, n)``, ``probs``: ``(*batch, n)``, ``losses``: ``(*lead, *batch)`` → ``(*batch, n)``,
        ``lead`` empty (one sample) or ``(S,)`` (averaged over). ``scale``: a number the result is multiplied by
        (the network view's ``1/B``: the gradient of the mean loss), applied to the vectors that make ``L − c``
        ([`centred`][stochgrad.baselines.Baseline.centred]), not to the result: no pass of its own.

        Reads the baseline first, then (if ``update``) folds in the current losses: Corollary 1. A call
        whose losses are NaN/inf leaves the baseline as it was ([`stochgrad.guard`][stochgrad.guard]). Returns a fresh
        tensor (the caller may write into it): the score's own buffer, multiplied in place once the baseline
        has read the score.
        """
        if losses.requires_grad:
            losses = losses.detach()
        baseline = self.baseline
        if h.dim() > probs.dim() and h.numel() >= NODE_MIN and per_sample(baseline):
            return self.sample_weighted(h, probs, losses, update, scale)
        score = h - probs
        # (no scale, no keyword: a user's Baseline.centred(score, losses) from before scale= still works)
        centred = baseline.centred(score, losses) if scale is None else baseline.centred(score, losses, scale)
        if update:
            ok = baseline.update(score, losses)
            if ok is not None:
                self.verdict.report(ok, LOSSES)
        # in place when the dtypes agree: the same product as score * centred, without a second buffer
        grad = score.mul_(centred) if centred.dtype == score.dtype else score * centred
        return grad if h.dim() == probs.dim() else grad.mean(0)

    def sample_weighted(self, h: Tensor, probs: Tensor, losses: Tensor, update: bool, scale: float | None) -> Tensor:
        """[`score_gradient`][stochgrad.estimators.base.ScoreFunction.score_gradient] for ``S`` samples and a baseline
        with one ``c`` per sample: ``mean_s (h_s − σ)(L_s − c_s) = (Σ_s (L_s − c_s) h_s − σ Σ_s (L_s − c_s)) / S``, the
        first sum one batched product over the samples, so that no ``(S, *batch, n)`` score is made (at a
        vocabulary's ``K`` the largest buffer of the estimate). Used from ``NODE_MIN`` elements of ``h`` on: below,
        the product's call costs more than the score it saves (2 × 100 units: 15 µs against 8)."""
        S, n = h.shape[0], h.shape[-1]
        c = self.centred_per_sample(losses, update, scale).to(h.dtype).expand(*h.shape[:-1], 1)   # (S, *batch, 1)
        # Σ_s c_s h_s for every example x: (x, 1, S) @ (x, S, n), the samples read in place (strided)
        grad = torch.bmm(c.reshape(S, -1, 1).permute(1, 2, 0), h.reshape(S, -1, n).transpose(0, 1)).view(probs.shape)
        return grad.addcmul_(probs, c.sum(0), value=-1).div_(S)

    def index_weighted(self, z: Tensor, probs: Tensor, losses: Tensor, update: bool) -> Tensor:
        """The same sum for class indices ``z`` ``(*lead, *batch, n)`` of units with probabilities ``probs``
        ``(*batch, n, K)`` (what ``f`` received, [`CATEGORICAL_INDEX`][stochgrad.distributions.CATEGORICAL_INDEX]):
        ``Σ_s c_s e_{z_s}`` added at the sampled classes (``scatter_add``), so no one-hot is made: one ``(*batch, n, K)``
        tensor, the result. ``(*batch, n, K)``."""
        c = self.centred_per_sample(losses, update, None).to(probs.dtype)   # (*lead, *batch, 1)
        if z.dim() == probs.dim() - 1:                                      # one sample: a sample dimension of 1
            z, c = z.unsqueeze(0), c.unsqueeze(0)
        S = z.shape[0]
        grad = probs * c.sum(0).div_(-S).unsqueeze(-1)                      # −p Σ_s c_s / S
        return grad.scatter_add_(-1, z.movedim(0, -1), c.div(S).expand(z.shape).movedim(0, -1))

    def centred_per_sample(self, losses: Tensor, update: bool, scale: float | None) -> Tensor:
        """``L − c`` ``(*lead, *batch, 1)`` of a baseline that does not read the score (``per_sample``), read before
        (if ``update``) the current losses are folded in: Corollary 1."""
        baseline = self.baseline
        centred = baseline.centred(None, losses) if scale is None else baseline.centred(None, losses, scale)
        if update:
            ok = baseline.update(None, losses)
            if ok is not None:
                self.verdict.report(ok, LOSSES)
        return centred

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        h = dist.sample(probs, lead(samples), generator)
        losses = f(h)
        if dist.sample_dims < dist.event_dims:   # f saw class indices: their one-hot only where the baseline reads it
            if per_sample(self.baseline):
                grad = self.index_weighted(h, probs, losses.detach(), logits.requires_grad)
                return attach_gradient(over_samples(losses, samples), logits, grad, dist.masks)
            h = one_hot(h, probs.shape[-1], probs)
        grad = self.score_gradient(dist.flat(h), dist.flat(probs), losses, logits.requires_grad).view_as(logits)
        return attach_gradient(over_samples(losses, samples), logits, grad, dist.masks)


class Tuned(Estimator, ResizableBuffers):
    """An estimator whose control variate has values tuned online to minimise its variance (``rebar``,
    ``relax``, ``double_cv``, ``rodeo``): one mechanism for all of them.

    - **State, not model parameters.** The tuned values are one flat buffer ``theta`` (each subclass
      reads its slices) with Adam's moments beside it (``adam_m``, ``adam_v``, ``adam_steps``): they never
      appear in a user's ``model.parameters()`` (a user's optimiser cannot step them a second time),
      ``state_dict`` resumes them exactly (the call counter travels in the extra state), and they follow
      the logits' dtype and device.
    - **Tuning.** The estimate is unbiased whatever ``theta``, so the gradient of ``E‖ĝ‖²`` is that of
      the variance: every ``tune_every``-th training call (``tune`` and ``self.training``) takes one Adam
      step (``lr``; Kingma & Ba 2015) on ``mean ‖ĝ‖²`` over the examples, *after* the estimate was made
      (each estimate uses values fixed by past calls).
    - **Ranks.** The step's gradient is averaged over ranks under ``torch.distributed``; values drawn at
      random (RELAX's and RODEO's networks, [`draw`][stochgrad.estimators.base.Tuned.draw]) come from the call's generator on first use
      (rank 0's draw without one), so every rank holds the same values and runs with the same seed repeat.
    - **Guarded** ([`stochgrad.guard`][stochgrad.guard]): a call whose losses (hence the step) are NaN/inf changes
      nothing, bitwise, and is reported; ``theta`` never takes a non-finite value.

    Subclasses pass the initial values to ``__init__``, may append random ones in [`prepare`][stochgrad.estimators.base.Tuned.prepare], compute
    their estimate from ``theta = self.values(tuning)`` and, on tuning calls, hand it to [`tune_on`][stochgrad.estimators.base.Tuned.tune_on] (or, having
    written the step's gradient out by hand, pass that to `_step`: ``rebar``/``relax`` on Bernoulli units).
    """

    unbiased = True

    def __init__(self, initial: list[float], tune: bool, lr: float, tune_every: int = 1):
        super().__init__()
        self.tune, self.lr = FLAG.check(tune, "tune"), float(POSITIVE_FLOAT.check(lr, "lr"))
        self.tune_every = POSITIVE.check(tune_every, "tune_every")
        self.register_buffer("theta", torch.tensor([float(v) for v in initial]))
        self.register_buffer("adam_m", torch.zeros(len(initial)))
        self.register_buffer("adam_v", torch.zeros(len(initial)))
        self.register_buffer("adam_steps", torch.zeros(()))
        self._calls = 0  # training calls so far: every tune_every-th one tunes (in the extra state)
        self.dropped = False  # this call was skipped for NaN/inf losses, known on the host (check_losses)

    def prepare(self, n: int, like: Tensor, generator) -> None:
        """Sizes the tuned state for ``n`` units on first use ([`grow`][stochgrad.estimators.base.Tuned.grow]); nothing by default."""

    def forward(self, *args, **kwargs) -> Tensor:
        """[`Estimator.forward`][stochgrad.estimators.base.Estimator.forward], undone if the call raises: a first call that sized the state (or moved it to
        the logits' device) and then failed (bad losses, a shape error in ``f``) leaves the buffers as they were."""
        before = (self.theta, self.adam_m, self.adam_v, self.adam_steps)   # a resize or a move replaces them
        try:
            return super().forward(*args, **kwargs)
        except BaseException:
            self.theta, self.adam_m, self.adam_v, self.adam_steps = before
            raise

    def begin(self, like: Tensor, n: int, generator) -> bool:
        """At the start of a call that computes a gradient: the state in the dtype and device of ``like`` (the
        logits), sized by [`prepare`][stochgrad.estimators.base.Tuned.prepare]; returns whether this call tunes."""
        theta = self.theta
        if theta.dtype != like.dtype or theta.device != like.device:  # the four buffers always move together
            self._follow(like, "theta", "adam_m", "adam_v", "adam_steps")
        self.prepare(n, like, generator)
        self.dropped = False
        return self.tune and self.training and self._calls % self.tune_every == 0

    def join(self, like: Tensor, n: int, generator) -> None:
        """An empty batch under ``torch.distributed``: nothing to estimate, but this rank still makes the call's
        collectives (the first use's draw, the tuning step, with nothing to add) and counts it, as the other ranks do;
        without ranks, nothing."""
        if is_distributed() and self.training:
            if self.begin(like, n, generator):
                self._step(self.theta.new_zeros(self.theta.shape), 0)
            self.end()

    def check_losses(self, losses: Tensor) -> None:
        """On a training call, before its tuning step: reports NaN/inf losses ([`stochgrad.guard`][stochgrad.guard]: an error, or
        with ``skip_nonfinite`` silence). Where the host reads them for free (the CPU), a skipped call is dropped
        whole: no tuning step and not counted; on a device its step is refused by the guard instead."""
        if self.training:
            self.dropped = report_finite(self.verdict, losses.detach(), LOSSES) is False

    def values(self, tuning: bool) -> Tensor:
        """``theta`` for the formula: a detached copy, differentiable on a tuning call."""
        return self.theta.detach().requires_grad_(tuning)

    def end(self) -> None:
        """After the call's checks: counts a training call (a call that raised, or one dropped by
        [`check_losses`][stochgrad.estimators.base.Tuned.check_losses], leaves even the count)."""
        if self.training and not self.dropped:
            self._calls += 1

    def draw(self, size: int, bound: float, like: Tensor, generator) -> Tensor:
        """``size`` values uniform in ``[−bound, bound)`` (``nn.Linear``'s default initialisation) from the
        caller's generator (its unsharded stream: the same on every rank; rank 0's draw without one)."""
        gen = generator.generator if isinstance(generator, Sharded) else generator
        out = (2 * uniform((size,), like, gen) - 1) * bound
        if is_distributed():  # the global RNG, or a generator per rank, differs across ranks: take rank 0's draw
            torch.distributed.broadcast(out, 0)
        return out

    def grow(self, extra: Tensor) -> None:
        """Appends ``extra`` to ``theta`` (on first use, before any tuning step), with zero Adam moments."""
        self.theta = torch.cat([self.theta, extra.to(self.theta)])
        self.adam_m = self.theta.new_zeros(self.theta.shape)
        self.adam_v = self.theta.new_zeros(self.theta.shape)

    def tune_on(self, grad: Tensor, theta, event_dims: int = 1) -> None:
        """One guarded Adam step on ``mean ‖ĝ‖²``; ``grad``: the estimate ``(*batch, *event)``, differentiable
        in ``theta`` (from [`values`][stochgrad.estimators.base.Tuned.values]), or in the consecutive pieces of it that a tuple ``theta`` holds (leaves
        of their own: no gradient is scattered back into a full-size ``theta`` per piece; a piece that does not require
        grad takes a zero gradient this step)."""
        per_example = grad.square().flatten(grad.dim() - event_dims).sum(-1)
        pieces = (theta,) if isinstance(theta, Tensor) else tuple(theta)
        wanted = [x for x in pieces if x.requires_grad]
        got = iter(torch.autograd.grad(per_example.mean(), wanted, allow_unused=True))
        gs = [next(got) if x.requires_grad else None for x in pieces]
        gs = [torch.zeros_like(x) if g is None else g for x, g in zip(pieces, gs)]
        self._step(gs[0] if len(gs) == 1 else torch.cat(gs), per_example.numel())

    @torch.no_grad()
    def _step(self, g: Tensor, count: int) -> None:
        """One Adam step on ``theta`` (``torch.optim``'s own, fused; Kingma & Ba 2015) with the gradient ``g`` averaged
        over ranks, guarded: the step is taken on copies of the state and kept only where the gradient, ``theta`` and
        both moments come out finite (a NaN/inf gradient, a moment that overflows, a learning rate that sends ``theta``
        to inf); otherwise nothing changes, bitwise. One form on every device: the verdict is read on the host where
        that is free (the CPU), else reported by a later call ([`Verdict`][stochgrad.guard.Verdict])."""
        if self.dropped:   # (check_losses: a skipped call, known on the host)
            return
        g = mean_over_ranks(g.to(self.theta.dtype), count)
        theta, m, v, steps = (x.clone() for x in (self.theta, self.adam_m, self.adam_v, self.adam_steps))
        adam([theta], [g], [m], [v], [], [steps], fused=True, amsgrad=False, beta1=BETAS[0], beta2=BETAS[1],
             lr=self.lr, weight_decay=0.0, eps=EPS, maximize=False)
        value = total(torch.cat([g, theta, m, v]))
        fold_(finite(value), (self.theta, theta), (self.adam_m, m), (self.adam_v, v), (self.adam_steps, steps))
        self.verdict.report(value, TUNING)

    def get_extra_state(self):
        """The state's meaning ([`state_meaning`][stochgrad.estimators.base.Estimator.state_meaning]) and the call counter (which calls tune) travel with
        ``state_dict``."""
        return {**self.state_meaning(), "calls": self._calls}

    def set_extra_state(self, state):
        self._calls = int(state.get("calls", 0)) if isinstance(state, dict) else 0

    def extra_repr(self) -> str:
        return f"tune={self.tune}, tune_every={self.tune_every}, lr={self.lr}"
