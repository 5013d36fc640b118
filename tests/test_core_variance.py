"""Variance on the separable toy: the optimal baseline reaches the floor D − 1 (docs/paper.md, §5)."""
import pytest
import torch

import stochgrad as sg
from stochgrad import problems


def relative_variance(name, D, gen):
    p = problems.separable(D, logits=1.0)  # all logits equal: p = σ(1) ≈ 0.73
    r = sg.check_unbiased(name, p.f, p.logits, estimates=30000, batch=1000, generator=gen, warmup=10)
    return r.relative_variance


@pytest.mark.parametrize("D", [1, 4, 16])
def test_optimal_baseline_reaches_the_floor_and_beats_moving_average(D, gen):
    opt = relative_variance("reinforce_optimal", D, gen)
    ma = relative_variance("reinforce_ma", D, gen)
    floor = D - 1
    if D == 1:
        assert opt < 0.1 * 1  # the floor is zero: within 10% of one unit's own scale
    else:
        assert abs(opt - floor) < 0.1 * floor, (opt, floor)
    # analytically MA sits at D − 1 + (p − q)²/(pq) ≈ D + 0.09 at σ(1)
    assert opt <= ma
    s = torch.sigmoid(torch.tensor(1.0)).item()
    assert ma == pytest.approx(floor + (2 * s - 1) ** 2 / (s * (1 - s)), rel=0.1, abs=0.1)


def test_no_baseline_grows_quadratically(gen):
    v4, v16 = relative_variance("reinforce", 4, gen), relative_variance("reinforce", 16, gen)
    slope = torch.log(torch.tensor(v16 / v4)) / torch.log(torch.tensor(4.0))
    assert 1.6 < slope.item() < 2.2


def test_variance_standard_error_matches_the_spread_of_repeated_checks():
    """``variance_se`` predicts how much ``variance.sum()`` moves between independent checks."""
    import stochgrad as sg

    f = lambda b: (b - torch.tensor([0.2, 0.7, 0.4])).square().sum(-1)
    logits = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    runs = [sg.check_unbiased("reinforce", f, logits, estimates=400, generator=gen) for _ in range(60)]
    totals = torch.tensor([r.variance.sum().item() for r in runs], dtype=torch.float64)
    predicted = torch.tensor([r.variance_se for r in runs]).mean().item()
    ratio = totals.std().item() / predicted
    # the sample std of 60 values has relative standard error about 1/sqrt(2·59) ≈ 0.092: 4 of them
    assert abs(ratio - 1) < 4 * 0.092, ratio
