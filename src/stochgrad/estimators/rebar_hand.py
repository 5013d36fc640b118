"""REBAR and RELAX on Bernoulli units, chained by hand: the same numbers as
[`REBAR.formula`][stochgrad.estimators.rebar.REBAR.formula] (Grathwohl et al. 2018, Eq. 6; tests/test_modern.py compares the estimate
and the tuning step), about twice as fast at a thousand units.

Where the formula lets autograd differentiate through the conditional sample's graph, this form runs one backward
pass through ``f`` alone, to the relaxed points ``σ([z, z̃]/λ)``, and chains the rest by hand: ``∂z/∂a = 1``,
``∂z̃/∂a`` in closed form ([`conditional_and_slope`][stochgrad.distributions.Bernoulli.conditional_and_slope]),
``∂σ(x/λ)/∂x = σ(1 − σ)/λ``, and RELAX's network ``r = w2·tanh(W1 σ + b1) + b2`` differentiated by hand
([`network_backward`][stochgrad.estimators.rebar_hand.network_backward]). On a tuning call the step's gradient ``∂ mean‖ĝ‖²/∂(η, log λ, ρ)`` is written out too
([`tuning_gradient`][stochgrad.estimators.rebar_hand.tuning_gradient]): ``η`` and ``ρ`` need no second-order pass through ``f``, ``log λ`` one Hessian-vector
product. Intermediates of our own are overwritten in place where nothing reads them again.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import BERNOULLI
from ..sampling import logistic_from_uniform


def vjp(out: Tensor, inp: Tensor, grad_out: Tensor, create_graph: bool = False, allow_unused: bool = False):
    """``∂⟨out, grad_out⟩/∂inp`` (``None`` where ``allow_unused`` and unused): one backward pass, the only route
    this form takes through ``f``."""
    return torch.autograd.grad(out, inp, grad_out, create_graph=create_graph, allow_unused=allow_unused)[0]


def _rows(x_t: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """``x_tᵀ w`` for ``x_t`` ``(h, m)`` and ``w`` ``(h, n)``: ``(m, n)``, contiguous; as ``(wᵀ x_t)ᵀ`` copied when it has
    many rows and few columns (``n ≤ 64 < m``), a shape whose direct product is several times slower (MKL, one thread,
    ``m = 2048, n = 10``); contiguous, so that the elementwise ops after it stay vectorised. ``out``: written there."""
    m, n = x_t.shape[1], w.shape[1]
    if n < m and n <= 64:
        r = (w.t() @ x_t).t()
        return r.contiguous() if out is None else out.copy_(r)
    return torch.mm(x_t.t(), w, out=out)


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """``Σ x·y`` over every element (0-dim), without a temporary of their size when they are contiguous."""
    return torch.vdot(x.reshape(-1), y.reshape(-1))


def constants(est, parts: tuple) -> tuple:
    """What the chain reads of ``theta``'s pieces: ``(η, 1/λ, η/λ, 1)`` (0-dim tensors in ``theta``'s dtype and device:
    no Python number enters an op), then, for RELAX, its network's ([`relax_constants`][stochgrad.estimators.rebar_hand.relax_constants])."""
    eta, inv_lam = parts[0].view(()), parts[1].view(()).neg().exp()
    k = (eta, inv_lam, eta * inv_lam, eta.new_ones(()))
    return relax_constants(est, parts, k) if len(parts) > 2 else k


def relax_constants(est, parts, k):
    """REBAR's, then the network's in the form [`network`][stochgrad.estimators.rebar_hand.network] reads: ``tanh(x) = 2σ(2x) − 1`` (σ is several times
    faster than tanh on a CPU), so ``2W1`` (and its transpose), ``2b1`` (column, row), ``2w2``, ``b2 − Σw2``, ``4w2``
    (column, row), ``W1/λ`` (and its transpose)."""
    w1, b1, w2, b2 = parts[2:]
    eta, inv_lam, eta_inv_lam, one = k
    w1 = w1.view(est.hidden, -1)
    w1_2, b1_2, w2_4, w1_lam = w1 * 2, b1 * 2, w2 * 4, w1 * inv_lam
    return (eta, inv_lam, eta_inv_lam, one, w1_2, w1_2.t(), b1_2.view(-1, 1), b1_2, w2 * 2, b2 - w2.sum(),
            w2_4.view(-1, 1), w2_4, w1_lam, w1_lam.t())


def estimate(est, f, a0: Tensor, u: Tensor, v: Tensor, samples: int, tuning: bool, temperature: bool = True):
    """Bernoulli units: ``∂_a c`` by one backward pass through ``f`` alone, to the relaxed points
    ``σ([z, z̃]/λ)``, chained by hand: ``∂z/∂a = 1``, ``∂z̃/∂a`` in closed form
    ([`conditional_and_slope`][stochgrad.distributions.Bernoulli.conditional_and_slope]), ``∂σ(x/λ)/∂x = σ(1 − σ)/λ``, and RELAX's
    network differentiated by hand ([`network`][stochgrad.estimators.rebar_hand.network]). Returns ``(ĝ, f(b), ∂ mean‖ĝ‖²/∂theta on a tuning call
    ([`tuning_gradient`][stochgrad.estimators.rebar_hand.tuning_gradient]; without the temperature's gradient unless ``temperature``: no graph of ``∂f``, no
    Hessian-vector product) else None)``. Intermediates of our own are overwritten in place where nothing reads
    them again (fewer full-size temporaries); ``u`` and ``v`` are the caller's fresh noise."""
    p = torch.sigmoid(a0)
    z = logistic_from_uniform(u).add_(a0)                         # a + logistic(u)
    eta, inv_lam, eta_inv_lam, one, *_ = k = constants(est, est.pieces(False))
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
        d_f = vjp(c, soft, ones, create_graph=temperature)       # ∂f/∂σ (a graph for the temperature's HVP)
        f_b = f(b)                                                # (*lead, *batch): the value
    s, c, d_f_ = soft.detach(), c.detach(), d_f.detach()
    r, d_r, saved = network(est, s, k, True)
    # ∂c/∂x for x = [z, z̃]: (η ∂f/∂σ + ∂r/∂σ)·σ(1 − σ)/λ (d_r comes scaled by 1/λ; ours, so written in place)
    slope = d_f_ * eta_inv_lam if d_r is None else d_r.addcmul_(d_f_, eta_inv_lam)
    d_x = slope.mul_(s).mul_(1 - s)                                # ·σ(1 − σ): ∂σ(x)/∂x, in place
    d_z, d_zt = d_x.unbind(0)
    d_c = torch.addcmul(d_z, d_zt, neg_slope)                     # ∂_a c(z) − ∂_a c(z̃)
    c_zt = c[1] * eta if r is None else torch.addcmul(r[1], c[1], eta)
    grad = d_c.addcmul_((f_b.detach() - c_zt).unsqueeze(-1), score)
    if samples > 1:
        grad = grad.mean(0)
    if not tuning:
        return grad, f_b, None
    return grad, f_b, tuning_gradient(est, grad, score, neg_slope, x, soft, d_f, d_x, c, k, saved, samples)

def tuning_gradient(est, grad, score, neg_slope, x, soft, d_f, d_x, c, k, saved, samples) -> Tensor:
    """``∂ mean‖ĝ‖²/∂(η, log λ, ρ)`` for [`estimate`][stochgrad.estimators.rebar_hand.estimate]'s ĝ, by hand (the reverse pass that autograd's double
    backward through the whole formula took, Grathwohl et al. Alg. 2): ``η`` enters linearly given ``f`` and
    ``∂f``, ``ρ`` only through the network ([`network_backward`][stochgrad.estimators.rebar_hand.network_backward]); only ``log λ`` moves the relaxed points
    ``σ(x/λ)``, so only it needs ``∂f``'s derivative: one Hessian-vector product through ``f``. ``x`` ``None``: a
    step without the temperature ([`tunes_temperature`][stochgrad.estimators.rebar.REBAR.tunes_temperature]), whose gradient is then 0 and none of its terms is
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
    a = torch.mul(q, s, out=d_x).mul_(1 - s)                      # A = W·σ' (into d_x's buffer, now free)
    a[1].mul_(neg_slope)
    neg_gamma = torch.linalg.vecdot(score, q)                    # −γ: (*lead, *batch)
    d_eta = _dot(a, d_f.detach()).mul_(inv_lam).sub_(_dot(neg_gamma, c[1]))
    if x is None:   # no temperature this step: η and ρ only
        _, d_net = network_backward(est, saved, k, a, neg_gamma, soft_grad=False)
        return torch.cat([d_eta.view(1), d_eta.new_zeros(1), *d_net]).mul_(scale)
    # H A, f's Hessian-vector product (None: ∂f/∂σ does not depend on σ, or needs no graph at all: f linear in σ)
    hv = vjp(d_f, soft, a, allow_unused=True) if d_f.requires_grad else None
    up_soft, d_net = network_backward(est, saved, k, a, neg_gamma)  # (may overwrite a: not read again)
    rest = up_soft if hv is None else hv * eta_inv_lam if up_soft is None else up_soft.addcmul_(hv, eta_inv_lam)
    if rest is None:
        rest = torch.zeros_like(s)
    rest[1].addcmul_(d_f.detach()[1], (neg_gamma * eta).unsqueeze(-1), value=-1)
    br = rest.mul_(s).mul_(1 - s)                                 # σ'·(...)
    d_log_lam = _dot(z, br[0]).add_(_dot(zt, br[1])).mul_(inv_lam).add_(lam_part).neg_()
    return torch.cat([d_eta.view(1), d_log_lam.view(1), *d_net]).mul_(scale)


def network(est, soft, k, slope):
    """RELAX's ``r`` and its slope (REBAR: ``(None, None, None)``). ``r(σ) = w2·tanh(W1 σ + b1) + b2`` and, if ``slope``, ``∂r/∂σ / λ = (W1/λ)ᵀ (w2 ⊙ (1 − tanh²))``, by hand, with
    ``tanh(x) = 2g − 1``, ``g = σ(2x)``, ``1 − tanh² = 4g(1 − g)``. Many rows (``m > n``): the hidden layer is
    computed ``(hidden, m)`` (`_rows`)."""
    if len(k) == 4:
        return None, None, None
    w1_2, w1_2t, b1_2c, b1_2r, w2_2, b2_eff, w2_4c, w2_4r, w1_lam, w1_lam_t = k[4:]
    flat = soft.reshape(-1, soft.shape[-1])                                       # (m, n)
    if flat.shape[0] > flat.shape[1]:
        g_t = torch.addmm(b1_2c, w1_2, flat.t()).sigmoid_()                       # (hidden, m)
        r = torch.addmv(b2_eff, g_t.t(), w2_2).view(soft.shape[:-1])              # w2·(2g − 1) + b2
        if not slope:
            return r, None, None
        y_t = w2_4c * g_t * (1 - g_t)                                              # w2 ⊙ (1 − tanh²)
        return r, _rows(y_t, w1_lam).view(soft.shape), (flat, g_t, y_t, True)
    g = torch.addmm(b1_2r, flat, w1_2t).sigmoid_()                                # (m, hidden)
    r = torch.addmv(b2_eff, g, w2_2).view(soft.shape[:-1])
    if not slope:
        return r, None, None
    y = w2_4r * g * (1 - g)
    return r, (y @ w1_lam).view(soft.shape), (flat, g, y, False)

def network_backward(est, saved, k, up_slope, up_value, soft_grad=True):
    """RELAX (REBAR: ``(None, [])``). The reverse pass of [`network`][stochgrad.estimators.rebar_hand.network] by hand (``h = tanh(W1 σ + b1)``, ``y = w2 ⊙ (1 − h²)``,
    ``r = w2·h + b2``, ``∂r/∂σ / λ = y W1/λ``): with ``P = (W1/λ) A`` for the upstream ``A`` of the slope and ``γ``
    of ``r`` (second half of the rows), ``∂pre = y ⊙ (γ − 2 h P)``, ``∂W1 = ∂preᵀσ + yᵀA/λ``, ``∂b1 = Σ ∂pre``,
    ``∂w2 = Σ P ⊙ (1 − h²) + hᵀγ``, ``∂b2 = Σ γ``, ``∂σ = ∂pre W1``. ``up_value`` is ``−γ``; in ``g = (1 + h)/2``."""
    if len(k) == 4:
        return None, []
    w1_2, w1_lam, inv_lam = k[4], k[12], k[1]
    flat, g_t, y_t, transposed = saved
    if not transposed:                                                            # (m, hidden) from network
        g_t, y_t = g_t.t(), y_t.t()
    up = up_slope.reshape(flat.shape)
    neg_gamma = up_value.reshape(-1)
    half = g_t.shape[1] // 2                                                      # rows at σ(z̃/λ)
    p_t = w1_lam @ up.t()                                                         # P: (hidden, m)
    sum_ng = neg_gamma.sum()
    d_w2 = torch.addmv((p_t * g_t * (1 - g_t)).sum(1), g_t[:, half:], neg_gamma, beta=4, alpha=-2).add_(sum_ng)
    d_half = torch.sub(p_t, g_t * p_t, alpha=2)                                   # −h·P
    d_half[:, half:].sub_(neg_gamma, alpha=0.5)
    d_half.mul_(y_t)                                                              # ∂pre / 2: (hidden, m)
    d_w1 = torch.addmm(torch.mm(y_t, up).mul_(inv_lam), d_half, flat, alpha=2)
    d_soft = _rows(d_half, w1_2, out=up).view(up_slope.shape) if soft_grad else None   # into A's buffer: read above
    return d_soft, [d_w1.view(-1), d_half.sum(1).mul_(2), d_w2, sum_ng.neg().view(1)]
