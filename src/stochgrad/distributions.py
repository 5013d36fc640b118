"""The distribution axis (docs: "Design", growing the design): Bernoulli units and one-hot categorical units.

An estimator's formula is written once against this small interface; each distribution supplies its
sampling (from uniform noise, [`stochgrad.sampling`][stochgrad.sampling]), its score ``∇_a log p(h)``, the enumeration
that ``exact`` needs, and the Gumbel relaxation.

Shapes (``event`` = the trailing dimensions of one example):

- [`BERNOULLI`][stochgrad.distributions.BERNOULLI]: logits ``(*batch, n)``, samples ``h ∈ {0,1}`` of the same shape; ``P(h_i=1) = σ(a_i)``.
- [`CATEGORICAL`][stochgrad.distributions.CATEGORICAL]: logits ``(*batch, n, K)``: ``n`` independent units of ``K ≥ 2`` classes each;
  samples are one-hot ``(*batch, n, K)``; ``P(h_i = e_k) = softmax(a_i)_k``.
- [`CATEGORICAL_INDEX`][stochgrad.distributions.CATEGORICAL_INDEX]: the same units, their samples handed to ``f`` as
  class indices ``(*batch, n)`` (int64), as token-sampling code reads them (``w[index]``): no one-hot of
  ``(*batch, n, K)`` is made for ``f``. For the estimators that never differentiate ``f`` (the score-function family).

A loss ``f`` maps samples ``(*lead, *batch, *event)`` to ``(*lead, *batch)``.
"""
from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .sampling import bernoulli, logistic_from_uniform, uniform

MAX_STATES = 2 ** 20
MAX_STATE_ENTRIES = 2 ** 27  # entries of the enumerated states (states × event): 512 MiB in float32 (2^20 states of 5 × 16 fit)
WIDE = torch.float64  # the categorical sampler's running sum and uniforms: exact in law at any K (Categorical.from_uniform)


def wide(device) -> torch.dtype:
    """``WIDE`` where ``device`` has float64, else float32 (``mps``): the dtype of the arithmetic that must resolve
    probabilities finer than float32's ``2⁻²⁴`` (the categorical sampler, CARMS's pair law)."""
    return WIDE if torch.device(device).type != "mps" else torch.float32


def all_states(n: int, like: Tensor) -> Tensor:
    """All ``2^n`` binary vectors, ``(2^n, n)``, dtype and device of ``like``; row ``k`` is ``k`` in binary."""
    if n > 20:
        raise ValueError(f"exact enumeration needs n <= 20 units (2^n states); got n = {n}")
    bits = torch.arange(n - 1, -1, -1, device=like.device)
    return ((torch.arange(2 ** n, device=like.device).unsqueeze(-1) >> bits) & 1).to(like.dtype)


def log_prob(b: Tensor, logits: Tensor) -> Tensor:
    """``log P(b)`` under independent Bernoulli(σ(logits)) units, summed over the last dimension."""
    return (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum(-1)


def one_hot(index: Tensor, K: int, like: Tensor) -> Tensor:
    """``(*shape)`` class indices to one-hot ``(*shape, K)`` in the dtype of ``like`` (on the device of ``index``;
    written into zeros: no host read of the indices, as ``F.one_hot`` makes to find ``K``)."""
    out = torch.zeros((*index.shape, K), dtype=like.dtype, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1.0)


def conditional_logistic(v: Tensor, b: Tensor, probs: Tensor) -> Tensor:
    """``z̃ ~ p(z | b)`` for ``z = a + logistic``, from ``v ~ U[0,1)``; differentiable in ``probs = σ(a)``.

    Tucker et al. 2017, appendix: ``z̃ = log(v/((1−v)(1−θ)) + 1)`` if ``b = 1``, ``−log(v/((1−v)θ) + 1)`` if ``b = 0``.
    """
    tiny = torch.finfo(v.dtype).tiny
    odds = v / (1 - v).clamp_min(tiny)
    on = torch.log1p(odds / (1 - probs).clamp_min(tiny))
    off = -torch.log1p(odds / probs.clamp_min(tiny))
    return torch.where(b > 0, on, off)


def conditional_gumbel_noise(v: Tensor, h: Tensor, probs: Tensor) -> Tensor:
    """``z̃ − a`` for ``z̃ ~ p(z | argmax z = h)``, ``z = a + Gumbel``, from ``v ~ U(0,1)^K``; differentiable in ``probs``.

    Tucker et al. 2017 (appendix), Paulus et al. 2021 (Alg. 2): with ``E = −log v ~ Exp(1)``, the maximum is
    ``z̃_b = log Σ e^a − log E_b`` and every other ``z̃_j = −log(E_j e^{−a_j} + E_b / Σ e^a)``; less ``a``, in terms of
    ``p = softmax(a)``: ``−log E_b − log p_b`` for the sampled class and ``−log(E_j + E_b p_j)`` for the others. A
    masked class (``p_j = 0``, ``a_j = −inf``) gets plain Gumbel noise ``−log E_j``: finite, so ``a + noise`` stays
    ``−inf`` there and nothing subtracts two infinities.
    """
    e = v.clamp_min(torch.finfo(v.dtype).tiny).log_().neg_()                 # E ~ Exp(1): one buffer, then in place
    b = h.argmax(-1, keepdim=True).expand(*e.shape[:-1], 1)                  # the sampled class of the one-hot h
    e_b = e.gather(-1, b)
    top = -torch.log(e_b * probs.expand(e.shape).gather(-1, b))
    return e.addcmul_(e_b, probs).log_().neg_().scatter_(-1, b, top)         # −log(E_j + E_b p_j); −log(E_b p_b) at b


def conditional_gumbel(v: Tensor, h: Tensor, logits: Tensor) -> Tensor:
    """``z̃ ~ p(z | argmax z = h)`` for ``z = a + Gumbel``, from ``v ~ U(0,1)^K``; differentiable in ``a``
    ([`conditional_gumbel_noise`][stochgrad.distributions.conditional_gumbel_noise] added to ``a``)."""
    return logits + conditional_gumbel_noise(v, h, torch.softmax(logits, -1))


class Distribution(abc.ABC):
    """What an estimator may ask of a distribution of independent discrete units (see the module doc)."""

    name: str = ""
    event_dims: int = 1  # trailing dimensions of the logits that make one example's units
    sample_dims: int = 1  # trailing dimensions of one example's sample, as f receives it
    masks: bool = False  # whether a −inf logit masks a class (probability 0 exactly, zero gradient)

    def check(self, logits: Tensor, name: str = "logits") -> None:
        """Shape check beyond [`stochgrad.guard.check_logits`][stochgrad.guard.check_logits] (dtype, finiteness)."""

    @abc.abstractmethod
    def probs(self, logits: Tensor) -> Tensor:
        """The units' probabilities: ``σ(logits)`` or ``softmax(logits)`` over the last dimension."""

    @abc.abstractmethod
    def sample(self, probs: Tensor, lead=(), generator=None) -> Tensor:
        """Samples ``(*lead, *probs.shape)`` from one uniform per unit ([`stochgrad.sampling`][stochgrad.sampling])."""

    def uniform(self, shape, like: Tensor, generator=None) -> Tensor:
        """U[0,1) noise of ``shape`` = ``(..., *batch, *event)``, drawn with the event flattened so that a
        [`Sharded`][stochgrad.sampling.Sharded] generator splits along the batch (the dimension before the event)."""
        if self.event_dims == 1:
            return uniform(shape, like, generator)
        shape = tuple(shape)
        flat = (*shape[:-self.event_dims], math.prod(shape[-self.event_dims:]))
        return uniform(flat, like, generator).view(shape)

    @abc.abstractmethod
    def perturb(self, logits: Tensor, u: Tensor) -> Tensor:
        """``z = a + noise(u)``, ``u ~ U[0,1)`` of ``logits``' shape: the Gumbel-max / logistic trick."""

    @abc.abstractmethod
    def hard(self, z: Tensor) -> Tensor:
        """The sample a perturbed ``z`` selects: ``1[z > 0]`` or ``onehot(argmax z)``."""

    @abc.abstractmethod
    def soften(self, z: Tensor, temperature) -> Tensor:
        """The Concrete relaxation of ``hard(z)``: ``σ(z/τ)`` or ``softmax(z/τ)``."""

    @abc.abstractmethod
    def conditional(self, v: Tensor, h: Tensor, logits: Tensor) -> Tensor:
        """``z̃ ~ p(z | hard(z) = h)`` from uniforms ``v``, differentiable in ``logits``."""

    def conditional_noise(self, v: Tensor, h: Tensor, logits: Tensor, probs: Tensor | None = None) -> Tensor:
        """``z̃ − a`` of [`conditional`][stochgrad.distributions.Distribution.conditional] (Gumbel-Rao holds it fixed): finite where a class is masked. ``probs``:
        [`probs`][stochgrad.distributions.Distribution.probs] of the logits, where the caller has them already."""
        return self.conditional(v, h, logits) - logits

    @abc.abstractmethod
    def jacobian(self, p: Tensor, g: Tensor) -> Tensor:
        """The Jacobian of ``σ`` / ``softmax`` taken at the probabilities ``p`` (symmetric), applied to ``g`` of their
        shape: ``p(1−p)·g`` or ``p⊙g − p (p·g)``."""

    @abc.abstractmethod
    def log_prob(self, h: Tensor, logits: Tensor) -> Tensor:
        """``log P(h)`` summed over the units: ``(*lead, *batch)``."""

    @abc.abstractmethod
    def kl(self, q_logits: Tensor, p_logits: Tensor) -> Tensor:
        """``KL(q ‖ p)`` of the laws with logits ``q_logits`` ``(*batch, *event)`` and ``p_logits`` (broadcastable),
        summed over the units: ``(*batch)``."""

    @abc.abstractmethod
    def states(self, logits: Tensor) -> Tensor:
        """Every state of one example's units, ``(N, *event)``, in the dtype of ``logits``."""

    def flat(self, x: Tensor) -> Tensor:
        """``(..., *event)`` to ``(..., units·classes)``: the per-coordinate view baselines work on."""
        return x if self.event_dims == 1 else x.flatten(-self.event_dims)

    def __repr__(self) -> str:
        return self.name


class Bernoulli(Distribution):
    """Independent Bernoulli units: logits ``(*batch, n)``, unit ``i`` on with probability ``σ(a_i)``;
    samples ``(*lead, *batch, n)`` in {0, 1}.
    """

    name = "bernoulli"
    event_dims = 1

    # the functions themselves, not methods that call them: one Python frame less on every call's hot path
    probs = staticmethod(torch.sigmoid)
    sample = staticmethod(bernoulli)
    uniform = staticmethod(uniform)  # one unit dimension: the generic method's flattening is the identity

    def perturb(self, logits, u):
        return logits + logistic_from_uniform(u)

    def hard(self, z):
        # 1[z > 0] as sign(z) clamped at 0 in place (z = ±0: 0): no boolean buffer and no bool-to-float cast, as
        # (z > 0).to(dtype) makes. z is finite here (checked logits, eps-clamped logistic noise).
        return z.detach().sign().clamp_min_(0)

    def soften(self, z, temperature):
        return torch.sigmoid(z / temperature)

    def conditional(self, v, h, logits):
        return conditional_logistic(v, h, torch.sigmoid(logits))

    def conditional_and_slope(self, v: Tensor, z: Tensor, score: Tensor, one: Tensor) -> tuple[Tensor, Tensor]:
        """``z̃`` of [`conditional`][stochgrad.distributions.Bernoulli.conditional] and ``−∂z̃/∂a`` (unit by unit: ``z̃_i`` depends on ``a_i`` alone), from shared
        intermediates; ``z`` the perturbed logits that chose ``h = 1[z ≥ 0]``, ``score = h − σ(a)``, ``one`` a 0-dim 1.

        With ``q = |h − p|`` (the probability of the other value) and ``t = v/((1 − v)·q)``, Tucker et al.'s
        appendix formula is ``z̃ = ±log(1 + t)``, signed as ``z``; differentiating it gives ``p(1 − e^{−z̃})`` for
        ``h = 1`` and ``(1 − p)(1 − e^{z̃})`` for ``h = 0``, that is ``∂z̃/∂a = −expm1(−|z̃|)·(1 − q)``.
        ``v`` is in ``[0, 1)`` (``torch.rand``), so ``1 − v > 0``; ``q`` is clamped to the smallest normal number
        (a saturated unit: ``t`` may overflow to ``inf``, ``z̃`` then is ``±inf`` and its slope ``1 − q``). Three
        buffers of the inputs' size (``q``, ``w``, ``z̃``) where the expression's eleven ops each made one.
        """
        q = score.abs().clamp_min_(torch.finfo(score.dtype).tiny)
        w = torch.sub(one, v)
        torch.div(v, w, out=w).div_(q).log1p_()              # w = log(1 + v/((1 − v)·q)): the same ops, one buffer
        return w.copysign(z), w.neg_().expm1_().mul_(torch.sub(one, q, out=q))   # expm1(−w)·(1 − q), in place

    def jacobian(self, p, g):
        return (p * g).mul_(1 - p)   # p(1 − p)·g, in place on the fresh product

    def log_prob(self, h, logits):
        return log_prob(h, logits)

    def kl(self, q_logits, p_logits):
        # Σ σ(q)(log σ(q) − log σ(p)) + σ(−q)(log σ(−q) − log σ(−p)), with log σ(x) − log σ(−x) = x:
        # σ(q)(q − p) + log σ(−q) − log σ(−p)
        return (torch.sigmoid(q_logits) * (q_logits - p_logits) + F.softplus(p_logits) - F.softplus(q_logits)).sum(-1)

    def states(self, logits):
        return all_states(logits.shape[-1], logits)


class Categorical(Distribution):
    """One-hot categorical units; class ``k`` of unit ``i`` has probability ``softmax(a_i)_k``."""

    name = "categorical"
    event_dims = 2
    sample_dims = 2
    masks = True

    def check(self, logits, name="logits"):
        if logits.dim() < 2:
            raise ValueError(f"{name} of categorical units must have shape (*batch, n, K), got {tuple(logits.shape)}")
        if logits.shape[-1] < 2:
            raise ValueError(f"{name} of categorical units need K >= 2 classes in the last dimension, got shape "
                             f"{tuple(logits.shape)} (K = {logits.shape[-1]})")

    def probs(self, logits):
        return torch.softmax(logits, -1)

    def from_uniform(self, u: Tensor, probs: Tensor) -> Tensor:
        """Class indices by the inverse CDF, one uniform per unit: class ``k`` iff ``C_{k−1} < (1 − u)·C_K ≤ C_k``.

        ``u``: ``(*lead, *batch, n)`` in ``[0, 1)``; ``probs``: ``(*batch, n, K)``; returns ``(*lead, *batch, n)`` int64.
        Exact in law as far as the arithmetic allows, for any ``K`` and for masked classes: ``C`` is the running sum
        of the probabilities in float64 and the point is scaled by its own total ``C_K`` (not compared with 1), so a
        class of probability 0 is an empty interval (``C_{k−1} = C_k``) that no ``u`` selects, and the classes after
        the sum's rounding error keep their mass; ``u`` should be a float64 draw ([`uniform_for`][stochgrad.distributions.Categorical.uniform_for]): its 2⁻⁵³ grid,
        not float32's 2⁻²⁴, sets how finely the probabilities are resolved. Ordered so that for ``K = 2`` the sample
        is class 1 iff ``u < p_1/(p_0 + p_1)``: the Bernoulli unit's ``1[u < σ(a_1 − a_0)]`` (seed Eq. 2), noise for noise.
        """
        c = probs.detach().cumsum(-1, dtype=u.dtype)                             # (*batch, n, K)
        lead = u.shape[:u.dim() - (probs.dim() - 1)]
        w = u.unsqueeze(-1) if not lead else u.reshape(-1, *probs.shape[:-1]).movedim(0, -1).contiguous()
        # #{j: C_j < (1 − u)·C_K}
        index = torch.searchsorted(c, (1 - w) * c[..., -1:])   # ≤ K − 1: C_{K−1} = C_K ≥ (1 − u)·C_K
        return index.squeeze(-1) if not lead else index.movedim(-1, 0).reshape(*lead, *probs.shape[:-1])

    @staticmethod
    def uniform_for(shape, probs: Tensor, generator=None) -> Tensor:
        """The float64 U[0, 1) draw of [`from_uniform`][stochgrad.distributions.Categorical.from_uniform] (float32 where the device has no float64)."""
        return uniform(shape, probs, generator, wide(probs.device))

    def sample(self, probs, lead=(), generator=None):
        u = self.uniform_for((*lead, *probs.shape[:-1]), probs, generator)
        return one_hot(self.from_uniform(u, probs), probs.shape[-1], probs)

    def perturb(self, logits, u):
        return logits - torch.log(-torch.log(u))   # a + Gumbel (gumbel_from_uniform), one op less

    def hard(self, z):
        return one_hot(z.argmax(-1), z.shape[-1], z)

    def soften(self, z, temperature):
        return torch.softmax(z / temperature, -1)

    def conditional(self, v, h, logits):
        return conditional_gumbel(v, h, logits)

    def conditional_noise(self, v, h, logits, probs=None):
        return conditional_gumbel_noise(v, h, torch.softmax(logits, -1) if probs is None else probs)

    def jacobian(self, p, g):
        pg = p * g
        return pg.addcmul_(p, pg.sum(-1, keepdim=True), value=-1)   # p⊙g − p (p·g), in place on the fresh product

    def log_prob(self, h, logits):
        # log p clamped to the lowest finite number: a masked class's −inf times h = 0 would be NaN
        return (h * torch.log_softmax(logits, -1).clamp_min(torch.finfo(logits.dtype).min)).sum((-2, -1))

    def kl(self, q_logits, p_logits):
        log_q = torch.log_softmax(q_logits, -1)
        return (log_q.exp() * (log_q - torch.log_softmax(p_logits, -1))).sum((-2, -1))

    def states(self, logits):
        n, K = logits.shape[-2:]
        if n * math.log2(K) > 20 + 1e-9:
            raise ValueError(f"exact enumeration needs K^n <= 2^20 states; got n = {n} units of K = {K} classes")
        if K ** n * n * K > MAX_STATE_ENTRIES:  # the one-hot states, (K^n, n, K): K matters, not only K^n
            raise ValueError(f"exact enumeration of n = {n} units of K = {K} classes needs K^n·n·K = {K ** n * n * K:,} "
                             f"one-hot entries, more than {MAX_STATE_ENTRIES:,} ({MAX_STATE_ENTRIES * 4 >> 20} MiB in "
                             "float32): use fewer classes or units, or a sampling estimator")
        radix = K ** torch.arange(n - 1, -1, -1, device=logits.device)
        digits = torch.arange(K ** n, device=logits.device).unsqueeze(-1) // radix % K   # (K^n, n)
        return one_hot(digits, K, logits)


class CategoricalIndex(Categorical):
    """[`Categorical`][stochgrad.distributions.Categorical] units whose samples are class indices ``(*lead, *batch, n)``
    (int64): what ``f`` receives and what [`sample`][stochgrad.distributions.CategoricalIndex.sample] returns. The law,
    the sampler (the same noise gives the same classes) and every other answer are the one-hot law's (``states`` too:
    [`exact_expectation`][stochgrad.exact.exact_expectation] hands ``f`` each one-hot state's indices)."""

    name = "categorical_index"
    sample_dims = 1

    def sample(self, probs, lead=(), generator=None):
        return self.from_uniform(self.uniform_for((*lead, *probs.shape[:-1]), probs, generator), probs)

    def log_prob(self, h, logits):
        log_p = torch.log_softmax(logits, -1).clamp_min(torch.finfo(logits.dtype).min)
        return log_p.expand(*h.shape, logits.shape[-1]).gather(-1, h.unsqueeze(-1)).squeeze(-1).sum(-1)


BERNOULLI = Bernoulli()
CATEGORICAL = Categorical()
CATEGORICAL_INDEX = CategoricalIndex()
DISTRIBUTIONS = {d.name: d for d in (BERNOULLI, CATEGORICAL, CATEGORICAL_INDEX)}


def get_distribution(distribution) -> Distribution:
    """``None`` or a name (``"bernoulli"``, ``"categorical"``, ``"categorical_index"``) or a [`Distribution`][stochgrad.distributions.Distribution] to the distribution."""
    if distribution is None:
        return BERNOULLI
    if isinstance(distribution, Distribution):
        return distribution
    if isinstance(distribution, str) and distribution in DISTRIBUTIONS:
        return DISTRIBUTIONS[distribution]
    raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")


def resolve(logits, distribution=None) -> tuple[Tensor, Distribution]:
    """``expect``'s second argument to ``(logits, distribution)``.

    Accepts a logits tensor (Bernoulli unless ``distribution`` says otherwise), a
    ``torch.distributions.Bernoulli``, or a ``torch.distributions.OneHotCategorical`` (its normalised
    logits ``(*batch, n, K)``, through which the gradient reaches the tensor it was built from).
    """
    td = torch.distributions
    if isinstance(logits, (td.Bernoulli, td.OneHotCategorical)):
        dist = BERNOULLI if isinstance(logits, td.Bernoulli) else CATEGORICAL
        if distribution is not None and get_distribution(distribution) is not dist:
            raise ValueError(f"distribution={distribution!r} contradicts the {type(logits).__name__} passed as logits")
        return logits.logits, dist
    if isinstance(logits, td.Distribution):
        raise TypeError(f"logits must be a tensor, a torch.distributions.Bernoulli or OneHotCategorical; got "
                        f"{type(logits).__name__}")
    return logits, get_distribution(distribution)


def as_categorical(f, logits: Tensor):
    """A Bernoulli problem as the K = 2 categorical one: logits ``[0, a]`` per unit, ``f`` of the class-1 column.

    ``(f, a)`` with ``a`` ``(*batch, n)`` → ``(f2, a2)`` with ``a2`` ``(*batch, n, 2)``; ``a2`` is built from
    ``a`` differentiably, so a gradient attached to ``a2`` reaches ``a`` as ``∂/∂a = ∂/∂a2[..., 1]``.
    """
    a2 = torch.stack([torch.zeros_like(logits), logits], -1)
    return (lambda h: f(h[..., 1])), a2
