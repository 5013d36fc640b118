"""Every estimator declared unbiased, against exact enumeration, with tolerances from the measured SE."""
import pytest
import torch

import stochgrad as sg
from stochgrad import problems
from stochgrad.baselines import MovingAverage
from stochgrad.estimators.base import ScoreFunction
from stochgrad.exact import all_states, exact_gradient, log_prob

UNBIASED = [name for name, info in sg.estimators().items() if info.unbiased and name != "exact"]
PROBLEMS = {"separable": problems.separable, "nonseparable": problems.nonseparable,
            "decoder": problems.decoder, "two_layer": problems.two_layer}


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("name", UNBIASED)
def test_declared_unbiased_estimators_match_exact_gradient(name, problem, gen):
    p = PROBLEMS[problem]()
    est = sg.get_estimator(name)
    r = sg.check_unbiased(est, p.f, p.logits, estimates=12000, batch=400, samples=max(2, est.min_samples),
                          generator=gen, warmup=3)
    assert r.passed, f"{name} on {problem}: max |z| = {r.max_abs_z:.2f}, bias {r.bias}"
    assert torch.isfinite(r.variance).all() and (r.variance > 0).any()


@pytest.mark.parametrize("name", ["reinforce_ma", "reinforce_optimal"])
@pytest.mark.parametrize("problem", ["nonseparable", "decoder"])
def test_moving_baselines_unbiased_at_batch_one_over_sequential_calls(name, problem, gen):
    p = PROBLEMS[problem]()
    r = sg.check_unbiased(name, p.f, p.logits, estimates=6000, batch=1, generator=gen, warmup=20)
    assert r.passed, f"{name}, batch 1: max |z| = {r.max_abs_z:.2f}"


class CurrentLossMA(MovingAverage):
    """The mistake two public libraries make: the baseline already holds the current loss."""

    def forward(self, score, losses):
        MovingAverage.update(self, score, losses)
        return super().forward(score, losses)

    def update(self, score, losses):
        pass


def test_the_check_detects_a_baseline_that_includes_the_current_loss(gen):
    """The test has power: the biased baseline fails at batch size 1, where its bias shows."""
    p = problems.decoder()
    est = ScoreFunction(CurrentLossMA(decay=0.9))
    r = sg.check_unbiased(est, p.f, p.logits, estimates=6000, batch=1, generator=gen, warmup=20)
    assert not r.passed and r.max_abs_z > 4
    # its estimate shrinks toward zero by about the decay factor
    ratio = (r.mean * r.exact).sum() / r.exact.square().sum()
    assert 0.8 < ratio.item() < 0.97


def test_each_example_gets_its_own_loss(gen):
    """Per-example L: a batch of examples with different targets, each gradient unbiased for its own loss."""
    g = torch.Generator().manual_seed(5)
    W, x = torch.randn(8, 4, generator=g, dtype=torch.float64), (torch.rand(3, 8, generator=g) < 0.5).double()
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64)

    def f(b):
        z = b @ W.T
        return torch.nn.functional.binary_cross_entropy_with_logits(z, x.expand_as(z), reduction="none").sum(-1)

    for name in ["reinforce", "reinforce_optimal"]:
        r = sg.check_unbiased(name, f, logits, estimates=8000, batch=200, generator=gen, warmup=3)
        assert r.passed, name
    # the per-example exact gradients really differ, so mixing losses across examples would be caught
    ex = exact_gradient(f, logits)[1]
    assert (ex[0] - ex[1]).abs().max() > 0.1


def expected_df_db(f, logits):
    """``E_b[∂f/∂b]`` by enumeration: what straight-through estimates."""
    b = all_states(logits.shape[-1], logits).requires_grad_(True)
    (dfdb,) = torch.autograd.grad(f(b).sum(), b)
    return (log_prob(b.detach(), logits).exp().unsqueeze(-1) * dfdb).sum(0)


@pytest.mark.parametrize("problem", ["nonseparable", "decoder"])
def test_straight_through_has_its_known_bias(problem, gen):
    p = PROBLEMS[problem]()
    target = expected_df_db(p.f, p.logits)
    s = torch.sigmoid(p.logits)
    for name, expected in [("straight_through", target), ("straight_through_sigmoid", s * (1 - s) * target)]:
        r = sg.check_unbiased(name, p.f, p.logits, estimates=8000, generator=gen)
        assert not r.declared_unbiased and r.bias_detected, name           # biased against the exact gradient
        z = (r.mean - expected) / r.standard_error
        assert z.abs().max() < 4, f"{name}: mean is not E[df/db] (max |z| {z.abs().max():.2f})"


def test_f_parameters_get_the_pathwise_gradient(gen):
    theta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    logits = torch.tensor([0.2, -0.4, 1.0], dtype=torch.float64)

    def f(b):
        return (b @ w - theta).square()

    exact = torch.autograd.grad(sg.exact_expectation(f, logits), theta)[0]
    for name in ["reinforce", "reinforce_optimal", "straight_through"]:
        a = logits.expand(4000, 3).clone().requires_grad_(True)
        value = sg.expect(f, a, name, generator=gen)
        per_example = torch.stack([torch.autograd.grad(v, theta, retain_graph=True)[0] for v in value[:400]])
        z = (per_example.mean() - exact) / (per_example.std() / 400 ** 0.5)
        assert abs(z) < 4, name
