"""Misuse that used to pass silently or crash obscurely: checks that could call NaN unbiased, enumerations that
ignored K in their memory bound, empty batches in the broadcast, categorical layers that took units for examples."""
import pytest
import torch
from torch import nn

import stochgrad as sg
from stochgrad.checks import UnbiasedCheck, check_unbiased
from stochgrad.cli import main


def quadratic(b):
    return (b - 0.45).square().sum(-1)


def test_check_unbiased_refuses_an_f_that_is_nan_on_some_states():
    """E[f] is undefined when f is NaN on a state: an error, never "unbiased: ok" (NaN z-scores compare False)."""
    f = lambda b: torch.where(b[..., 0] * b[..., 1] > 0, float("nan"), quadratic(b))  # noqa: E731
    with pytest.raises(ValueError, match="NaN or inf on some states"):
        check_unbiased("reinforce", f, torch.zeros(3), estimates=100)


def test_a_nan_z_score_counts_as_bias():
    exact = torch.zeros(3)
    r = UnbiasedCheck("reinforce", True, exact, torch.tensor([0.0, float("nan"), 0.0]), torch.ones(3), 1000)
    assert r.bias_detected and not r.passed and r.verdict.startswith("FAIL")


def test_low_precision_logits_are_checked_against_a_float32_enumeration():
    """float16 logits: the estimator samples in float32, so the truth is enumerated in float32 too (a float16
    enumeration put DisARM, which is unbiased, at z = 4.4)."""
    logits = torch.tensor([0.3, -1.1, 2.0, 0.7]).half()
    r = check_unbiased("disarm", quadratic, logits, estimates=40000, batch=4000,
                       generator=torch.Generator().manual_seed(0))
    assert r.exact.dtype == torch.float32 and r.passed, r.max_abs_z


def test_the_z_test_allows_for_an_estimated_standard_error():
    """Student's t, not the normal: the critical |z| grows as the estimates fall (4.67 at 30 for a threshold of 4),
    fewer than 30 are refused, and `stochgrad check --estimates 2` is a usage error, not a verdict of bias."""
    r = UnbiasedCheck("reinforce", True, torch.zeros(2), torch.zeros(2), torch.ones(2), 30)
    assert 4.6 < r.critical < 4.75
    assert UnbiasedCheck("reinforce", True, torch.zeros(2), torch.zeros(2), torch.ones(2), 4000).critical < 4.01
    with pytest.raises(SystemExit) as stop:
        main(["check", "--estimates", "2"])
    assert stop.value.code == 2


@pytest.mark.parametrize("n, K", [(1, 65536), (1, 2 ** 20), (2, 1024)])
def test_exact_counts_the_classes_in_its_memory_bound(n, K):
    """Categorical enumeration builds (K^n, n, K) one-hot states: refused at once where that is gigabytes."""
    a = torch.zeros(1, n, K)
    with pytest.raises(ValueError, match="one-hot entries"):
        sg.expect(lambda h: h.sum((-2, -1)), a, "exact", distribution="categorical")


@pytest.mark.parametrize("name", ["reinforce", "reinforce_ma", "reinforce_optimal", "learned"])
def test_an_empty_batch_in_the_broadcast_learns_nothing_and_changes_nothing(name):
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), sg.StochasticBinary(name, generator=gen), nn.Linear(4, 1))
    with sg.broadcast() as graph:
        loss = model(torch.randn(3, 5, generator=gen)).squeeze(-1).square()
    graph.backward(loss)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad()
    with sg.broadcast() as graph:
        loss = model(torch.randn(0, 5)).squeeze(-1).square()
    graph.backward(loss)
    assert not graph.nodes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_a_categorical_layer_given_units_and_classes_keeps_the_units():
    """categories=K with (B, n, K) input: n units of K classes (the per-unit baseline has n·K coordinates), the
    same as (B, n·K) input, not n·B examples of one unit."""
    B, n, K = 6, 3, 4
    a = torch.randn(B, n, K, generator=torch.Generator().manual_seed(1))
    sizes = []
    for x in (a, a.flatten(-2)):
        layer = sg.StochasticCategorical("reinforce_optimal", categories=K, generator=torch.Generator().manual_seed(2))
        with sg.broadcast() as graph:
            h = layer(x)
        assert h.shape == x.shape
        graph.backward(h.flatten(1).sum(-1))
        sizes.append(layer.estimator.baseline.numerator.shape)
    assert sizes == [(n * K,), (n * K,)]
