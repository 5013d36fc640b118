"""Stochastic and semi-hard neurons as ``nn.Module`` layers (the network view; docs: "Design").

Every layer takes pre-activations ``a`` of shape ``(*batch, n)`` and returns ``(*batch, n)``.
"""
from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

from .baselines import ResizableBuffers
from .distributed import is_distributed, mean_over_ranks
from .distributions import BERNOULLI, CATEGORICAL, Distribution, one_hot
from .estimators import REGISTRY, Estimator, get_estimator
from .options import DECAY, FRACTION, UNIT_INTERVAL, Kind, choice, integer
from .guard import LOW_PRECISION, check_logits, finite, fold_
from .graph import Node, active_graph
from .sampling import bernoulli, normal


def layer_names(distribution: str = "bernoulli") -> list[str]:
    """The registered estimators a stochastic layer of ``distribution`` units can use: pathwise ones that sample,
    or those that take the broadcast loss, with one sample per example."""
    return [n for n, cls in REGISTRY.items() if ((cls.pathwise and hasattr(cls, "sample")) or cls.broadcast)
            and cls.min_samples == 1 and distribution in cls.distributions]


def layer_estimator(estimator, distribution: str = "bernoulli"):
    """The estimator object of a stochastic layer, refused with a clear error if a layer cannot use it; the
    error lists the estimators that a layer of these units can use ([`layer_names`][stochgrad.neurons.layer_names])."""
    if not isinstance(estimator, (str, Estimator)):
        raise TypeError(f"estimator must be a registered name or a stochgrad Estimator, got {type(estimator).__name__}")
    est = get_estimator(estimator) if isinstance(estimator, str) else estimator
    usable = f"a {distribution} layer takes {', '.join(layer_names(distribution))}; or use sg.expect"
    if not (est.pathwise and hasattr(est, "sample")) and not est.broadcast:
        raise ValueError(f"estimator {est.name!r} evaluates the loss at several points per sample and "
                         f"cannot be a layer: {usable}")
    if est.min_samples > 1:
        raise ValueError(f"estimator {est.name!r} needs {est.min_samples} samples per example; "
                         f"a layer draws one: {usable}")
    if distribution not in getattr(est, "distributions", ("bernoulli",)):
        raise ValueError(f"estimator {est.name!r} does not support {distribution} units; {usable}")
    return est


SIGMA = Kind("a finite number >= 0", (int, float), float, lambda v: math.isfinite(v) and v >= 0)
GAIN = Kind("a finite number > 0", (int, float), float, lambda v: math.isfinite(v) and v > 0)
LAYER = Kind("a stochastic layer (an nn.Module)", (nn.Module,), None, lambda v: True)


class StochasticUnits(nn.Module, abc.ABC):
    """Stochastic units of one distribution as a layer, the training behaviour shared by
    [`StochasticBinary`][stochgrad.neurons.StochasticBinary] and
    [`StochasticCategorical`][stochgrad.neurons.StochasticCategorical] (a new kind of unit is a subclass that names
    its distribution, reads its input shape and says what it outputs in evaluation).

    Training: samples. A pathwise estimator's ``sample`` carries the gradient by autograd; an estimator that needs
    the loss records a node in the active [`stochgrad.broadcast`][stochgrad.graph.broadcast] graph and learns from
    ``graph.backward(per_example_loss)`` (its baselines see the units' flattened coordinates). float16/bfloat16
    inputs are sampled in float32 (a low-precision grid biases the probabilities) and returned in their dtype.
    """

    dist: Distribution

    def __init__(self, estimator, eval_output: str, generator: torch.Generator | None, outputs: tuple[str, str]):
        super().__init__()
        self.estimator = layer_estimator(estimator, self.dist.name)
        self.eval_output = choice(*outputs).check(eval_output, "eval_output")
        self.generator = generator

    def units(self, a: Tensor) -> Tensor:
        """The input as logits ``(*batch, *event)`` of the distribution."""
        return a

    @abc.abstractmethod
    def evaluate(self, a: Tensor) -> Tensor:
        """The deterministic output of evaluation mode, from the logits."""

    def forward(self, a: Tensor) -> Tensor:
        """``a`` → samples (training) or the evaluation output, of ``a``'s shape."""
        shape, name = a.shape, type(self).__name__
        a = self.units(a)
        check_logits(a, f"{name} input", self.estimator.verdict, self.dist.masks)
        self.dist.check(a, f"{name} input")
        if not self.training:
            out = self.evaluate(a)
        elif a.dtype in LOW_PRECISION:
            out = self.sample(a.float()).to(a.dtype)
        else:
            out = self.sample(a)
        return out if out.shape == shape else out.reshape(shape)

    def sample(self, a: Tensor) -> Tensor:
        """Training samples of the logits ``a``, learning through the estimator (class docstring)."""
        graph, est, dist, name = active_graph(), self.estimator, self.dist, type(self).__name__
        if est.pathwise:
            if graph is not None and graph.local:
                raise ValueError(f"{name}(estimator={est.name!r}) learns by back-propagation, "
                                 "which broadcast(local=True) forbids: use a reinforce* estimator")
            return est.sample(a, (), self.generator, dist)
        if graph is None:
            raise RuntimeError(f"{name}(estimator={est.name!r}) needs the loss broadcast in training: "
                               "run the forward pass inside `with sg.broadcast() as graph:` and call "
                               "graph.backward(per_example_losses)")
        probs = dist.probs(a.detach())
        h = dist.sample(probs, (), self.generator)
        probe = None
        if est.needs_dl_dh:
            if graph.local:
                raise ValueError(f"the {est.name} estimator needs dL/dh, a backward pass broadcast(local=True) forbids")
            probe = torch.zeros_like(h, requires_grad=True)  # ∂L/∂h lands here
        graph.record(Node.of(est, dist.flat(a), dist.flat(h), dist.flat(probs),
                             None if probe is None else dist.flat(probe)))
        return h if probe is None else h + probe

    def extra_repr(self) -> str:
        return f"estimator={self.estimator.name}, eval_output={self.eval_output}"


class StochasticBinary(StochasticUnits):
    """Fires with probability ``σ(a)`` (seed Eq. 2, corrected: ``h = 1[u < σ(a)]``).

    Training: samples. Pathwise estimators (``straight_through``, ``straight_through_sigmoid``,
    ``gumbel``, ``gumbel_st``) learn by autograd alone; estimators that need the loss (``reinforce*``,
    ``learned``) must run inside [`stochgrad.broadcast`][stochgrad.graph.broadcast] and get the per-example loss from
    ``graph.backward(loss)``. Evaluation: deterministic, ``1[σ(a) > threshold]`` (``eval_output=
    "threshold"``) or ``σ(a)`` (``"probability"``). Input and output ``(*batch, n)``; float16/bfloat16 inputs are
    sampled in float32 (a low-precision grid biases ``P(h = 1)``) and returned in their dtype.

    Args:
        estimator: a registered name or estimator object; one layer, one object (it may hold state).
        eval_output: ``"threshold"`` or ``"probability"``; ``threshold``: used by the former.
        generator: noise source for exactly repeatable runs.
    """

    dist = BERNOULLI

    def __init__(self, estimator: str | Estimator = "straight_through", eval_output: str = "threshold", threshold: float = 0.5,
                 generator: torch.Generator | None = None):
        super().__init__(estimator, eval_output, generator, ("threshold", "probability"))
        self.threshold = float(UNIT_INTERVAL.check(threshold, "threshold"))

    def evaluate(self, a: Tensor) -> Tensor:
        p = torch.sigmoid(a)
        return p if self.eval_output == "probability" else (p > self.threshold).to(a.dtype)


class StochasticCategorical(StochasticUnits):
    """``n`` units of ``K`` classes each: one-hot samples, unit ``i`` in class ``k`` with probability
    ``softmax(a_i)_k``, the categorical counterpart of [`StochasticBinary`][stochgrad.neurons.StochasticBinary].

    Input logits ``(*batch, n, K)``, or ``(*batch, n·K)`` when ``categories=K`` is given (a ``Linear``
    layer's output); with ``categories=K``, an input of three or more dimensions whose last is ``K`` is read as
    ``(*batch, n, K)`` (a ``(B, T, K)`` input is then ``T`` units of ``B`` examples: give ``(B, T, 1, K)`` for one
    unit per step). The output has the input's shape, one-hot along the classes. Training: pathwise
    estimators that support categorical units (``straight_through``, ``gumbel``, ``gumbel_st``,
    ``gumbel_rao``, ``reinmax``) learn by autograd; ``reinforce*`` record a node in
    [`stochgrad.broadcast`][stochgrad.graph.broadcast] (``local=True`` and [`DelayedBroadcast`][stochgrad.graph.DelayedBroadcast] too) and learn from
    ``(onehot − softmax(a))·(L − c)``; their baselines see the ``n·K`` coordinates, in buffers averaged
    over ranks. Evaluation: the most probable class (``eval_output="argmax"``) or ``softmax(a)``
    (``"probability"``). float16/bfloat16 inputs are sampled in float32 (a low-precision grid biases the
    class probabilities) and returned in their dtype.
    """

    dist = CATEGORICAL

    def __init__(self, estimator="straight_through", categories: int | None = None, eval_output: str = "argmax",
                 generator: torch.Generator | None = None):
        choice("argmax", "probability").check(eval_output, "eval_output")
        if categories is not None:
            integer(2).check(categories, "categories")
        super().__init__(estimator, eval_output, generator, ("argmax", "probability"))
        self.categories = categories

    def units(self, a: Tensor) -> Tensor:
        if self.categories is not None and not (a.dim() >= 3 and a.shape[-1] == self.categories):  # (*batch, n, K)
            if a.dim() < 1 or a.shape[-1] % self.categories:
                raise ValueError(f"StochasticCategorical(categories={self.categories}) needs input (*batch, n·K) or "
                                 f"(*batch, n, K) with K = {self.categories}; got shape {tuple(a.shape)}")
            a = a.unflatten(-1, (-1, self.categories))
        return a

    def evaluate(self, a: Tensor) -> Tensor:
        p = torch.softmax(a, -1)
        return p if self.eval_output == "probability" else one_hot(p.argmax(-1), a.shape[-1], a)

    def extra_repr(self) -> str:
        return f"estimator={self.estimator.name}, categories={self.categories}, eval_output={self.eval_output}"


class NoisyRectifier(nn.Module):
    """Seed §2: ``h = max(0, a + z)``, ``z ~ N(0, σ²)`` in training; ``max(0, a)`` in evaluation.

    For fixed noise the gradient is exact, so the ordinary pathwise gradient is an unbiased estimate of
    the gradient of the expected loss.
    """

    def __init__(self, sigma: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.sigma, self.generator = float(SIGMA.check(sigma, "sigma")), generator

    def forward(self, a: Tensor) -> Tensor:
        if self.training and self.sigma > 0:
            a = a + self.sigma * normal(a.shape, a, self.generator)
        return torch.relu(a)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class StochasticTimesSmooth(nn.Module):
    """Stochastic-times-smooth gate (Bengio, Léonard & Courville 2013, §3): ``h = √σ(a) · b``,
    ``b ~ Bernoulli(√σ(a))``, so ``E[h] = σ(a)`` and ``h = 0`` whenever the gate is shut.

    The gradient flows through the smooth factor ``√σ(a)`` with ``b`` held fixed. Evaluation:
    ``√σ(a) · 1[√σ(a) > threshold]`` (deterministic gates).
    """

    def __init__(self, threshold: float = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        self.threshold, self.generator = float(UNIT_INTERVAL.check(threshold, "threshold")), generator

    def forward(self, a: Tensor) -> Tensor:
        smooth = torch.sigmoid(a).sqrt()
        if self.training:
            gate = bernoulli(smooth.detach(), (), self.generator)
        else:
            gate = (smooth > self.threshold).to(a.dtype)
        return smooth * gate


class FiringRateControl(ResizableBuffers):
    """Seed §2's bias control: keeps each unit of ``neuron`` firing at a ``target`` rate.

    ``forward(a) = neuron(a + offset)``; in training, a moving average (``decay``) of each unit's
    fraction of non-zero outputs is kept, and ``offset += gain · (target − rate)``: pushed up while a
    unit fires too rarely, down while too often. ``offset`` and ``rate`` are buffers (``(n,)``),
    averaged over ranks under ``torch.distributed``.
    """

    def __init__(self, neuron: nn.Module, target: float = 0.1, gain: float = 0.5, decay: float = 0.9):
        super().__init__()
        LAYER.check(neuron, "neuron")
        target, gain = float(FRACTION.check(target, "target")), float(GAIN.check(gain, "gain"))
        self.neuron, self.target, self.gain, self.decay = neuron, target, gain, float(DECAY.check(decay, "decay"))
        self.register_buffer("offset", torch.zeros(0))
        self.register_buffer("rate", torch.zeros(0))
        self.register_buffer("weight", torch.zeros(()))  # 1 − decay^steps: bias correction of rate

    def shifted(self, a: Tensor) -> Tensor:
        """``a + offset``: the pre-activation the wrapped neuron sees."""
        self._sized(a.shape[-1], a, "offset", "rate")
        return a + self.offset

    def forward(self, a: Tensor) -> Tensor:
        out = self.neuron(self.shifted(a))
        if self.training and (a.numel() > 0 or is_distributed()):  # an empty batch changes nothing (under
            with torch.no_grad():                                     # torch.distributed it still joins the mean)
                fired = (out != 0).to(a.dtype).reshape(-1, a.shape[-1])
                # a mean of 0/1 indicators is finite whatever a holds (NaN != 0 counts as fired); only a batch empty
                # on every rank gives 0/0, which the guard leaves out
                now = mean_over_ranks(fired.mean(0), fired.shape[0])
                keep = 1 - self.decay
                rate, weight = self.rate * self.decay + keep * now, self.weight * self.decay + keep
                fold_(finite(now), (self.rate, rate), (self.weight, weight),
                      (self.offset, self.offset + self.gain * (self.target - rate / weight.to(a.dtype))))
        return out

    def firing_rate(self) -> Tensor:
        """The bias-corrected moving firing rate per unit, ``(n,)``."""
        return self.rate / self.weight.clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"target={self.target}, gain={self.gain}, decay={self.decay}"
