"""Estimators since DisARM (issue 11): ARMS, double control variates, RODEO — special cases, bias, variance."""
import pytest
import torch

import stochgrad as sg
from stochgrad import problems
from stochgrad.checks import sample_gradients
from stochgrad.estimators.arms import arms_gradient, copula_cdf, dirichlet_copula

HARD = {"nonseparable": problems.nonseparable, "decoder": problems.decoder, "two_layer": problems.two_layer}


def test_arms_with_two_samples_is_disarm_draw_for_draw(gen):
    """At K = 2 the Dirichlet copula is the antithetic pair (u, 1 − u), and ARMS is DisARM (Dong et al. Eq. 7)
    at ``v = u`` for units below ½, ``1 − u`` above (ARMS flips those; ``v`` is as uniform as ``u``)."""
    p = problems.decoder()
    a = torch.linspace(-3, 3, p.n, dtype=torch.float64)
    probs = torch.sigmoid(a)
    u = torch.rand(200, p.n, generator=gen, dtype=torch.float64)
    _, arms = arms_gradient(torch.stack([u, 1 - u]), probs, p.f)
    v = torch.where(probs < 0.5, u, 1 - u)
    b, b_anti = (v < probs).double(), (1 - v < probs).double()
    disarm = 0.5 * (p.f(b) - p.f(b_anti)).unsqueeze(-1) * (1 - 2 * b_anti) * (b != b_anti) * torch.sigmoid(a.abs())
    assert torch.allclose(arms, disarm, atol=1e-12)
    # and the copula draws exactly such pairs
    c = dirichlet_copula(2, (1000,), u, gen)
    assert torch.allclose(c[0] + c[1], torch.ones(1000, dtype=torch.float64))


@pytest.mark.parametrize("K", [3, 5])
def test_dirichlet_copula_has_uniform_marginals_and_the_stated_pair_cdf(K, gen):
    """What ARMS's debiasing rests on: each u_k ~ U[0,1], and P(u_k < q, u_j < q) = C(q, q)."""
    N = 200000
    u = dirichlet_copula(K, (N,), torch.zeros((), dtype=torch.float64), gen)
    for q in (0.1, 0.3, 0.45):
        marginal = (u[0] < q).double()
        assert abs(marginal.mean() - q) < 4 * (q * (1 - q) / N) ** 0.5
        joint = ((u[0] < q) & (u[K - 1] < q)).double()
        c = copula_cdf(torch.tensor(q, dtype=torch.float64), K).item()
        assert abs(joint.mean().item() - c) < 4 * joint.std().item() / N ** 0.5 + 1e-12
    # mutually antithetic: the pair correlation is negative
    assert torch.corrcoef(u[:2])[0, 1] < -0.1


@pytest.mark.parametrize("K", [3, 5])
@pytest.mark.parametrize("problem", HARD)
def test_arms_unbiased_beyond_two_samples(K, problem, gen):
    """K > 2 exercises the debiasing factor (at K = 2 it is trivially 1 − q)."""
    p = HARD[problem]()
    a = p.logits + 0.8   # some units above ½, some between 2^{1−K} and ½: both branches, C > 0
    r = sg.check_unbiased("arms", p.f, a, estimates=12000, samples=K, generator=gen)
    assert r.passed, f"max |z| {r.max_abs_z:.2f}"


@pytest.mark.parametrize("problem", ["separable", "nonseparable", "decoder", "two_layer"])
def test_arms_no_worse_than_leave_one_out_with_as_many_samples(problem, gen):
    p = getattr(problems, problem)()
    K = 4
    arms = sg.check_unbiased("arms", p.f, p.logits, estimates=20000, samples=K, generator=gen)
    loo = sg.check_unbiased("reinforce_loo", p.f, p.logits, estimates=20000, samples=K, generator=gen)
    assert arms.passed and loo.passed
    assert arms.variance.sum() < loo.variance.sum()


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
@pytest.mark.parametrize("problem", ["decoder", "two_layer", "nonseparable"])
def test_tuned_control_variates_beat_leave_one_out_and_stay_unbiased(name, problem, gen):
    """Same f-evaluations (K = 2): after tuning, no more variance than reinforce_loo; unbiased once tuned."""
    p = HARD[problem]()
    est = sg.get_estimator(name)
    sample_gradients(est, p.f, p.logits, estimates=50, batch=50, samples=2, generator=gen)  # sized on first use
    start = est.theta.clone()
    sample_gradients(est, p.f, p.logits, estimates=100 * 50, batch=50, samples=2, generator=gen)  # 100 tuning steps
    assert not torch.equal(start, est.theta), "tuning moved nothing"
    est.tune = False
    tuned = sg.check_unbiased(est, p.f, p.logits, estimates=10000, batch=2000, samples=2, generator=gen)
    loo = sg.check_unbiased("reinforce_loo", p.f, p.logits, estimates=10000, samples=2, generator=gen)
    assert tuned.passed, f"max |z| {tuned.max_abs_z:.2f}"
    assert tuned.variance.sum() <= loo.variance.sum()


def test_rodeo_with_zero_control_variates_is_leave_one_out(gen):
    p = problems.decoder()
    g1 = sample_gradients(sg.get_estimator("rodeo", tune=False), p.f, p.logits, 50, samples=3,
                          generator=torch.Generator().manual_seed(3))
    g2 = sample_gradients(sg.get_estimator("reinforce_loo"), p.f, p.logits, 50, samples=3,
                          generator=torch.Generator().manual_seed(3))
    assert torch.allclose(g1, g2, atol=1e-12)


def test_rodeo_state_dict_resumes_exactly(gen):
    p = problems.two_layer()
    used = sg.get_estimator("rodeo")
    sample_gradients(used, p.f, p.logits, estimates=20 * 50, batch=50, samples=2, generator=gen)
    fresh = sg.get_estimator("rodeo")
    fresh.load_state_dict(used.state_dict())
    g1 = sample_gradients(used, p.f, p.logits, 200, batch=50, samples=2, generator=torch.Generator().manual_seed(1))
    g2 = sample_gradients(fresh, p.f, p.logits, 200, batch=50, samples=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(g1, g2)   # the Adam state came along: the tuning continues identically




def test_rodeo_sorted_surrogate_is_the_network_as_written():
    """The piecewise-linear evaluation (kinks sorted, prefix sums) gives the network's values and its gradient in the
    weights, at many points per row, with a unit whose input weight is 0 and with points beyond every kink."""
    from stochgrad.estimators.rodeo import stein_surrogate, stein_surrogate_sorted, surrogate_size

    g = torch.Generator().manual_seed(0)
    w = torch.randn(surrogate_size(30), generator=g, dtype=torch.float64)
    w[5] = 0.0                                                       # w_t = 0: a unit on or off whatever t
    t = torch.randn(3, 4, 41, generator=g, dtype=torch.float64) * 4
    t[..., 0] = 1e6
    level = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w1, w2 = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    written, sorted_ = stein_surrogate(w1, t, level), stein_surrogate_sorted(w2, t, level)
    assert sorted_.shape == written.shape == (3, 4, 41, 2)
    assert torch.allclose(sorted_, written, rtol=1e-10, atol=1e-9)
    weight = torch.randn(written.shape, generator=g, dtype=torch.float64)
    (g1,) = torch.autograd.grad((written * weight).sum(), w1)
    (g2,) = torch.autograd.grad((sorted_ * weight).sum(), w2)
    assert torch.allclose(g1, g2, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("rows", [5, 3000], ids=["small", "batched product"])
@pytest.mark.parametrize("distribution", ["bernoulli", "categorical"])
@pytest.mark.parametrize("name", ["reinforce", "reinforce_ma", "reinforce_loo"])
def test_per_sample_baselines_give_the_score_formula_without_making_the_score(name, distribution, rows):
    """With several samples and one c per sample, from NODE_MIN elements on the score-function gradient is taken as
    Σ_s (L_s − c_s) h_s − σ Σ_s (L_s − c_s), over S (one batched product, no (S, *batch, n) score): the same as
    mean_s (h_s − σ)(L_s − c_s) written out, on the samples f saw (first call: the moving average is still 0)."""
    g = torch.Generator().manual_seed(11)
    shape = (rows, 3, 4) if distribution == "categorical" else (rows, 6)   # 3 samples: 3000 rows pass NODE_MIN
    a = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(shape, dtype=torch.float64, generator=g)
    seen = []

    def f(h):
        seen.append(h)
        return (h * w).flatten(-2 if distribution == "categorical" else -1).sum(-1).square()

    sg.expect(f, a, sg.get_estimator(name), 3, g, distribution=distribution).sum().backward()
    h = seen[0]
    L = f(h).detach()
    seen.clear()
    c = (L.sum(0, keepdim=True) - L) / 2 if name == "reinforce_loo" else torch.zeros_like(L)
    p = torch.softmax(a.detach(), -1) if distribution == "categorical" else torch.sigmoid(a.detach())
    weight = (L - c).reshape(*L.shape, *[1] * (h.dim() - L.dim()))
    torch.testing.assert_close(a.grad, ((h - p) * weight).mean(0), rtol=1e-12, atol=1e-12)
