"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): unbiased control variates built on the
Concrete relaxation, whose own parameters are tuned online to minimise the estimator's variance.

With ``z = a + logistic(u)``, ``b = 1[z ≥ 0]``, ``z̃ ~ p(z | b)`` (conditional reparameterisation) and a
control variate ``c(z)``::

    ĝ = [f(b) − c(z̃)]·(b − σ(a)) + ∂_a c(z) − ∂_a c(z̃)                  (Grathwohl et al., Eq. 6)

is unbiased for any ``c``. REBAR: ``c(z) = η·f(σ(z/λ))``; RELAX adds a small network ``r_ρ(σ(z/λ))``.
Because ``E[ĝ]`` does not depend on ``(η, λ, ρ)``, the gradient of ``E[ĝ²]`` is that of the variance:
every ``tune_every``-th training call takes one Adam step on it (``tune=True``; Grathwohl et al. Alg. 2
tune every step, which costs a second-order backward pass through ``f`` each time). The defaults tune as far
per call as one step per call at ``lr = 1e-2`` did, at a fraction of the second-order passes: REBAR every
8th call at ``8e-2``, RELAX every 4th at ``4e-2`` (its network needs more steps: every 8th left its variance
3–17% higher after 100 calls, depending on the seed; REBAR every 16th, 1–7%); tests/test_modern.py compares
the variance after tuning. Costs 3 evaluations of ``f`` per sample (at ``b``, ``σ(z/λ)``, ``σ(z̃/λ)``; the last
two stacked into one call) and one backward pass for ``∂_a c``: for Bernoulli units through ``f`` alone, to the
relaxed points, chained by hand (``∂z̃/∂a`` in closed form,
:meth:`~stochgrad.distributions.Bernoulli.conditional_and_slope`; RELAX's network differentiated by hand); for
categorical units through the conditional sample's graph. On a tuning call the Bernoulli path writes the step's
gradient ``∂ mean‖ĝ‖²/∂(η, λ, ρ)`` out by hand too (:meth:`REBAR._tuning_gradient`): ``η`` and ``ρ`` need no
second-order pass through ``f``, ``log λ`` one Hessian-vector product (the pass that makes ``∂f`` is then created
with a graph for it); the categorical path differentiates the formula twice by autograd.

Only the temperature's gradient needs that second-order pass, and it is half the cost of a tuning step at 1000 units
× 1024 examples. ``temperature_every`` takes it on every that-many-th tuning step (counted by the calls,
so the phase resumes from ``state_dict``) and leaves it 0 on the others, where η and ρ take their full step and
Adam's decaying moments carry ``log λ`` on: per ``k`` tuning steps the temperature then moves about ``√k``, not ``k``,
steps' worth. RELAX takes it every 2nd step (every 8th call), which left the variance after tuning within the noise
of every step's (tests/test_modern.py); REBAR, whose temperature is half of what it tunes, every step. The saving
is the Bernoulli path's: on categorical units autograd's double backward still runs through ``f``'s backward for η.

The tuning is :class:`~stochgrad.estimators.base.Tuned`'s, shared with ``double_cv`` and ``rodeo``: the
tuned quantities are estimator *state*, not model parameters: one vector buffer ``theta`` =
``[η, log λ, ρ]`` and Adam's moments beside it, out of a user's ``model.parameters()``, resumed exactly by
``state_dict``, averaged over ranks under ``torch.distributed``, and guarded: a call with NaN/inf losses
changes nothing. RELAX's network ``r_ρ`` (``n → hidden → 1``, tanh; 10 hidden units by default, as the
authors' toy experiment, duvenaud/relax ``rebar_toy.py`` ``Q_func``: one tanh layer of 10 units on the relaxed
sample, added to ``f(σ(z/λ))``) is initialised from the call's generator (its last layer at zero: it starts as
REBAR), so runs with the same seed repeat exactly.

Categorical units (Tucker et al. 2017 §3.3 and appendix; Grathwohl et al. 2018 §3.3): ``z = a + Gumbel``,
``b = onehot(argmax z)``, ``z̃`` the conditional Gumbel given ``b``, ``softmax(·/λ)`` for ``σ(·/λ)`` and the
score ``onehot − softmax(a)``: the same formula through :mod:`stochgrad.distributions`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.overrides import has_torch_function

from ..distributions import BERNOULLI, conditional_logistic  # noqa: F401  (conditional_logistic: public here)
from ..gradient import attach_gradient
from ..sampling import lead, logistic_from_uniform, over_samples
from .base import Tuned, check_count, check_positive


try:  # the engine call that torch.autograd.grad makes once it has normalised its arguments (torch >= 2.3)
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # pragma: no cover
    _engine_run_backward = None

_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # g·σ(1 − σ) from σ, in one op (differentiable)
_sigmoid_backward_ = torch.ops.aten.sigmoid_backward.grad_input  # the same into grad_input= (may be g itself)


def _rows(x_t: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """``x_tᵀ w`` for ``x_t`` ``(h, m)`` and ``w`` ``(h, n)``: ``(m, n)``, contiguous; as ``(wᵀ x_t)ᵀ`` copied when it has
    many rows and few columns (``n ≤ 64 < m``), a shape whose direct product is several times slower (MKL, one thread,
    ``m = 2048, n = 10``); contiguous, so that the elementwise ops after it stay vectorised. ``out``: written there."""
    m, n = x_t.shape[1], w.shape[1]
    if n < m and n <= 64:
        r = (w.t() @ x_t).t()
        return r.contiguous() if out is None else out.copy_(r)
    return torch.mm(x_t.t(), w, out=out)


def _vjp(out: Tensor, inp: Tensor, grad_out: Tensor, create_graph: bool = False, allow_unused: bool = False):
    """``torch.autograd.grad(out, inp, grad_out, create_graph=..., allow_unused=...)[0]``, for plain tensors handed to the
    engine call it ends in: its argument handling costs ~70k instructions, a third of the call, at 10 units. Tensor
    subclasses (``__torch_function__``) and older torch take the public function."""
    if _engine_run_backward is None or has_torch_function((out, inp, grad_out)):
        return torch.autograd.grad(out, inp, grad_out, create_graph=create_graph, allow_unused=allow_unused)[0]
    return _engine_run_backward((out,), (grad_out,), create_graph, create_graph, (inp,), allow_unused, False)[0]


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """``Σ x·y`` over every element (0-dim), without a temporary of their size when they are contiguous."""
    return torch.vdot(x.reshape(-1), y.reshape(-1))


MASKED = -1e4  # a masked class's perturbed logit in the relaxation: softmax weight exp(−1e4/λ), 0 in float32 for λ < 90


class REBAR(Tuned):
    """``rebar`` (Tucker et al. 2017): the control variate ``c(z) = η·f(σ(z/λ))`` in Grathwohl et al.'s
    Eq. 6 (module docstring); ``η`` and ``λ`` tuned online to minimise the variance. Unbiased;
    3 evaluations per sample.
    """

    name = "rebar"
    description = "REBAR (Tucker 2017): [f(b) - η f(σ(z~/λ))]·(b - σ(a)) + η ∂f(σ(z/λ)) - η ∂f(σ(z~/λ)); η, λ tuned"
    unbiased = True
    cost = "3S"
    distributions = ("bernoulli", "categorical")

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, tune: bool = True, lr: float = 8e-2,
                 tune_every: int = 8, temperature_every: int = 1):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
            raise ValueError(f"eta must be a finite number, got {eta!r}")
        temperature = check_positive(temperature, "temperature")
        super().__init__([eta, math.log(temperature)], tune, lr, tune_every)  # theta = [η, log λ, ρ...]
        self.temperature_every = check_count(temperature_every, "temperature_every")

    @property
    def eta(self) -> torch.Tensor:
        return self.theta[0]

    @property
    def temperature(self) -> torch.Tensor:
        return self.theta[1].exp()

    def evaluations(self, n, samples=1):
        return 3 * samples

    def sizes(self) -> list[int]:
        """How ``theta`` splits into the pieces :meth:`constants` reads: ``[η, log λ]`` (RELAX adds its network)."""
        return [1, 1]

    def pieces(self, tuning: bool, temperature: bool = True) -> tuple:
        """``theta`` split by :meth:`sizes` (views, detached); on a tuning call, leaves that require grad (``log λ``
        only if ``temperature``: a step that leaves its gradient 0)."""
        parts = self.theta.detach().split(self.sizes())
        if not tuning:
            return parts
        return tuple(x.detach().requires_grad_(temperature or i != 1) for i, x in enumerate(parts))

    def tunes_temperature(self) -> bool:
        """Whether this call's tuning step (if it tunes) takes the temperature's gradient: every
        ``temperature_every``-th tuning step, counted by the calls (so it resumes from ``state_dict``)."""
        return self._calls // self.tune_every % self.temperature_every == 0

    def constants(self, parts: tuple) -> tuple:
        """What the formula reads of ``theta``'s :meth:`pieces`: ``(η, 1/λ, η/λ, 1, *network)`` (0-dim tensors in
        ``theta``'s dtype and device: no Python number enters an op); differentiable on a tuning call, else cached
        between tuning steps (:meth:`fixed`)."""
        eta, inv_lam = parts[0].view(()), parts[1].view(()).neg().exp()
        return eta, inv_lam, eta * inv_lam, eta.new_ones(())

    def refresh(self, parts: tuple, k: tuple) -> None:
        """Rewrites :meth:`constants` ``k`` of ``parts`` in place, after ``theta`` (which ``parts`` view) changed: the
        same ops, so the same values (a test); what is a view of ``theta`` or of another constant follows by itself."""
        eta, inv_lam, eta_inv_lam = k[:3]
        torch.neg(parts[1].view(()), out=inv_lam).exp_()
        torch.mul(eta, inv_lam, out=eta_inv_lam)

    def fixed(self) -> tuple:
        """:meth:`constants` of the current ``theta``, built once per ``theta`` tensor (a move or a resize makes a new
        one) and rewritten in place (:meth:`refresh`) when it changed in place (a tuning step, a load), so a call that
        does not tune reads no slices of it and one after a step allocates nothing."""
        theta = self.theta
        try:
            version = theta._version
        except RuntimeError:  # an inference tensor keeps no version: no cache
            return self.constants(self.pieces(False))
        cache = self.__dict__.get("_fixed")
        if cache is None or cache[0] is not theta:
            parts = self.pieces(False)
            cache = self.__dict__["_fixed"] = [theta, version, parts, self.constants(parts)]
        elif cache[1] != version:
            self.refresh(cache[2], cache[3])
            cache[1] = version
        return cache[3]

    def network(self, soft: Tensor, k: tuple, slope: bool):
        """The part of the control variate beyond ``η·f``: ``(r(soft) (..., *batch), ∂r/∂soft / λ (..., *batch, n) or
        None, what :meth:`network_backward` reads)``, or ``(None, None, None)`` for REBAR; ``soft`` ``(..., *batch, n)``
        flattened by the distribution."""
        return None, None, None

    def network_backward(self, saved, k: tuple, up_slope: Tensor, up_value: Tensor, soft_grad: bool = True):
        """Reverse pass through :meth:`network` by hand, given the upstream gradients of its outputs: ``up_slope``
        (of ``∂r/∂soft / λ``, the shape of ``soft``) and ``up_value`` (of ``r`` at the second half of its rows, that
        is at ``σ(z̃/λ)``). Returns ``(∂/∂soft (the shape of soft), or None: none wanted (not ``soft_grad``) or none
        for REBAR, [∂/∂ρ pieces])``. It may write ``∂/∂soft`` into ``up_slope``."""
        return None, []

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        a0 = logits.detach()
        lead_ = lead(samples)  # one sample: no sample dimension (the fast path)
        u, v = dist.uniform((2, *lead_, *logits.shape), logits, generator).unbind(0)
        if not logits.requires_grad or a0.numel() == 0:  # no gradient wanted, or an empty batch: no tuning
            if logits.requires_grad:
                self.join(a0, dist.flat(a0).shape[-1], generator)   # (under torch.distributed: the ranks' collectives)
            value = over_samples(f(dist.hard(dist.perturb(a0, u))), samples)
            return attach_gradient(value, logits, torch.zeros_like(a0))
        tuning = self.begin(a0, dist.flat(a0).shape[-1], generator)
        temperature = tuning and self.tunes_temperature()
        if dist is BERNOULLI:
            grad, f_b, step = self._bernoulli(f, a0, u, v, samples, tuning, temperature)
            self.check_losses(f_b)
            if tuning:
                self._step(step, grad.numel() // grad.shape[-1])
        else:
            grad, f_b, theta = self._by_autograd(f, a0, u, v, samples, tuning, dist, temperature)
            self.check_losses(f_b)
            if tuning:
                self.tune_on(grad, theta, dist.event_dims)
        self.end()
        return attach_gradient(over_samples(f_b, samples), logits, grad.detach())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", temperature_every={self.temperature_every}"

    def _bernoulli(self, f, a0, u, v, samples, tuning, temperature=True):
        """Bernoulli units: ``∂_a c`` by one backward pass through ``f`` alone, to the relaxed points
        ``σ([z, z̃]/λ)``, chained by hand: ``∂z/∂a = 1``, ``∂z̃/∂a`` in closed form
        (:meth:`~stochgrad.distributions.Bernoulli.conditional_and_slope`), ``∂σ(x/λ)/∂x = σ(1 − σ)/λ``, and RELAX's
        network differentiated by hand (:meth:`network`). Returns ``(ĝ, f(b), ∂ mean‖ĝ‖²/∂theta on a tuning call
        (:meth:`_tuning_gradient`; without the temperature's gradient unless ``temperature``: no graph of ``∂f``, no
        Hessian-vector product) else None)``. Intermediates of our own are overwritten in place where nothing reads
        them again (fewer full-size temporaries); ``u`` and ``v`` are the caller's fresh noise."""
        p = torch.sigmoid(a0)
        z = logistic_from_uniform(u).add_(a0)                         # a + logistic(u)
        eta, inv_lam, eta_inv_lam, one, *_ = k = self.fixed()
        b = torch.ge(z, 0, out=u)                          # 1[z ≥ 0] into u (not read again): 1[z > 0] but for z = 0
        score = torch.sub(b, p, out=p) if samples == 1 else b - p   # into p's buffer (not read again) when it fits
        zt, neg_slope = BERNOULLI.conditional_and_slope(v, z, score, one)
        xt = torch.stack([z, zt]).mul_(inv_lam)                       # [z, z̃]/λ: (2, *lead, *batch, n)
        temperature = tuning and temperature
        x = (z, zt) if temperature else None                          # (else freed here: a lower peak)
        del z, zt
        with torch.enable_grad():
            soft = xt.sigmoid_().requires_grad_(True)                 # σ([z, z̃]/λ), in place
            c = f(soft)                                               # (2, *lead, *batch)
            ones = one.expand(c.shape) if c.dtype == one.dtype else torch.ones_like(c)
            d_f = _vjp(c, soft, ones, create_graph=temperature)       # ∂f/∂σ (a graph for the temperature's HVP)
            f_b = f(b)                                                # (*lead, *batch): the value
        s, c, d_f_ = soft.detach(), c.detach(), d_f.detach()
        r, d_r, saved = self.network(s, k, True)
        # ∂c/∂x for x = [z, z̃]: (η ∂f/∂σ + ∂r/∂σ)·σ(1 − σ)/λ (d_r comes scaled by 1/λ; ours, so written in place)
        slope = d_f_ * eta_inv_lam if d_r is None else d_r.addcmul_(d_f_, eta_inv_lam)
        d_x = _sigmoid_backward_(slope, s, grad_input=slope)
        d_z, d_zt = d_x.unbind(0)
        d_c = torch.addcmul(d_z, d_zt, neg_slope)                     # ∂_a c(z) − ∂_a c(z̃)
        c_zt = c[1] * eta if r is None else torch.addcmul(r[1], c[1], eta)
        grad = d_c.addcmul_((f_b.detach() - c_zt).unsqueeze(-1), score)
        if samples > 1:
            grad = grad.mean(0)
        if not tuning:
            return grad, f_b, None
        return grad, f_b, self._tuning_gradient(grad, score, neg_slope, x, soft, d_f, d_x, c, k, saved, samples)

    def _tuning_gradient(self, grad, score, neg_slope, x, soft, d_f, d_x, c, k, saved, samples) -> Tensor:
        """``∂ mean‖ĝ‖²/∂(η, log λ, ρ)`` for :meth:`_bernoulli`'s ĝ, by hand (the reverse pass that autograd's double
        backward through the whole formula took, Grathwohl et al. Alg. 2): ``η`` enters linearly given ``f`` and
        ``∂f``, ``ρ`` only through the network (:meth:`network_backward`); only ``log λ`` moves the relaxed points
        ``σ(x/λ)``, so only it needs ``∂f``'s derivative: one Hessian-vector product through ``f``. ``x`` ``None``: a
        step without the temperature (:meth:`tunes_temperature`), whose gradient is then 0 and none of its terms is
        computed.

        With ``W = ∂L/∂(∂c/∂x)`` (``[G, G·(−∂z̃/∂a)]``, ``G = ∂L/∂ĝ``), ``A = W·σ'``, ``γ = ∂L/∂c(z̃) = −⟨G, b − σ(a)⟩``,
        ``S = η∂f/∂σ + ∂r/∂σ``, ``d_x = σ'·S/λ`` (``∂c/∂x``) and ``∂σ/∂log λ = −σ'·x/λ``::

            ∂L/∂η     = ⟨A, ∂f/∂σ⟩/λ + γ·f(σ(z̃/λ))
            ∂L/∂log λ = −⟨W, d_x⟩ − ⟨x/λ, W·d_x·(1 − 2σ) + σ'·(η/λ·H A + ∂_σ(r, ∂r/∂σ) + [0, γη ∂f/∂σ])⟩

        (``H`` the Hessian of ``f`` at the relaxed points; ``∂_σ(r, ∂r/∂σ)`` the network's reverse pass).
        """
        eta, inv_lam, eta_inv_lam = k[:3]
        s = soft.detach()
        q = grad  # ∂L/∂ĝ_s (L = mean over examples of ‖ĝ‖²) up to the factor 2/(examples·samples), applied at the end
        scale = 2 / (grad.numel() // grad.shape[-1] * samples)
        if x is not None:
            wd = d_x.mul_(q)                                          # W·d_x (d_x is not read again)
            wd[1].mul_(neg_slope)
            sum_wd = wd.sum()
            z, zt = x                                                 # x = [z, z̃]
            wd[0].mul_(z)
            wd[1].mul_(zt)                                            # x·W·d_x
            lam_part = torch.sub(wd.sum(), _dot(wd, s), alpha=2).mul_(inv_lam).add_(sum_wd)   # ⟨W, d_x⟩ + ⟨x/λ, W·d_x·(1 − 2σ)⟩
        a = _sigmoid_backward_(q, s, grad_input=d_x)                  # A = W·σ' (into d_x's buffer, now free)
        a[1].mul_(neg_slope)
        neg_gamma = torch.linalg.vecdot(score, q)                    # −γ: (*lead, *batch)
        d_eta = _dot(a, d_f.detach()).mul_(inv_lam).sub_(_dot(neg_gamma, c[1]))
        if x is None:   # no temperature this step: η and ρ only
            _, d_net = self.network_backward(saved, k, a, neg_gamma, soft_grad=False)
            return torch.cat([d_eta.view(1), d_eta.new_zeros(1), *d_net]).mul_(scale)
        # H A, f's Hessian-vector product (None: ∂f/∂σ does not depend on σ, or needs no graph at all: f linear in σ)
        hv = _vjp(d_f, soft, a, allow_unused=True) if d_f.requires_grad else None
        up_soft, d_net = self.network_backward(saved, k, a, neg_gamma)  # (may overwrite a: not read again)
        rest = up_soft if hv is None else hv * eta_inv_lam if up_soft is None else up_soft.addcmul_(hv, eta_inv_lam)
        if rest is None:
            rest = torch.zeros_like(s)
        rest[1].addcmul_(d_f.detach()[1], (neg_gamma * eta).unsqueeze(-1), value=-1)
        br = _sigmoid_backward_(rest, s, grad_input=rest)            # σ'·(...)
        d_log_lam = _dot(z, br[0]).add_(_dot(zt, br[1])).mul_(inv_lam).add_(lam_part).neg_()
        return torch.cat([d_eta.view(1), d_log_lam.view(1), *d_net]).mul_(scale)

    def _by_autograd(self, f, a0, u, v, samples, tuning, dist, temperature=True):
        """Any distribution (categorical units): ``∂_a c`` by autograd through the conditional sample's graph (``log λ``
        a leaf that requires grad on a tuning call only if ``temperature``)."""
        probs = dist.probs(a0)
        theta = self.pieces(tuning, temperature)
        with torch.enable_grad():
            eta, inv_lam, *_ = k = self.constants(theta)
            a = a0.requires_grad_(True)
            z = dist.perturb(a, u)
            b = dist.hard(z.detach())
            # a masked class (a = −inf) enters the relaxation at MASKED, not −inf: the temperature's gradient multiplies
            # x by 0 there, and 0·inf is NaN. c stays one function of z, so the estimate stays unbiased.
            x = torch.stack([z, dist.conditional(v, b, a)]).clamp_min(MASKED)
            f_b = f(b)
            soft = dist.soften(x, 1 / inv_lam)
            c = eta * f(soft)
            r, _, _ = self.network(dist.flat(soft), k, False)
            if r is not None:
                c = c + r
            c_z, c_zt = c.unbind(0)
            (d_c,) = torch.autograd.grad((c_z - c_zt).sum(), a, create_graph=tuning)
            centred = (f_b.detach() - c_zt).reshape(*c_zt.shape, *([1] * dist.event_dims))
            grad = over_samples(centred * (b - probs), samples) + (d_c if samples == 1 else d_c / samples)
        return grad, f_b, theta


class RELAX(REBAR):
    """``relax`` (Grathwohl et al. 2018): REBAR's control variate plus a small network ``r_ρ(σ(z/λ))``,
    all tuned online. Unbiased; 3 evaluations per sample.
    """

    name = "relax"
    description = "RELAX (Grathwohl 2018): REBAR's control variate plus a learned network r(σ(z/λ)), all tuned"

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, hidden: int = 10, tune: bool = True,
                 lr: float = 4e-2, tune_every: int = 4, temperature_every: int = 2):
        super().__init__(eta, temperature, tune, lr, tune_every, temperature_every)
        self.hidden = check_count(hidden, "hidden")

    def state_meaning(self) -> dict:
        return {**super().state_meaning(), "hidden": self.hidden}   # how theta's network part is cut

    def units(self) -> int:
        """The units the network takes (0 before first use): ``theta`` = [η, log λ, W1 (h·n), b1 (h), w2 (h), b2]."""
        return max(0, (self.theta.numel() - 3 - 2 * self.hidden) // self.hidden)

    def prepare(self, n, like, generator):
        if self.theta.numel() > 2:
            if self.units() != n:
                raise ValueError(f"relax's surrogate takes {self.units()} units but got {n}: keep one estimator "
                                 "object per stochastic site")
            return
        h = self.hidden
        first = self.draw(h * n + h, 1 / math.sqrt(n), like, generator)
        self.grow(torch.cat([first, first.new_zeros(h + 1)]))  # last layer 0: starts as REBAR

    def sizes(self):
        h = self.hidden
        return [1, 1, h * self.units(), h, h, 1]

    def constants(self, parts):
        """REBAR's, then the network's in the form :meth:`network` reads: ``tanh(x) = 2σ(2x) − 1`` (σ is several times
        faster than tanh on a CPU), so ``2W1`` (and its transpose), ``2b1`` (column, row), ``2w2``, ``b2 − Σw2``, ``4w2``
        (column, row), ``W1/λ`` (and its transpose)."""
        w1, b1, w2, b2 = parts[2:]
        eta, inv_lam, eta_inv_lam, one = super().constants(parts)
        w1 = w1.view(self.hidden, -1)
        w1_2, b1_2, w2_4, w1_lam = w1 * 2, b1 * 2, w2 * 4, w1 * inv_lam
        return (eta, inv_lam, eta_inv_lam, one, w1_2, w1_2.t(), b1_2.view(-1, 1), b1_2, w2 * 2, b2 - w2.sum(),
                w2_4.view(-1, 1), w2_4, w1_lam, w1_lam.t())

    def refresh(self, parts, k):
        super().refresh(parts, k)
        w1, b1, w2, b2 = parts[2:]
        w1 = w1.view(self.hidden, -1)
        torch.mul(w1, 2, out=k[4])
        torch.mul(b1, 2, out=k[7])
        torch.mul(w2, 2, out=k[8])
        torch.sub(b2, w2.sum(), out=k[9])
        torch.mul(w2, 4, out=k[11])
        torch.mul(w1, k[1], out=k[12])

    def network(self, soft, k, slope):
        """``r(σ) = w2·tanh(W1 σ + b1) + b2`` and, if ``slope``, ``∂r/∂σ / λ = (W1/λ)ᵀ (w2 ⊙ (1 − tanh²))``, by hand, with
        ``tanh(x) = 2g − 1``, ``g = σ(2x)``, ``1 − tanh² = 4g(1 − g)``. Many rows (``m > n``): the hidden layer is
        computed ``(hidden, m)`` (:func:`_rows`)."""
        w1_2, w1_2t, b1_2c, b1_2r, w2_2, b2_eff, w2_4c, w2_4r, w1_lam, w1_lam_t = k[4:]
        flat = soft.reshape(-1, soft.shape[-1])                                       # (m, n)
        if flat.shape[0] > flat.shape[1]:
            g_t = torch.addmm(b1_2c, w1_2, flat.t()).sigmoid_()                       # (hidden, m)
            r = torch.addmv(b2_eff, g_t.t(), w2_2).view(soft.shape[:-1])              # w2·(2g − 1) + b2
            if not slope:
                return r, None, None
            y_t = _sigmoid_backward(w2_4c, g_t)                                       # w2 ⊙ (1 − tanh²)
            return r, _rows(y_t, w1_lam).view(soft.shape), (flat, g_t, y_t, True)
        g = torch.addmm(b1_2r, flat, w1_2t).sigmoid_()                                # (m, hidden)
        r = torch.addmv(b2_eff, g, w2_2).view(soft.shape[:-1])
        if not slope:
            return r, None, None
        y = _sigmoid_backward(w2_4r, g)
        return r, (y @ w1_lam).view(soft.shape), (flat, g, y, False)

    def network_backward(self, saved, k, up_slope, up_value, soft_grad=True):
        """The reverse pass of :meth:`network` by hand (``h = tanh(W1 σ + b1)``, ``y = w2 ⊙ (1 − h²)``,
        ``r = w2·h + b2``, ``∂r/∂σ / λ = y W1/λ``): with ``P = (W1/λ) A`` for the upstream ``A`` of the slope and ``γ``
        of ``r`` (second half of the rows), ``∂pre = y ⊙ (γ − 2 h P)``, ``∂W1 = ∂preᵀσ + yᵀA/λ``, ``∂b1 = Σ ∂pre``,
        ``∂w2 = Σ P ⊙ (1 − h²) + hᵀγ``, ``∂b2 = Σ γ``, ``∂σ = ∂pre W1``. ``up_value`` is ``−γ``; in ``g = (1 + h)/2``."""
        w1_2, w1_lam, inv_lam = k[4], k[12], k[1]
        flat, g_t, y_t, transposed = saved
        if not transposed:                                                            # (m, hidden) from network
            g_t, y_t = g_t.t(), y_t.t()
        up = up_slope.reshape(flat.shape)
        neg_gamma = up_value.reshape(-1)
        half = g_t.shape[1] // 2                                                      # rows at σ(z̃/λ)
        p_t = w1_lam @ up.t()                                                         # P: (hidden, m)
        sum_ng = neg_gamma.sum()
        d_w2 = torch.addmv(_sigmoid_backward(p_t, g_t).sum(1), g_t[:, half:], neg_gamma, beta=4, alpha=-2).add_(sum_ng)
        d_half = torch.sub(p_t, g_t * p_t, alpha=2)                                   # −h·P
        d_half[:, half:].sub_(neg_gamma, alpha=0.5)
        d_half.mul_(y_t)                                                              # ∂pre / 2: (hidden, m)
        d_w1 = torch.addmm(torch.mm(y_t, up).mul_(inv_lam), d_half, flat, alpha=2)
        d_soft = _rows(d_half, w1_2, out=up).view(up_slope.shape) if soft_grad else None   # into A's buffer: read above
        return d_soft, [d_w1.view(-1), d_half.sum(1).mul_(2), d_w2, sum_ng.neg().view(1)]

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, units={self.units()}, " + super().extra_repr()
